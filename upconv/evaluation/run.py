"""Evaluation across depth: reconstruct a data split from every chosen layer with every chosen method and
summarise each fidelity metric per (method, layer) as mean, 95 % bootstrap interval and n.

Methods (``upconv.methods.base``: any callable ``(images, layer) -> reconstructions`` with a ``.name``) are
built by name from one registry; one that reads the true image (``reads_target``) is reported as an
optimistic bound.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Optional, Sequence, Union

import torch
from torch import Tensor

from upconv.core import metrics as M
from upconv.nets.encoder import Encoder
from upconv.nets.zoo import build_encoder
from upconv.evaluation.floors import FLOOR_METHODS, Floors, verdict
from upconv.evaluation.grid_picks import GridPicks
from upconv.methods.base import Batch, Method, as_method
from upconv.methods.registry import build_method, method_names, register_method  # noqa: F401 - re-exported
from upconv.core.files import check_out
from upconv.core.runtime import progress, resolve_device

METRICS = ("mse", "psnr", "ssim", "lpips", "db_error", "feature_error", "class_agreement", "recon_accuracy")
FLOOR_LAYER = "—"  # the floors reconstruct the same image from every layer


# ---------------------------------------------------------------------- result
@dataclass
class EvalResult:
    """Rows (one per method × layer, layers in network order) plus what is needed to report them."""

    rows: list[dict[str, Any]]
    settings: dict[str, Any]
    notes: list[str]
    originals: Tensor  # (N_grid, C, H, W), sampled across classes (``GridPicks``)
    grid: dict[tuple[str, str], Tensor] = field(default_factory=dict)  # (method, layer) -> (N_grid, C, H, W)
    out: Optional[str] = None
    floor_rows: list[dict[str, Any]] = field(default_factory=list)  # one per no-information floor


def _choose_layers(encoder: Encoder, layers: Union[str, Sequence[str]], methods: list[Method]) -> list[str]:
    supported = [set(m.layers or encoder.layers) for m in methods]
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


def _encoder(encoder: Union[str, Encoder, None], weights: Optional[str], kwargs: Optional[dict[str, Any]],
             pretrained: Optional[bool], download: bool, ckpts: list[str]) -> Encoder:
    """The encoder to evaluate: an ``Encoder``, a name, or the first checkpoint's record (with ``weights`` /
    ``kwargs`` replacing the recorded ones when given, never silently dropped)."""
    if isinstance(encoder, Encoder):
        if weights or kwargs:
            raise ValueError("encoder_weights / encoder_kwargs apply to an encoder given by name; this Encoder "
                             "is already built: load its weights before passing it")
        return encoder
    if encoder is not None:
        return build_encoder(encoder, weights, download=download, kwargs=kwargs,
                             pretrained=True if pretrained is None else pretrained)
    if not ckpts:
        raise ValueError("no encoder: pass encoder=<name> or decoder checkpoints that record one")
    from upconv.nets.checkpoints import read_checkpoint, recorded_encoder

    _, meta = read_checkpoint(ckpts[0])
    return recorded_encoder(meta, ckpts[0], weights=weights, kwargs=kwargs, pretrained=pretrained,
                            download=download)


def _accuracy_basis(enc: Encoder, data: Any) -> tuple[Optional[str], Optional[str]]:
    """(what the data labels are taken to be, or None when accuracy must be skipped; a note or None)."""
    out = enc.layer(enc.layers[-1]).shape
    if len(out) != 1:
        return None, f"accuracy skipped: {enc.name}'s last layer is not a vector of class scores (shape {out})"
    classes = getattr(data, "class_names", None) or None
    if classes is not None and len(classes) != out[0]:
        return None, (f"accuracy skipped: the data has {len(classes)} classes but {enc.name} outputs {out[0]} "
                      f"class scores, so the data's labels cannot be its classes")
    source = getattr(data, "source", None)
    source = source if isinstance(source, str) else getattr(source, "source", None)  # ImageData wraps a source
    if source == "folder":
        return "the folder's labels, assumed to be the encoder's classes in sorted folder order", None
    return "the data set's labels", None


def chance_note(accuracy: tuple[float, float, float], n_classes: int) -> Optional[str]:
    """A warning when the encoder's accuracy on the originals is no better than chance (CI reaches 1/K)."""
    if accuracy[1] > 1.0 / n_classes:
        return None
    return (f"the encoder's accuracy on the originals, {accuracy[0]:.3f} [{accuracy[1]:.3f}, {accuracy[2]:.3f}], is "
            f"no better than chance (1/{n_classes} = {1 / n_classes:.3f}): the data's labels probably do not "
            f"correspond to its classes, so accuracy on x̂ says nothing")


