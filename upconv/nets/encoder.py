"""Frozen CNN encoders with an ordered layer table.

``Encoder`` is the one abstraction the package shares: decoders, configs, the ``upconv layers`` listing,
evaluation rows and test parametrisation all read its layer table. Features of several layers come from
ONE forward pass through a torchvision FX feature extractor, which drops every operation after the
deepest layer asked for.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor

from upconv.nets.builtin import ARCHITECTURES


@dataclass(frozen=True)
class LayerInfo:
    """One row of the layer table: friendly name, graph node it taps, per-image output shape."""

    name: str
    node: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 3


class Encoder(nn.Module):
    """A frozen CNN: eval mode forever, no gradients to its weights, owns its input normalisation.

    ``encoder(images, layers)`` takes images in [0, 1], shape (B, C, H, W), and returns
    ``{layer: features}`` from one forward pass. Gradients still flow to the *input*, which
    optimisation-based inversion and feature losses need; wrap calls in ``torch.no_grad`` otherwise.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        image_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        layers: dict[str, str] | None = None,
        spec: dict[str, Any] | None = None,
        copy_model: bool = True,
        extractor: Callable[..., fx.GraphModule] | None = None,
        adapter: Callable[[str, tuple[int, ...]], Callable[[Tensor], Tensor] | None] | None = None,
    ) -> None:
        """``layers`` maps friendly names to graph nodes (default: the top-level children). ``extractor``
        builds the FX feature extractor (``(model, return_nodes=…)``, torchvision's by default; timm models
        pass timm's, which knows their untraceable helpers). ``adapter(layer, raw per-image shape)`` is asked
        once, during the probe that builds the layer table, for the reshape that brings that layer's raw output
        into the layout every consumer expects, (C, H, W) or (D,) per image (a ViT's tokens into a grid), or
        None to keep it as it is."""
        super().__init__()
        model = copy.deepcopy(model) if copy_model else model
        for m in model.modules():
            # An in-place ReLU would overwrite a tapped tensor that a deeper layer also feeds on.
            if getattr(m, "inplace", False):
                m.inplace = False
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.channels = len(mean)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.spec = dict(spec or {"name": name})
        if layers is None:
            layers = {n: n for n, _ in model.named_children()}
        self._make_extractor = extractor or create_feature_extractor
        self._adapters: dict[str, Callable[[Tensor], Tensor]] = {}
        self._extractors: dict[tuple[str, ...], fx.GraphModule] = {}
        self._weights_hash: str | None = None
        self._table = self._probe(layers, adapter)
        self.eval()

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        name: str,
        *,
        image_size: tuple[int, int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        layers: dict[str, str] | None = None,
        copy_model: bool = True,
    ) -> Encoder:
        """Wrap a model already in memory (a classifier just trained, a victim, a shadow).

        For a built-in architecture ``name`` (``upconv.nets.builtin.ARCHITECTURES``) the image size and
        normalisation come from its spec; for any other model give ``image_size``, ``mean`` and ``std``.
        """
        arch = ARCHITECTURES.get(name)
        image_size = image_size or (arch.image_size if arch else None)
        mean = mean or (arch.mean if arch else None)
        std = std or (arch.std if arch else None)
        if image_size is None or mean is None or std is None:
            raise ValueError(
                f"{name} is not a built-in architecture ({', '.join(ARCHITECTURES)}): pass its image_size, mean and std"
            )
        spec = {"name": name, "weights": None, "pretrained": False, "kwargs": {}}
        return cls(
            model, name=name, image_size=image_size, mean=mean, std=std, layers=layers, spec=spec, copy_model=copy_model
        )

    @property
    def device(self) -> torch.device:
        """Where the encoder's weights (and its normalisation) live."""
        return self.mean.device

    # ------------------------------------------------------------------ layer table
    def _probe(self, layers: dict[str, str], adapter: Callable[..., Any] | None) -> dict[str, LayerInfo]:
        """Run one dummy image through every tapped node to learn each layer's output shape (after the
        reshape ``adapter`` chooses for it from its raw shape)."""
        self._order = list(layers.values())  # network order, used to sort requests
        dummy = torch.zeros(1, self.channels, *self.image_size)
        try:
            with torch.no_grad():
                out = self._extractor(tuple(layers.values()))(self.normalize(dummy))
                for n, node in layers.items():
                    chosen = adapter(n, tuple(out[node].shape[1:])) if adapter is not None else None
                    if chosen is not None:
                        self._adapters[n] = chosen
                out = {n: self._adapt(n, out[node]) for n, node in layers.items()}
        except Exception as e:  # FX tracing or a shape error inside the user's model
            raise ValueError(
                f"could not run encoder '{self.name}' on a {self.channels}×{self.image_size[0]}×"
                f"{self.image_size[1]} image to build its layer table: {e}"
            ) from e
        return {n: LayerInfo(n, node, tuple(out[n].shape[1:])) for n, node in layers.items()}

    def _adapt(self, name: str, x: Tensor) -> Tensor:
        adapter = self._adapters.get(name)
        return x if adapter is None else adapter(x)

    def _extractor(self, nodes: tuple[str, ...]) -> fx.GraphModule:
        key = tuple(sorted(set(nodes), key=self._order.index))
        if key not in self._extractors:
            # The graph module shares the model's submodules (and so their device and weights); it is
            # kept out of the module tree so it is never saved or counted twice.
            ext = self._make_extractor(self.model, return_nodes={n: n for n in key})
            self._extractors[key] = ext.eval()
        return self._extractors[key]

    def graph(self, layer: str) -> fx.GraphModule:
        """The traced graph from the (normalised) input to ``layer``'s node, nothing after it. Its submodules
        are the model's own; its output is ``{node: tensor}`` for this layer's node, before any adapter."""
        return self._extractor((self.layer(layer).node,))

    def adapted(self, layer: str) -> bool:
        """Whether ``layer``'s features are reshaped after the graph (tokens → grid), so the graph's output is
        not the feature tensor itself."""
        return self.resolve([layer])[0] in self._adapters

    @property
    def layers(self) -> list[str]:
        return list(self._table)

    @property
    def layer_table(self) -> list[LayerInfo]:
        return list(self._table.values())

    def layer(self, name: str) -> LayerInfo:
        return self._table[self.resolve([name])[0]]

    def resolve(self, layers: str | Iterable[str]) -> list[str]:
        """Canonical names, in network order, for friendly or node names (case-insensitive)."""
        if isinstance(layers, str):
            layers = [layers]
        lookup = {}
        for info in self._table.values():
            lookup[info.node.lower()] = info.name
            lookup[info.name.lower()] = info.name
        out = []
        for layer in layers:
            if str(layer).lower() not in lookup:
                raise ValueError(f"unknown layer '{layer}' for {self.name}; choose one of: {', '.join(self.layers)}")
            out.append(lookup[str(layer).lower()])
        if not out:
            raise ValueError(f"no layers given for {self.name}; choose from: {', '.join(self.layers)}")
        order = self.layers
        return sorted(set(out), key=order.index)

    # ------------------------------------------------------------------ forward
    def train(self, mode: bool = True) -> Encoder:
        # Lightning calls .train() on every submodule each epoch; a frozen encoder must ignore it so
        # dropout in fc6/fc7 stays off.
        return super().train(False)

    def check_images(self, images: Tensor, finite: bool = False) -> None:
        """Raise a ValueError naming what was expected unless ``images`` is a float (B, C, H, W) batch of this
        encoder's size. ``finite=True`` also refuses NaN/inf pixels; it reads the tensor on the host, so
        boundaries (evaluation, tools) ask for it and the training hot path does not."""
        want = (self.channels, *self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(
                f"{self.name} expects images of shape (B, {want[0]}, {want[1]}, {want[2]}) in [0, 1]; "
                f"got {tuple(images.shape)}. Resize or crop the data to {want[1]}×{want[2]} "
                f"(e.g. the data module's image_size) and use {want[0]}-channel images."
            )
        if not images.is_floating_point():
            raise ValueError(f"{self.name} expects float images in [0, 1]; got dtype {images.dtype}")
        if finite:
            bad = (~torch.isfinite(images)).flatten(1).any(1)  # (B,)
            if bad.any():
                where = bad.nonzero().flatten().tolist()
                raise ValueError(
                    f"{len(where)} of {len(images)} input images contain NaN or infinite pixels (batch positions "
                    f"{', '.join(map(str, where[:10]))}{' …' if len(where) > 10 else ''}); {self.name} needs finite "
                    f"images in [0, 1]: check the data source or the preprocessing that produced them"
                )

    def normalize(self, images: Tensor) -> Tensor:
        return (images - self.mean) / self.std  # (B, C, H, W)

    def forward(self, images: Tensor, layers: str | Iterable[str]) -> dict[str, Tensor]:
        names = self.resolve(layers)
        self.check_images(images)
        nodes = tuple(self._table[n].node for n in names)
        out = self._extractor(nodes)(self.normalize(images))
        return {n: self._adapt(n, out[self._table[n].node]) for n in names}

    def logits(self, images: Tensor) -> Tensor:
        """Output of the last layer (the class scores for a classifier)."""
        last = self.layers[-1]
        return self(images, [last])[last]

    # ------------------------------------------------------------------ identity
    @property
    def weights_hash(self) -> str:
        """First 16 hex digits of a SHA-256 over every parameter and buffer, in state-dict order: per tensor its
        key, dtype and shape, then its bytes in C order (0-dim buffers such as BatchNorm's
        ``num_batches_tracked`` included)."""
        if self._weights_hash is None:
            h = hashlib.sha256()
            for key, t in self.model.state_dict().items():
                t = t.detach().cpu().contiguous()
                h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
                # reshape(-1): a 0-dim tensor cannot be viewed as bytes; for the others the bytes are unchanged.
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._weights_hash = h.hexdigest()[:16]
        return self._weights_hash

    @property
    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "weights_hash": self.weights_hash, "spec": self.spec}

    def extra_repr(self) -> str:
        return f"name={self.name}, image_size={self.image_size}, layers={len(self._table)}"
