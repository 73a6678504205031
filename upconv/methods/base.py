"""The inversion methods' common ground: a ``Method`` reconstructs images from one layer of an encoder.

Evaluation runs the encoder once per batch and hands every method a ``Batch`` holding the images, their
features at every evaluated layer and their labels, so a method that needs only the features (UpconvNet,
optimisation inversion) never runs the encoder again. A method that uses anything of the true image beyond
its features (DeconvNet replays the image's own max-pool switches, and by default fits brightness and contrast
to it) sets ``reads_target`` and a short ``caveat``, and reports mark its figures as an optimistic bound; such a
method also declares its own no-information floors (``floor_kinds``), which its figures must clear.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from upconv.nets.encoder import Encoder

TARGET_CAVEAT = "reads the true image beyond its features: an optimistic bound"


@dataclass
class Batch:
    """One batch of an evaluation: images (B, C, H, W) in [0, 1], the encoder's features by layer, labels."""

    images: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)
    labels: Tensor | None = None


class Method(ABC):
    """Reconstruct images from a layer's features. ``layers``: the layers it can invert (None: all)."""

    name: str
    reads_target: bool = False
    caveat: str | None = None
    layers: list[str] | None = None
    floor_kinds: tuple[str, ...] = ()  # this method's own no-information floors (``reconstruct_with_floors``)

    @abstractmethod
    def reconstruct(self, batch: Batch, layer: str) -> Tensor:
        """Reconstructions (B, C, H, W) of ``batch`` from ``layer`` (a canonical layer name)."""

    def __call__(self, images: Tensor, layer: str) -> Tensor:
        """Reconstruct ``images`` (B, C, H, W) in [0, 1] from ``layer`` (any spelling the encoder accepts)
        outside an evaluation."""
        encoder = getattr(self, "encoder", None)
        return self.reconstruct(Batch(images), encoder.resolve([layer])[0] if encoder is not None else layer)

    def reconstruct_with_floors(self, batch: Batch, layer: str) -> tuple[Tensor, dict[str, Tensor]]:
        """The reconstruction and, per kind of ``floor_kinds``, the method's own no-information floor: what it
        gives for the same image when the features carry nothing, keeping all else it reads of the true image
        (DeconvNet's switches). A method that reads only the features has none: the mean-image floors are its."""
        return self.reconstruct(batch, layer), {}

    def health(self, layer: str) -> dict[str, Any] | None:
        """What training recorded about this method's model for ``layer`` (None: nothing to report)."""
        return None

    def describe_caveat(self) -> str | None:
        """The caveat to print beside the figures, when the method reads the true image."""
        return (self.caveat or TARGET_CAVEAT) if self.reads_target else None


class CallableMethod(Method):
    """Adapts any callable ``(images, layer) -> reconstructions`` with a ``.name`` (and optionally
    ``reads_target``, ``caveat``, ``layers``) to ``Method``; it sees the images only."""

    def __init__(self, fn: Callable[[Tensor, str], Tensor]) -> None:
        if not hasattr(fn, "name"):
            raise ValueError(f"a method needs a .name; {fn!r} has none")
        self.fn, self.name = fn, fn.name
        self.reads_target = bool(getattr(fn, "reads_target", False))
        self.caveat = getattr(fn, "caveat", None)
        self.layers = getattr(fn, "layers", None)

    def reconstruct(self, batch: Batch, layer: str) -> Tensor:
        return self.fn(batch.images, layer)

    def __call__(self, images: Tensor, layer: str) -> Tensor:
        return self.fn(images, layer)


def as_method(method: Any) -> Method:
    """A ``Method`` as it is; anything else through ``CallableMethod``."""
    return method if isinstance(method, Method) else CallableMethod(method)


def features_of(encoder: Encoder, batch: Batch, layer: str) -> Tensor:
    """``layer``'s features of the batch: the evaluation's own, or computed now for a bare batch."""
    if layer not in batch.features:
        with torch.no_grad():
            batch.features[layer] = encoder(batch.images, [layer])[layer]
    return batch.features[layer]
