"""Frozen CNN encoders with an ordered layer table.

``Encoder`` is the one abstraction the package shares: decoders, configs, the ``upconv layers`` listing,
evaluation rows and test parametrisation all read its layer table. Features of several layers come from
ONE forward pass through a torchvision FX feature extractor, which drops every operation after the
deepest layer asked for.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor

from upconv.nets.builtin import ARCHITECTURES

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TORCHVISION_MODELS = ("alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50")


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
    ) -> None:
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
        self._extractors: dict[tuple[str, ...], nn.Module] = {}
        self._weights_hash: str | None = None
        self._table = self._probe(layers)
        self.eval()

    # ------------------------------------------------------------------ layer table
    def _probe(self, layers: dict[str, str]) -> dict[str, LayerInfo]:
        """Run one dummy image through every tapped node to learn each layer's output shape."""
        self._order = list(layers.values())  # network order, used to sort requests
        dummy = torch.zeros(1, self.channels, *self.image_size)
        try:
            with torch.no_grad():
                out = self._extractor(tuple(layers.values()))(self.normalize(dummy))
        except Exception as e:  # FX tracing or a shape error inside the user's model
            raise ValueError(
                f"could not run encoder '{self.name}' on a {self.channels}×{self.image_size[0]}×"
                f"{self.image_size[1]} image to build its layer table: {e}"
            ) from e
        return {n: LayerInfo(n, node, tuple(out[node].shape[1:])) for n, node in layers.items()}

    def _extractor(self, nodes: tuple[str, ...]) -> nn.Module:
        key = tuple(sorted(set(nodes), key=self._order.index))
        if key not in self._extractors:
            # The graph module shares the model's submodules (and so their device and weights); it is
            # kept out of the module tree so it is never saved or counted twice.
            ext = create_feature_extractor(self.model, return_nodes={n: n for n in key})
            self._extractors[key] = ext.eval()
        return self._extractors[key]

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
                raise ValueError(
                    f"unknown layer '{layer}' for {self.name}; choose one of: {', '.join(self.layers)}"
                )
            out.append(lookup[str(layer).lower()])
        if not out:
            raise ValueError(f"no layers given for {self.name}; choose from: {', '.join(self.layers)}")
        order = self.layers
        return sorted(set(out), key=order.index)

    # ------------------------------------------------------------------ forward
    def train(self, mode: bool = True) -> "Encoder":
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
        return {n: out[self._table[n].node] for n in names}

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


