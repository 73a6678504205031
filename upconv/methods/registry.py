"""Every inversion method by name, in one table: ``build_method("deconvnet+minmax", encoder)``.

The built-in methods are listed here explicitly (no import-time self-registration); ``register_method``
adds a user's method under a new name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from upconv.methods.base import Method
from upconv.methods.deconvnet import DeconvNetMethod
from upconv.methods.mahendran_vedaldi import MVInversionMethod
from upconv.methods.upconvnet import UpconvNetMethod
from upconv.nets.encoder import Encoder

_REGISTRY: dict[str, Callable[..., Method]] = {
    "upconvnet": UpconvNetMethod,
    "deconvnet": DeconvNetMethod,
    "deconvnet+minmax": functools.partial(DeconvNetMethod, mapping="minmax"),
    "guided-backprop": functools.partial(DeconvNetMethod, guided=True),
    "guided-backprop+minmax": functools.partial(DeconvNetMethod, guided=True, mapping="minmax"),
    "mahendran_vedaldi": MVInversionMethod,
}


def register_method(name: str, factory: Callable[..., Method]) -> None:
    """Make ``factory(encoder, **options) -> Method`` available as ``name`` (``evaluate(methods=[name])``)."""
    _REGISTRY[name] = factory


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def build_method(name: str, encoder: Encoder, **options: Any) -> Method:
    """Build a registered method for ``encoder``; a clear ValueError for an unknown name."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method '{name}'; choose one of: {', '.join(method_names())}")
    return _REGISTRY[name](encoder, **options)