def _floors(data: Any, split: str, batch_size: int) -> Floors:
    """The no-information floors from the training images (from every image when ``split`` is ``all``)."""
    source = "all" if split == "all" else "train"
    describe = getattr(data, "describe", None)
    what = describe(source) if callable(describe) else f"the {source} split"
    batches = progress(data.images(source, batch_size=batch_size), desc="floors", unit="batch")
    return Floors.from_batches(batches, what, n_classes=len(getattr(data, "class_names", None) or []))


def _health_notes(rows: list[dict[str, Any]], floor_rows: list[dict[str, Any]]) -> list[str]:
    """One line per row that must not be read as a measure of the layer's information."""
    floor = {r["method"]: r["psnr"] for r in floor_rows}
    notes = []
    for r in rows:
        what = []
        if r.get("decoder_health") == "failed":
            what.append("its decoder diverged in training and was marked failed (its last good weights are used)")
        elif r.get("decoder_health") == "recovered":
            what.append("its decoder diverged in training and was recovered")
        if r.get("floor_verdict"):
            what.append(f"PSNR {r['psnr']:.2f} dB is {r['floor_verdict']}: "
                        f"{', '.join(f'{k} {v:.2f} dB' for k, v in floor.items())}")
        if what:
            warn = r.get("decoder_health") == "failed" or r.get("floor_verdict", "") and "no-information" in r["floor_verdict"]
            notes.append(f"{'⚠ ' if warn else ''}{r['method']} at {r['layer']}: " + "; ".join(what)
                         + ("; this figure does not measure the layer's information" if warn else ""))
    return notes