# ---------------------------------------------------------------------- builders
def _load_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """A plain state dict, or the model weights inside an upconv/Lightning classifier checkpoint."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"encoder weights file not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)  # a weights file never runs code
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    for prefix in ("model.", "encoder.model."):
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def _apply_weights(model: nn.Module, path: str | os.PathLike, label: str,
                   state: dict[str, Tensor] | None = None) -> None:
    """Load the weights in ``path`` (or ``state``, already read from it) into ``model``."""
    state = _load_state_dict(path) if state is None else state
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"weights in {path} do not fit {label}: {e}") from e


def _torchvision_layers(name: str, model: nn.Module) -> dict[str, str]:
    """Dosovitskiy & Brox / Simonyan names for AlexNet and VGG; top-level module names otherwise."""
    if not (name == "alexnet" or name.startswith("vgg")):
        return {n: n for n, _ in model.named_children()}
    layers: dict[str, str] = {}
    block, conv_in_block, conv_total = 1, 0, 0
    last_conv: str | None = None
    for i, m in enumerate(model.features):
        if isinstance(m, nn.Conv2d):
            conv_total += 1
            conv_in_block += 1
            last_conv = f"conv{conv_total}" if name == "alexnet" else f"conv{block}_{conv_in_block}"
        elif isinstance(m, nn.ReLU) and last_conv:
            layers[last_conv] = f"features.{i}"
        elif isinstance(m, nn.MaxPool2d):
            layers[f"pool{conv_total if name == 'alexnet' else block}"] = f"features.{i}"
            block, conv_in_block = block + 1, 0
    linear = [i for i, m in enumerate(model.classifier) if isinstance(m, nn.Linear)]
    for k, i in enumerate(linear):
        is_last = k == len(linear) - 1
        layers[f"fc{6 + k}"] = f"classifier.{i if is_last else i + 1}"  # post-ReLU except fc8
    return layers


def _torchvision_model(name: str, weights: str | None, download: bool, pretrained: bool) -> nn.Module:
    import torchvision

    model = torchvision.models.get_model(name, weights=None)
    if weights:
        _apply_weights(model, weights, name)
    elif pretrained:
        enum = torchvision.models.get_model_weights(name).DEFAULT
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(enum.url))
        if not os.path.isfile(cached) and not download:
            raise FileNotFoundError(
                f"pretrained weights for {name} are not in the local torch cache (expected {cached}). "
                f"Place the file there (from {enum.url}), pass download=True (--download) to fetch it, "
                f"or pretrained=False for random weights."
            )
        model.load_state_dict(enum.get_state_dict(progress=False, check_hash=True))
    return model


def build_encoder(
    name: str,
    weights: str | None = None,
    *,
    download: bool = False,
    pretrained: bool = True,
    kwargs: dict[str, Any] | None = None,
) -> Encoder:
    """Build a frozen encoder by name.

    - ``alexnet_cifar`` / ``he2019_cifar``: built-in CIFAR nets (``weights``: a state-dict or classifier
      checkpoint file; random weights without one).
    - a torchvision classifier (``alexnet``, ``vgg11``, ``vgg16``, ``resnet18``, ``resnet50`` …): ImageNet
      weights from the local torch cache (``download=True`` to fetch them), or ``weights`` from a file.
    - ``package.module.ClassName``: a user's ``nn.Module`` built with ``kwargs``, plus ``weights``.
    """
    kwargs = dict(kwargs or {})
    spec = {"name": name, "weights": weights, "pretrained": pretrained, "kwargs": dict(kwargs)}
    # Random initialisation is seeded, so an encoder without weights is rebuilt identically from its spec
    # (and its decoders' checkpoints still match its weights hash).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _build(name, weights, download, pretrained, kwargs, spec)


def _build(name: str, weights: str | None, download: bool, pretrained: bool, kwargs: dict[str, Any],
           spec: dict[str, Any]) -> Encoder:
    if name in ARCHITECTURES:
        state = _load_state_dict(weights) if weights else None
        if state is not None and "num_classes" not in kwargs:
            # The class count is read off the weights: the last 2-D weight is the classifier's.
            last = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
            if last:
                kwargs["num_classes"] = last[-1].shape[0]
        model = ARCHITECTURES[name](**kwargs)
        if state is not None:
            _apply_weights(model, weights, name, state)
        return Encoder(model, name=name, image_size=(32, 32), mean=CIFAR_MEAN, std=CIFAR_STD,
                       spec=spec, copy_model=False)
    if name in TORCHVISION_MODELS:
        model = _torchvision_model(name, weights, download, pretrained)
        return Encoder(model, name=name, image_size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                       layers=_torchvision_layers(name, model), spec=spec, copy_model=False)
    if "." in name:
        module_path, _, cls_name = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_path), cls_name)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot import encoder class '{name}': {e}") from e
        image_size = tuple(kwargs.pop("image_size", (32, 32)))
        mean = kwargs.pop("mean", CIFAR_MEAN)
        std = kwargs.pop("std", CIFAR_STD)
        model = cls(**kwargs)
        if weights:
            _apply_weights(model, weights, name)
        return Encoder(model, name=name, image_size=image_size, mean=mean, std=std, spec=spec,
                       copy_model=False)
    raise ValueError(
        f"unknown encoder '{name}'; choose one of: {', '.join([*ARCHITECTURES, *TORCHVISION_MODELS])}, "
        f"or an importable class path such as mypackage.models.MyNet"
    )


def encoder_from_spec(spec: dict[str, Any], download: bool = False) -> Encoder:
    """Rebuild the encoder a checkpoint recorded (see ``Encoder.identity``)."""
    return build_encoder(spec["name"], spec.get("weights"), download=download,
                         pretrained=spec.get("pretrained", True), kwargs=spec.get("kwargs"))
