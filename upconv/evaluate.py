"""Evaluation across depth: reconstruct a data split from every chosen layer with every chosen method and
summarise each fidelity metric per (method, layer) as mean, 95 % bootstrap interval and n.

A *method* is any callable ``(images, layer) -> reconstructions`` with a ``.name``; images are float
(B, C, H, W) in [0, 1]. Methods are built by name from a small registry (``register_method``), so
other inversion methods add themselves to the same table.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional, Protocol, Sequence, Union

import torch
from torch import Tensor

from . import metrics as M
from .encoders import Encoder, build_encoder
from .report import check_out
from .runtime import resolve_device

METRICS = ("mse", "psnr", "ssim", "lpips", "db_error", "feature_error", "class_agreement", "recon_accuracy")


class Method(Protocol):
    name: str

    def __call__(self, images: Tensor, layer: str) -> Tensor: ...


# ---------------------------------------------------------------------- method registry
_REGISTRY: dict[str, Callable[..., Method]] = {}
# Methods living in modules that may be absent: name -> (module, factory attribute). Imported on first use;
# a module may instead call ``register_method`` itself when imported.
_LAZY = {"deconvnet": ("upconv.deconvnet", "DeconvNetMethod"),
         "mahendran_vedaldi": ("upconv.inversion", "MVInversionMethod")}


def register_method(name: str, factory: Callable[..., Method]) -> None:
    """Make ``factory(encoder, **options) -> Method`` available to ``evaluate(methods=[name])``."""
    _REGISTRY[name] = factory


def method_names() -> list[str]:
    """Registered method names, plus those whose module is installed but not imported yet."""
    lazy = [n for n, (mod, _) in _LAZY.items() if n not in _REGISTRY and importlib.util.find_spec(mod) is not None]
    return sorted([*_REGISTRY, *lazy])


def build_method(name: str, encoder: Encoder, **options: Any) -> Method:
    """Build a registered method for ``encoder``; a clear ValueError for an unknown name."""
    if name not in _REGISTRY and name in _LAZY and importlib.util.find_spec(_LAZY[name][0]) is not None:
        module = importlib.import_module(_LAZY[name][0])
        if name not in _REGISTRY and hasattr(module, _LAZY[name][1]):
            register_method(name, getattr(module, _LAZY[name][1]))
    if name not in _REGISTRY:
        raise ValueError(f"unknown method '{name}'; choose one of: {', '.join(method_names())}")
    return _REGISTRY[name](encoder, **options)


class UpconvNetMethod:
    """UpconvNet decoders (Dosovitskiy & Brox 2016) from one or more checkpoints of the same encoder."""

    name = "upconvnet"

    def __init__(self, encoder: Encoder, checkpoints: Union[str, Sequence[str], None] = None) -> None:
        from .checkpoints import load_decoders

        paths = [checkpoints] if isinstance(checkpoints, (str, os.PathLike)) else list(checkpoints or [])
        if not paths:
            raise ValueError("method 'upconvnet' needs decoder checkpoints (checkpoints=[path.ckpt, ...])")
        device = encoder.mean.device
        self.by_layer: dict[str, Any] = {}
        for path in paths:
            dec = load_decoders(path, encoder=encoder).to(device)
            for layer in dec.layers:
                if layer in self.by_layer:
                    raise ValueError(f"layer {layer} has decoders in both {self.by_layer[layer].path} and {path}; "
                                     f"pass only one checkpoint per layer")
                self.by_layer[layer] = dec
        self.encoder = encoder

    @property
    def layers(self) -> list[str]:
        return [n for n in self.encoder.layers if n in self.by_layer]

    def __call__(self, images: Tensor, layer: str) -> Tensor:
        if layer not in self.by_layer:
            raise ValueError(f"no UpconvNet decoder for layer {layer}; the checkpoints hold: {', '.join(self.layers)}")
        return self.by_layer[layer](images, layer)  # (B, C, H, W), clamped to [0, 1]


register_method("upconvnet", UpconvNetMethod)


# ---------------------------------------------------------------------- result
@dataclass
class EvalResult:
    """Rows (one per method × layer, layers in network order) plus what is needed to report them."""

    rows: list[dict[str, Any]]
    settings: dict[str, Any]
    notes: list[str]
    originals: Tensor  # (N_grid, C, H, W), first images of the split
    grid: dict[tuple[str, str], Tensor] = field(default_factory=dict)  # (method, layer) -> (N_grid, C, H, W)
    out: Optional[str] = None


def _choose_layers(encoder: Encoder, layers: Union[str, Sequence[str]], methods: list[Method]) -> list[str]:
    supported = [set(getattr(m, "layers", encoder.layers)) for m in methods]
    if layers == "all" or list(layers) == ["all"]:
        names = [n for n in encoder.layers if all(n in s for s in supported)]
        if not names:
            raise ValueError("the chosen methods share no layer of the encoder; name the layers explicitly")
        return names
    names = encoder.resolve(list(layers))
    for m, s in zip(methods, supported):
        missing = [n for n in names if n not in s]
        if missing:
            raise ValueError(f"method '{m.name}' cannot reconstruct from layer(s) {', '.join(missing)}; "
                             f"it supports: {', '.join(n for n in encoder.layers if n in s)}")
    return names


def _recorded_encoder(path: str) -> Encoder:
    """The encoder a decoder checkpoint was trained on, rebuilt from its record (no decoders built)."""
    from .checkpoints import CHECKPOINT_KEY
    from .encoders import encoder_from_spec

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    meta = torch.load(path, map_location="cpu", weights_only=True).get(CHECKPOINT_KEY)
    if meta is None:
        raise ValueError(f"{path} is not an upconv decoder checkpoint (no '{CHECKPOINT_KEY}' entry)")
    return encoder_from_spec(meta["encoder"]["spec"])


def evaluate(
    checkpoints: Union[str, Sequence[str], None] = None,
    *,
    out: Optional[str] = None,
    encoder: Union[str, Encoder, None] = None,
    encoder_weights: Optional[str] = None,
    encoder_kwargs: Optional[dict[str, Any]] = None,
    layers: Union[str, Sequence[str]] = "all",
    methods: Sequence[Union[str, Method]] = ("upconvnet",),
    method_options: Optional[dict[str, dict[str, Any]]] = None,
    data: Any = "embedded",
    root: Optional[str] = None,
    split: Literal["val", "train"] = "val",
    limit: Optional[int] = None,
    batch_size: int = 250,
    embedded_per_class: int = 20,
    seed: int = 0,
    n_boot: int = 1000,
    grid_images: int = 8,
    lpips: bool = True,
    device: str = "auto",
    overwrite: bool = False,
) -> EvalResult:
    """Evaluate inversion methods layer by layer and, with ``out``, write the report folder.

    ``encoder`` is a name, an ``Encoder`` or None (rebuilt from the first checkpoint's record).
    ``data`` is an ``ImageData`` or its ``source`` (``embedded``/``folder``/``cifar10`` with ``root``);
    ``limit`` evaluates a seeded random subset of that many images. Method names go through the registry;
    ``upconvnet`` receives ``checkpoints``, others their entry of ``method_options``. Everything is
    computed before anything is written, and the folder appears only once complete.
    """
    from .data import ImageData

    if out is not None:
        check_out(out, overwrite)  # fail before any (long) computation
    dev = resolve_device(device)
    ckpts = [checkpoints] if isinstance(checkpoints, (str, os.PathLike)) else list(checkpoints or [])
    if isinstance(encoder, Encoder):
        enc = encoder
    elif encoder is not None:
        enc = build_encoder(encoder, encoder_weights, kwargs=encoder_kwargs)
    elif ckpts:
        enc = _recorded_encoder(ckpts[0])
    else:
        raise ValueError("no encoder: pass encoder=<name> or decoder checkpoints that record one")
    enc = enc.to(dev)
    options = dict(method_options or {})
    built: list[Method] = []
    for m in methods:
        if isinstance(m, str):
            opts = dict(options.get(m, {}))
            if m == "upconvnet":
                opts.setdefault("checkpoints", ckpts)
            m = build_method(m, enc, **opts)
        built.append(m)
    if len({m.name for m in built}) != len(built):
        raise ValueError(f"method names must be unique; got {', '.join(m.name for m in built)}")
    names = _choose_layers(enc, layers, built)

    if isinstance(data, str):
        if enc.image_size[0] != enc.image_size[1]:
            raise ValueError(f"{enc.name} takes {enc.image_size} images; pass a square-cropping ImageData instead")
        data = ImageData(source=data, root=root, image_size=enc.image_size[0], batch_size=batch_size,
                         augment=False, limit_val=limit if split == "val" else None,
                         limit_train=limit if split == "train" else None,
                         embedded_per_class=embedded_per_class, seed=seed)
    last = enc.layers[-1]
    per: dict[tuple[str, str], dict[str, list[Tensor]]] = {(m.name, L): {k: [] for k in METRICS} for m in built for L in names}
    lp_model, lp_note = M.load_lpips() if lpips else (None, "LPIPS skipped: disabled (lpips=False)")
    if lp_model is not None and min(enc.image_size) < 32:
        # AlexNet's stride-4 stem and two 3×3/2 pools leave nothing of smaller images.
        lp_model, lp_note = None, f"LPIPS skipped: the AlexNet trunk needs images of at least 32×32 px; got {enc.image_size}"
    if lp_model is not None:
        lp_model = lp_model.to(dev)
    originals, orig_acc, grid = [], [], {}
    for x, y in data.images(split, batch_size=batch_size, device=dev):  # (B, C, H, W) in [0, 1], (B,)
        enc.check_images(x)
        with torch.no_grad():
            feats = enc(x, [*names, last])
        originals.append(x.cpu())
        orig_acc.append(M.accuracy(feats[last], y).cpu())
        for m in built:
            for L in names:
                xh = m(x, L).detach().float().clamp(0, 1)  # (B, C, H, W)
                if xh.shape != x.shape:
                    raise ValueError(f"method '{m.name}' returned shape {tuple(xh.shape)} for layer {L}; "
                                     f"expected the input's shape {tuple(x.shape)}")
                if len(originals) == 1:
                    grid[(m.name, L)] = xh[:grid_images].cpu()
                with torch.no_grad():
                    fh = enc(xh, [L, last])
                    row = per[(m.name, L)]
                    row["mse"].append(M.mse(xh, x))
                    row["psnr"].append(M.psnr(xh, x))
                    row["ssim"].append(M.ssim(xh, x))
                    row["db_error"].append(M.db_error(xh, x, 1.0))  # normalised below, once d̄ is known
                    row["feature_error"].append(M.feature_error(fh[L], feats[L]))
                    row["class_agreement"].append(M.class_agreement(fh[last], feats[last]))
                    row["recon_accuracy"].append(M.accuracy(fh[last], y))
                    if lp_model is not None:
                        row["lpips"].append(M.lpips_distance(lp_model, xh, x))
    if not originals:
        raise ValueError(f"the {split} split has no images; check the data root and limit")
    all_x = torch.cat(originals)  # (N, C, H, W)
    n = len(all_x)
    d_bar = float(M.mean_pairwise_distance(all_x.to(dev)))

    rows = []
    for m in built:
        for L in names:
            row: dict[str, Any] = {"method": m.name, "layer": L, "depth": enc.layers.index(L) + 1, "n": n}
            for k in METRICS:
                vals = per[(m.name, L)][k]
                if not vals:
                    row.update({k: None, f"{k}_lo": None, f"{k}_hi": None})
                    continue
                v = torch.cat([t.double().cpu() for t in vals])  # (N,)
                if k == "db_error":
                    v = v / d_bar
                row[k], row[f"{k}_lo"], row[f"{k}_hi"] = M.bootstrap_ci(v, n_boot=n_boot, seed=seed)
            rows.append(row)
    acc = M.bootstrap_ci(torch.cat(orig_acc), n_boot=n_boot, seed=seed)
    hp = getattr(data, "hparams", {})
    settings = {
        "encoder": enc.name, "encoder_weights_hash": enc.weights_hash, "encoder_spec": enc.spec,
        "checkpoints": [str(c) for c in ckpts], "methods": [m.name for m in built], "layers": names,
        "data": hp.get("source", type(data).__name__), "root": hp.get("root"), "split": split, "n_images": n,
        "limit": limit, "seed": seed, "n_boot": n_boot, "ci_level": 0.95, "psnr_cap_db": M.PSNR_CAP_DB,
        "db_mean_pairwise_distance": d_bar, "encoder_accuracy_on_originals": list(acc),
        "lpips": "computed (v0.1, AlexNet trunk)" if lp_model is not None else "skipped",
        "image_space": "[0, 1] RGB; the encoder normalises internally and decoders predict [0, 1] images, "
                       "so no de-normalisation is needed; reconstructions clamped to [0, 1]",
        "device": str(dev.type), "torch": torch.__version__,
    }
    result = EvalResult(rows=rows, settings=settings, notes=[lp_note] if lp_note else [],
                        originals=all_x[:grid_images], grid=grid)
    if out is not None:
        from .report import write_report

        result.out = write_report(result, out, overwrite=overwrite)
    return result


def evaluate_cli(
    checkpoints: Optional[list[str]] = None,
    out: str = "runs/eval",
    encoder: Optional[str] = None,
    encoder_weights: Optional[str] = None,
    encoder_kwargs: Optional[dict[str, Any]] = None,
    layers: list[str] = ["all"],  # noqa: B006 - jsonargparse reads the default, nothing mutates it
    methods: list[str] = ["upconvnet"],  # noqa: B006
    data: Literal["embedded", "folder", "cifar10"] = "embedded",
    root: Optional[str] = None,
    split: Literal["val", "train"] = "val",
    limit: Optional[int] = None,
    batch_size: int = 250,
    embedded_per_class: int = 20,
    seed: int = 0,
    n_boot: int = 1000,
    grid_images: int = 8,
    lpips: bool = True,
    device: str = "auto",
    overwrite: bool = False,
) -> None:
    """Evaluate reconstructions layer by layer: MSE, PSNR, SSIM, LPIPS, D&B error, feature error, class
    agreement (mean, 95 % bootstrap CI, n); writes report.md, metrics.csv/json, depth.png and grid.png.

    Args:
        checkpoints: UpconvNet decoder checkpoints (their encoder is rebuilt from the record).
        out: report folder; created only when the report is complete.
        encoder: encoder name (default: the one the checkpoints record).
        encoder_weights: weights file for a named encoder.
        encoder_kwargs: constructor arguments for a named encoder.
        layers: layer names in any order, or ["all"].
        methods: inversion methods side by side (see upconv.evaluate.method_names()).
        data: embedded (offline photographs), folder (ImageFolder tree at root) or cifar10.
        root: data folder; a folder with train/ and test/ evaluates test/ as the val split.
        split: val (held-out) or train.
        limit: evaluate a seeded random subset of this many images.
        batch_size: images per forward pass.
        embedded_per_class: crops per photograph for the embedded data.
        seed: seeds the subset and the bootstrap; same seed, same metrics.csv.
        n_boot: bootstrap resamples for the 95 % intervals.
        grid_images: originals shown in grid.png.
        lpips: compute LPIPS when its AlexNet weights are in the torch cache.
        device: auto, cpu or cuda.
        overwrite: replace an existing report folder.
    """
    result = evaluate(checkpoints, out=out, encoder=encoder, encoder_weights=encoder_weights,
                      encoder_kwargs=encoder_kwargs, layers=layers, methods=methods, data=data, root=root,
                      split=split, limit=limit, batch_size=batch_size, embedded_per_class=embedded_per_class,
                      seed=seed, n_boot=n_boot, grid_images=grid_images, lpips=lpips, device=device,
                      overwrite=overwrite)
    print(os.path.join(result.out or out, "report.md"))