def evaluate(
    checkpoints: Union[str, Sequence[str], None] = None,
    *,
    out: Optional[str] = None,
    encoder: Union[str, Encoder, None] = None,
    encoder_weights: Optional[str] = None,
    encoder_kwargs: Optional[dict[str, Any]] = None,
    pretrained: Optional[bool] = None,
    download: bool = False,
    layers: Union[str, Sequence[str]] = "all",
    methods: Sequence[Union[str, Method]] = ("upconvnet",),
    method_options: Optional[dict[str, dict[str, Any]]] = None,
    data: Any = "embedded",
    root: Optional[str] = None,
    split: Literal["val", "train", "all"] = "val",
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

    ``encoder`` is a name, an ``Encoder`` or None (rebuilt from the first checkpoint's record, with
    ``encoder_weights`` / ``encoder_kwargs`` / ``pretrained`` replacing the recorded ones when given).
    ``data`` is an ``ImageSource`` (or an ``ImageData``) or its ``source`` (``embedded``/``folder``/``cifar10`` with ``root``);
    ``split`` ``all`` takes every image of the source; ``limit`` evaluates a seeded random subset of that
    many images of ``val`` or ``train``. Method names go through the registry; ``upconvnet`` receives
    ``checkpoints``, others their entry of ``method_options``. Everything is computed before anything is
    written, and the folder appears only once complete.
    """
    from upconv.data.source import ImageSource

    if out is not None:
        check_out(out, overwrite)  # fail before any (long) computation
    if split == "all" and limit is not None:
        raise ValueError("limit takes a random subset of one split; use split val or train with it, or drop it")
    dev = resolve_device(device)
    ckpts = [checkpoints] if isinstance(checkpoints, (str, os.PathLike)) else list(checkpoints or [])
    enc = _encoder(encoder, encoder_weights, encoder_kwargs, pretrained, download, ckpts).to(dev)
    options = dict(method_options or {})
    built: list[Method] = []
    for m in methods:
        if isinstance(m, str):
            opts = dict(options.get(m, {}))
            if m == "upconvnet":
                opts.setdefault("checkpoints", ckpts)
            m = build_method(m, enc, **opts)
        built.append(as_method(m))
    if len({m.name for m in built}) != len(built):
        raise ValueError(f"method names must be unique; got {', '.join(m.name for m in built)}")
    names = _choose_layers(enc, layers, built)

    if isinstance(data, str):
        if enc.image_size[0] != enc.image_size[1]:
            raise ValueError(f"{enc.name} takes {enc.image_size} images; pass a square-cropping ImageSource instead")
        data = ImageSource(source=data, root=root, image_size=enc.image_size[0],
                           limit_val=limit if split == "val" else None,
                           limit_train=limit if split == "train" else None,
                           embedded_per_class=embedded_per_class, seed=seed)
    if hasattr(data, "setup"):
        data.setup()  # reads the class names and split sizes
    describe = getattr(data, "describe", None)
    basis, acc_note = _accuracy_basis(enc, data)
    last = enc.layers[-1]
    per: dict[tuple[str, str], dict[str, list[Tensor]]] = {(m.name, L): {k: [] for k in METRICS} for m in built for L in names}
    lp_model, lp_note = M.load_lpips() if lpips else (None, "LPIPS skipped: disabled (lpips=False)")
    if lp_model is not None and min(enc.image_size) < 32:
        # AlexNet's stride-4 stem and two 3×3/2 pools leave nothing of smaller images.
        lp_model, lp_note = None, f"LPIPS skipped: the AlexNet trunk needs images of at least 32×32 px; got {enc.image_size}"
    if lp_model is not None:
        lp_model = lp_model.to(dev)
    floors = _floors(data, split, batch_size)
    per.update({(f, FLOOR_LAYER): {k: [] for k in METRICS} for f in FLOOR_METHODS})
    originals, orig_acc, picks = [], [], GridPicks(grid_images, seed)
    pairs = [(m, L) for m in built for L in names]

    def score(key: tuple[str, str], xh: Tensor, x: Tensor, y: Tensor, feats: dict[str, Tensor]) -> None:
        """Every per-image metric of reconstructions ``xh`` against ``x`` (B, C, H, W), kept under ``key``."""
        L = key[1] if key[1] in feats else None
        with torch.no_grad():
            fh = enc(xh, [L, last] if L else [last])
            row = per[key]
            row["mse"].append(M.mse(xh, x))
            row["psnr"].append(M.psnr(xh, x))
            row["ssim"].append(M.ssim(xh, x))
            row["db_error"].append(M.db_error(xh, x, 1.0))  # normalised below, once d̄ is known
            if L:
                row["feature_error"].append(M.feature_error(fh[L], feats[L]))
            row["class_agreement"].append(M.class_agreement(fh[last], feats[last]))
            if basis is not None:
                row["recon_accuracy"].append(M.accuracy(fh[last], y))
            if lp_model is not None:
                row["lpips"].append(M.lpips_distance(lp_model, xh, x))

    def units() -> Iterator[tuple[Tensor, Tensor, dict[str, Tensor], list[int], Method, str]]:
        """One unit of work per batch × method × layer (the progress bar counts these)."""
        for x, y in data.images(split, batch_size=batch_size, device=dev):  # (B, C, H, W) in [0, 1], (B,)
            enc.check_images(x, finite=True)  # a NaN pixel would otherwise surface as a NaN metric
            with torch.no_grad():
                feats = enc(x, [*names, last])
            originals.append(x.cpu())
            if basis is not None:
                orig_acc.append(M.accuracy(feats[last], y).cpu())
            positions = picks.admit(x, y)
            for f in FLOOR_METHODS:  # the same reference for every layer: scored once per batch
                xh = floors.reconstruct(f, y).to(x)  # (B, C, H, W)
                picks.store((f, FLOOR_LAYER), xh, positions)
                score((f, FLOOR_LAYER), xh, x, y, feats)
            for m, L in pairs:
                yield x, y, feats, positions, m, L
            picks.end_batch()

    size = data.split_size(split) if hasattr(data, "split_size") else None
    total = -(-size // batch_size) * len(pairs) if size is not None else None
    for x, y, feats, positions, m, L in progress(units(), desc="evaluate", total=total, unit="step"):
        xh = m.reconstruct(Batch(x, feats, y), L).detach().float().clamp(0, 1)  # (B, C, H, W)
        if xh.shape != x.shape:
            raise ValueError(f"method '{m.name}' returned shape {tuple(xh.shape)} for layer {L}; "
                             f"expected the input's shape {tuple(x.shape)}")
        picks.store((m.name, L), xh, positions)
        score((m.name, L), xh, x, y, feats)
    if not originals:
        raise ValueError(f"the {split} split has no images; check the data root and limit")
    all_x = torch.cat(originals)  # (N, C, H, W)
    n = len(all_x)
    d_bar = float(M.mean_pairwise_distance(all_x.to(dev)))

    caveats = {m.name: m.describe_caveat() for m in built if m.describe_caveat()}

    def summary(key: tuple[str, str], row: dict[str, Any]) -> dict[str, Any]:
        for k in METRICS:
            vals = per[key][k]
            if not vals:
                row.update({k: None, f"{k}_lo": None, f"{k}_hi": None})
                continue
            v = torch.cat([t.double().cpu() for t in vals])  # (N,)
            if k == "db_error":
                v = v / d_bar
            row[k], row[f"{k}_lo"], row[f"{k}_hi"] = M.bootstrap_ci(v, n_boot=n_boot, seed=seed)
        return row

    floor_rows = [summary((f, FLOOR_LAYER), {"method": f, "layer": FLOOR_LAYER, "depth": 0, "n": n,
                                             "reads_target": False}) for f in FLOOR_METHODS]
    floor_psnr = {r["method"]: r["psnr"] for r in floor_rows}
    rows = []
    for m in built:
        for L in names:
            row = summary((m.name, L), {"method": m.name, "layer": L, "depth": enc.layers.index(L) + 1, "n": n,
                                        "reads_target": m.name in caveats})
            row["floor_verdict"] = verdict(row["psnr"], floor_psnr)
            health = m.health(L)
            row["decoder_health"] = health.get("status") if health else None
            rows.append(row)
    acc = M.bootstrap_ci(torch.cat(orig_acc), n_boot=n_boot, seed=seed) if basis is not None else None
    notes = [lp_note] if lp_note else []
    notes += _health_notes(rows, floor_rows)
    if acc_note:
        notes.append(acc_note)
    elif acc is not None:
        notes += [n for n in [chance_note(acc, enc.layer(last).shape[0])] if n]
    src = data.source if not isinstance(getattr(data, "source", ""), str) else data  # ImageData wraps a source
    grid_x, grid = picks.result()
    settings = {
        "encoder": enc.name, "encoder_weights_hash": enc.weights_hash, "encoder_spec": enc.spec,
        "checkpoints": [str(c) for c in ckpts], "methods": [m.name for m in built], "layers": names,
        "method_caveats": caveats,
        "data": getattr(src, "source", type(data).__name__), "root": getattr(src, "root", None), "split": split, "n_images": n,
        "split_description": describe(split) if callable(describe) else f"split {split}: {n} images",
        "limit": limit, "seed": seed, "n_boot": n_boot, "ci_level": 0.95, "psnr_cap_db": M.PSNR_CAP_DB,
        "db_mean_pairwise_distance": d_bar,
        "encoder_accuracy_on_originals": list(acc) if acc is not None else None, "accuracy_labels": basis,
        "lpips": "computed (v0.1, AlexNet trunk)" if lp_model is not None else "skipped",
        "image_space": "[0, 1] RGB; the encoder normalises internally and decoders predict [0, 1] images, "
                       "so no de-normalisation is needed; reconstructions clamped to [0, 1]",
        "device": str(dev.type), "torch": torch.__version__,
        "floors": {"source": floors.source, "n_images": floors.n, "methods": list(FLOOR_METHODS)},
    }
    result = EvalResult(rows=rows, settings=settings, notes=notes, originals=grid_x, grid=grid, floor_rows=floor_rows)
    if out is not None:
        from upconv.evaluation.report import write_report

        result.out = write_report(result, out, overwrite=overwrite)
    return result


def evaluate_cli(
    checkpoints: Optional[list[str]] = None,
    out: str = "runs/eval",
    encoder: Optional[str] = None,
    encoder_weights: Optional[str] = None,
    encoder_kwargs: Optional[dict[str, Any]] = None,
    pretrained: Optional[bool] = None,
    download: bool = False,
    layers: list[str] = ["all"],  # noqa: B006 - jsonargparse reads the default, nothing mutates it
    methods: list[str] = ["upconvnet"],  # noqa: B006
    data: Literal["embedded", "folder", "cifar10"] = "embedded",
    root: Optional[str] = None,
    split: Literal["val", "train", "all"] = "val",
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
        encoder_weights: weights file for the encoder (named, or the recorded one); replaces the recorded path.
        encoder_kwargs: constructor arguments for the encoder (named, or the recorded one).
        pretrained: torchvision encoders: ImageNet weights from the local torch cache (default: as recorded, else true).
        download: allow fetching torchvision weights that are not cached.
        layers: layer names in any order, or ["all"].
        methods: inversion methods side by side (upconvnet, deconvnet, deconvnet+minmax, guided-backprop,
            guided-backprop+minmax, mahendran_vedaldi).
        data: embedded (offline photographs), folder (ImageFolder tree at root) or cifar10.
        root: data folder; with train/ and test/ (or val/), val is test/; otherwise val is a seeded 10 % hold-out.
        split: val (held-out), train, or all (every image of the source).
        limit: evaluate a seeded random subset of this many images of the split (val or train).
        batch_size: images per forward pass.
        embedded_per_class: crops per photograph for the embedded data.
        seed: seeds the subset, the grid images and the bootstrap; same seed, same metrics.csv.
        n_boot: bootstrap resamples for the 95 % intervals.
        grid_images: originals shown in grid.png (seeded, spread over the classes).
        lpips: compute LPIPS when its AlexNet weights are in the torch cache.
        device: auto (the GPU when there is one), cpu, cuda or cuda:N.
        overwrite: replace an existing report folder.
    """
    result = evaluate(checkpoints, out=out, encoder=encoder, encoder_weights=encoder_weights,
                      encoder_kwargs=encoder_kwargs, pretrained=pretrained, download=download, layers=layers,
                      methods=methods, data=data, root=root, split=split, limit=limit, batch_size=batch_size,
                      embedded_per_class=embedded_per_class, seed=seed, n_boot=n_boot, grid_images=grid_images,
                      lpips=lpips, device=device, overwrite=overwrite)
    print(f"evaluated {result.settings['split_description']}")
    print(os.path.join(result.out or out, "report.md"))
