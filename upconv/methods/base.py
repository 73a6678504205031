"""Inversion methods for the depth evaluation, built by name from one registry.

A *method* is any callable ``(images, layer) -> reconstructions`` with a ``.name``; images are float
(B, C, H, W) in [0, 1]. A method that uses anything of the true image beyond its features (DeconvNet's
default per-image fit of brightness and contrast) declares ``reads_target = True`` and a short ``caveat``,
and reports mark its figures as an optimistic bound. Other modules add their methods with
``register_method`` (or through the lazy table below, imported on first use).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from typing import Any, Callable, Optional, Protocol, Sequence, Union

from torch import Tensor

from upconv.nets.encoder import Encoder

TARGET_CAVEAT = "reads the true image beyond its features: an optimistic bound"


class Method(Protocol):
    name: str

    def __call__(self, images: Tensor, layer: str) -> Tensor: ...


def caveat(method: Method) -> Optional[str]:
    """The method's caveat when it reads the true image (``reads_target``), else None."""
    if not getattr(method, "reads_target", False):
        return None
    return getattr(method, "caveat", None) or TARGET_CAVEAT


# ---------------------------------------------------------------------- method registry
_REGISTRY: dict[str, Callable[..., Method]] = {}
# Methods living in modules that may be absent: name -> (module, factory attribute, options). Imported on
# first use; a module may instead call ``register_method`` itself when imported.
_LAZY: dict[str, tuple[str, str, dict[str, Any]]] = {
    "deconvnet": ("upconv.methods.deconvnet", "DeconvNetMethod", {}),
    "deconvnet+minmax": ("upconv.methods.deconvnet", "DeconvNetMethod", {"mapping": "minmax"}),
    "guided-backprop": ("upconv.methods.deconvnet", "DeconvNetMethod", {"guided": True}),
    "guided-backprop+minmax": ("upconv.methods.deconvnet", "DeconvNetMethod", {"guided": True, "mapping": "minmax"}),
    "mahendran_vedaldi": ("upconv.methods.mahendran_vedaldi", "MVInversionMethod", {}),
}


def register_method(name: str, factory: Callable[..., Method]) -> None:
    """Make ``factory(encoder, **options) -> Method`` available to ``evaluate(methods=[name])``."""
    _REGISTRY[name] = factory


def method_names() -> list[str]:
    """Registered method names, plus those whose module is installed but not imported yet."""
    lazy = [n for n, (mod, _, _) in _LAZY.items()
            if n not in _REGISTRY and importlib.util.find_spec(mod) is not None]
    return sorted([*_REGISTRY, *lazy])


def build_method(name: str, encoder: Encoder, **options: Any) -> Method:
    """Build a registered method for ``encoder``; a clear ValueError for an unknown name."""
    if name not in _REGISTRY and name in _LAZY and importlib.util.find_spec(_LAZY[name][0]) is not None:
        module_name, attr, preset = _LAZY[name]
        module = importlib.import_module(module_name)
        if name not in _REGISTRY and hasattr(module, attr):
            register_method(name, functools.partial(getattr(module, attr), **preset))
    if name not in _REGISTRY:
        raise ValueError(f"unknown method '{name}'; choose one of: {', '.join(method_names())}")
    return _REGISTRY[name](encoder, **options)


class UpconvNetMethod:
    """UpconvNet decoders (Dosovitskiy & Brox 2016) from one or more checkpoints of the same encoder."""

    name = "upconvnet"
    reads_target = False  # decoders see only the features

    def __init__(self, encoder: Encoder, checkpoints: Union[str, Sequence[str], None] = None) -> None:
        from upconv.nets.checkpoints import load_decoders

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

    def health(self, layer: str) -> Optional[dict[str, Any]]:
        """The training-health record of ``layer``'s decoder (``upconv.training.health``), or None if not recorded."""
        return self.by_layer[layer].health.get(layer) if layer in self.by_layer else None

    def __call__(self, images: Tensor, layer: str) -> Tensor:
        if layer not in self.by_layer:
            raise ValueError(f"no UpconvNet decoder for layer {layer}; the checkpoints hold: {', '.join(self.layers)}")
        return self.by_layer[layer](images, layer)  # (B, C, H, W), clamped to [0, 1]


register_method("upconvnet", UpconvNetMethod)
