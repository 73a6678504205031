"""Load trained decoders from a checkpoint without Lightning and without running pickled code."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import torch
from torch import Tensor, nn

from .encoders import Encoder, encoder_from_spec
from .upconvnet import UpconvNet

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
        raise ValueError(f"{source} has no decoder for layer(s) {', '.join(missing)}; "
                         f"it holds: {', '.join(meta['layers'])}")


@dataclass
class Decoders:
    """Trained decoders for some layers of one encoder; calling it reconstructs images from a layer."""

    encoder: Encoder
    decoders: nn.ModuleDict
    path: str
    name: str = "upconvnet"
    health: dict[str, dict[str, Any]] = field(default_factory=dict)  # per layer, see upconv.health.HealthGuard

    @property
    def layers(self) -> list[str]:
        return list(self.decoders)

    def to(self, device: torch.device | str) -> "Decoders":
        self.encoder.to(device)
        self.decoders.to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: Tensor, layer: str) -> Tensor:
        """Reconstruct ``images`` (B, C, H, W in [0, 1]) from their features at ``layer``; clamped to [0, 1]."""
        name = self.encoder.resolve([layer])[0]
        if name not in self.decoders:
            raise ValueError(f"no decoder for layer {name} in {self.path}; it holds: {', '.join(self.layers)}")
        feats = self.encoder(images, [name])[name]
        return self.decoders[name](feats).float().clamp(0, 1)


def load_decoders(path: str | os.PathLike, encoder: Optional[Encoder] = None,
                  layers: Optional[Iterable[str]] = None, download: bool = False) -> Decoders:
    """Decoders from an InversionModule checkpoint, loaded with ``weights_only=True``.

    Without ``encoder`` the checkpoint's recorded encoder spec is rebuilt; either way its weights hash
    must match the one the decoders were trained on.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    meta = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt, dict) else None
    if meta is None:
        raise ValueError(f"{path} is not an upconv decoder checkpoint (no '{CHECKPOINT_KEY}' entry)")
    if encoder is None:
        encoder = encoder_from_spec(meta["encoder"]["spec"], download=download)
    names = meta["layers"] if layers is None else encoder.resolve(list(layers))
    check_identity(meta, encoder, names, source=path)
    shape = tuple(meta["image_shape"])
    decoders = nn.ModuleDict({n: UpconvNet(encoder.layer(n).shape, shape, **meta["decoder"]) for n in names})
    state = {k[len("decoders."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("decoders.")}
    state = {k: v for k, v in state.items() if k.split(".", 1)[0] in decoders}
    decoders.load_state_dict(state)
    health = {n: h for n, h in (meta.get("health") or {}).items() if n in decoders}
    return Decoders(encoder=encoder, decoders=decoders.eval(), path=path, health=health)
