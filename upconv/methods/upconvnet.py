"""UpconvNet (Dosovitskiy & Brox, CVPR 2016) as an evaluation method: trained decoders read from
checkpoints, fed the features the evaluation already computed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from upconv.methods.base import Batch, Method, features_of
from upconv.nets.checkpoints import Decoders, load_decoders
from upconv.nets.encoder import Encoder


class UpconvNetMethod(Method):
    """UpconvNet decoders from one or more checkpoints of the same encoder (one checkpoint per layer)."""

    name = "upconvnet"

    def __init__(self, encoder: Encoder, checkpoints: str | Sequence[str] | None = None) -> None:
        paths = [checkpoints] if isinstance(checkpoints, (str, os.PathLike)) else list(checkpoints or [])
        if not paths:
            raise ValueError("method 'upconvnet' needs decoder checkpoints (checkpoints=[path.ckpt, ...])")
        self.by_layer: dict[str, Decoders] = {}
        for path in paths:
            dec = load_decoders(path, encoder=encoder).to(encoder.device)
            for layer in dec.layers:
                if layer in self.by_layer:
                    raise ValueError(
                        f"layer {layer} has decoders in both {self.by_layer[layer].path} and {path}; "
                        f"pass only one checkpoint per layer"
                    )
                self.by_layer[layer] = dec
        self.encoder = encoder
        self.layers = [n for n in encoder.layers if n in self.by_layer]

    def reconstruct(self, batch: Batch, layer: str) -> Tensor:
        if layer not in self.by_layer:
            raise ValueError(f"no UpconvNet decoder for layer {layer}; the checkpoints hold: {', '.join(self.layers)}")
        return self.by_layer[layer].decode(features_of(self.encoder, batch, layer), layer)  # (B, C, H, W) in [0, 1]

    def health(self, layer: str) -> dict[str, Any] | None:
        """The training-health record of ``layer``'s decoder (``upconv.training.health``), if recorded."""
        return self.by_layer[layer].health.get(layer) if layer in self.by_layer else None
