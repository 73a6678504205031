"""Load trained decoders from a checkpoint without Lightning and without running pickled code."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from upconv.core.files import load_torch_file
from upconv.nets.encoder import Encoder
from upconv.nets.spec import EncoderSpec
from upconv.nets.upconvnet import UpconvNet

CHECKPOINT_KEY = "upconv"


def check_identity(meta: dict[str, Any], encoder: Encoder, layers: Iterable[str], source: str) -> None:
    """Raise if a checkpoint's decoders were trained for another encoder or lack a layer."""
    want = meta["encoder"]
    if want["name"] != encoder.name or want["weights_hash"] != encoder.weights_hash:
        raise ValueError(
            f"{source} was trained for encoder {want['name']} (weights {want['weights_hash']}), "
            f"not {encoder.name} (weights {encoder.weights_hash}); load it with the encoder it was trained "
            f"on, or train decoders for this one"
        )
    missing = [n for n in layers if n not in meta["layers"]]
    if missing:
        raise ValueError(
            f"{source} has no decoder for layer(s) {', '.join(missing)}; it holds: {', '.join(meta['layers'])}"
        )


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(checkpoint, its upconv record), read with ``weights_only=True``; one-line errors for a missing,
    empty, truncated or foreign file."""
    ckpt = load_torch_file(path, "decoder checkpoint")
    meta = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "encoder" not in meta or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(
            f"{path} is not an upconv decoder checkpoint (no '{CHECKPOINT_KEY}' record); pass a "
            f"checkpoint written by train.py with an InversionModule"
        )
    return ckpt, meta


def find_recorded_file(recorded: str, checkpoint: str | os.PathLike) -> str:
    """Where a file a checkpoint recorded (the encoder's weights) is now.

    Training records the path as given, often relative to the folder it ran in, so a moved project tree
    or another working directory would lose it. Tried in order: the path as recorded if absolute; relative
    to the checkpoint's folder and each of its ancestors (``X/checkpoints/run/last.ckpt`` recording
    ``checkpoints/enc/encoder.pt`` finds ``X/checkpoints/enc/encoder.pt``); relative to the working
    directory. The weights hash in the checkpoint then proves it is the right file.
    """
    if os.path.isabs(recorded):
        tried = [recorded]
    else:
        folder, tried = os.path.dirname(os.path.abspath(checkpoint)), []
        while True:
            tried.append(os.path.normpath(os.path.join(folder, recorded)))
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            folder = parent
        tried.append(os.path.abspath(recorded))
    for candidate in dict.fromkeys(tried):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"the encoder weights file {recorded} recorded in {checkpoint} was not found; tried: "
        f"{', '.join(dict.fromkeys(tried))}. Pass that file as the encoder's weights (--encoder.weights FILE)"
    )


def choose_encoder(
    given: Encoder | None = None, spec: EncoderSpec | None = None, checkpoint: str | os.PathLike | None = None
) -> Encoder:
    """The one rule for which encoder a run uses: an ``Encoder`` object as given; else ``spec`` when it names
    one; else the identity ``checkpoint``'s decoders were trained on, with ``spec``'s given fields (weights,
    kwargs, pretrained) in place of the recorded ones (the weights hash check that follows says whether they fit
    the decoders). A recorded relative weights path is found by ``find_recorded_file``."""
    spec = spec or EncoderSpec()
    if given is not None:
        if spec.given:
            raise ValueError(
                f"two encoders: {spec} and an Encoder object; the object is already built (load its weights "
                f"before passing it), so give one or the other"
            )
        return given
    if spec.name is not None:
        return spec.build()
    if checkpoint is None:
        raise ValueError("no encoder: name one (encoder: {name: NAME}) or pass decoder checkpoints that record one")
    record = read_checkpoint(checkpoint)[1]["encoder"]["spec"]
    if spec.weights is None and record.get("weights"):
        record = {**record, "weights": find_recorded_file(record["weights"], checkpoint)}
    return spec.over(record).build()


@dataclass
class Decoders:
    """Trained decoders for some layers of one encoder; calling it reconstructs images from a layer."""

    encoder: Encoder
    decoders: nn.ModuleDict
    path: str
    name: str = "upconvnet"
    health: dict[str, dict[str, Any]] = field(default_factory=dict)  # per layer, see upconv.training.health.HealthGuard

    @property
    def layers(self) -> list[str]:
        return list(self.decoders)

    def to(self, device: torch.device | str) -> Decoders:
        self.encoder.to(device)
        self.decoders.to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: Tensor, layer: str) -> Tensor:
        """Reconstruct ``images`` (B, C, H, W in [0, 1]) from their features at ``layer``; clamped to [0, 1]."""
        name = self.encoder.resolve([layer])[0]
        return self.decode(self.encoder(images, [name])[name], name)

    @torch.no_grad()
    def decode(self, features: Tensor, layer: str) -> Tensor:
        """Reconstruct images from ``layer``'s features (B, *shape) already computed: (B, C, H, W) in [0, 1]."""
        if layer not in self.decoders:
            raise ValueError(f"no decoder for layer {layer} in {self.path}; it holds: {', '.join(self.layers)}")
        return self.decoders[layer](features).float().clamp(0, 1)


def load_decoders(
    path: str | os.PathLike, encoder: Encoder | None = None, layers: Iterable[str] | None = None, download: bool = False
) -> Decoders:
    """Decoders from an InversionModule checkpoint, loaded with ``weights_only=True``.

    Without ``encoder`` the checkpoint's recorded encoder is rebuilt (``choose_encoder``: a relative
    weights path is looked for beside the checkpoint too); either way its weights hash must match the one
    the decoders were trained on.
    """
    path = str(path)
    ckpt, meta = read_checkpoint(path)
    if encoder is None:
        encoder = choose_encoder(spec=EncoderSpec(download=download), checkpoint=path)
    names = meta["layers"] if layers is None else encoder.resolve(list(layers))
    check_identity(meta, encoder, names, source=path)
    shape = tuple(meta["image_shape"])
    decoders = nn.ModuleDict({n: UpconvNet(encoder.layer(n).shape, shape, **meta["decoder"]) for n in names})
    state = {k[len("decoders.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("decoders.")}
    state = {k: v for k, v in state.items() if k.split(".", 1)[0] in decoders}
    decoders.load_state_dict(state)
    health = {n: h for n, h in (meta.get("health") or {}).items() if n in decoders}
    return Decoders(encoder=encoder, decoders=decoders.eval(), path=path, health=health)
