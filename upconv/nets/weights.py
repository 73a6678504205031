"""Reading encoder weights files: a plain state dict, a classifier checkpoint's model weights, or a
``.safetensors`` file; always without running code from the file (``weights_only``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from upconv.core.files import load_torch_file


def load_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """A plain state dict, or the model weights inside an upconv/Lightning classifier checkpoint, or the
    tensors of a ``.safetensors`` file (the format timm and the Hugging Face hub publish)."""
    if str(path).endswith(".safetensors"):
        return _safetensors(path)
    obj = load_torch_file(path, "encoder weights file")  # weights_only: a weights file never runs code
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    for prefix in ("model.", "encoder.model."):
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
    return obj


def apply_weights(
    model: nn.Module, path: str | os.PathLike, label: str, state: dict[str, Tensor] | None = None
) -> None:
    """Load the weights in ``path`` (or ``state``, already read from it) into ``model``; one line saying what
    does not fit (weights of another encoder, or of other constructor arguments) and what to do."""
    state = load_state_dict(path) if state is None else state
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    foreign = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    what = [
        f"{len(missing)} of its {len(own)} tensors are not in the file (e.g. {missing[0]})" if missing else "",
        f"{len(foreign)} tensors of the file are not its own (e.g. {foreign[0]})" if foreign else "",
        f"{len(shapes)} have other shapes (e.g. {shapes[0]}: {tuple(state[shapes[0]].shape)} in the file, "
        f"{tuple(own[shapes[0]].shape)} in {label})"
        if shapes
        else "",
    ]
    if any(what):
        raise ValueError(
            f"the weights in {path} do not fit {label}: {'; '.join(w for w in what if w)}. They were trained for "
            f"another encoder or other constructor arguments (kwargs): give {label}'s own weights, or none "
            f"(encoder weights: null)"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"the weights in {path} do not fit {label}: {str(e).splitlines()[0]}") from None


def construct(factory: Callable[..., nn.Module], label: str, kwargs: dict[str, Any]) -> nn.Module:
    """``factory(**kwargs)``, a model constructor; an argument it does not take ends in one line naming it."""
    try:
        return factory(**kwargs)
    except TypeError as e:
        if "argument" not in str(e):
            raise
        raise ValueError(
            f"{label} cannot be built with kwargs {kwargs}: {e}; check the names (--encoder.kwargs)"
        ) from None


def _safetensors(path: str | os.PathLike) -> dict[str, Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"encoder weights file {path} does not exist")
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ValueError(f"{path} is a .safetensors file: pip install safetensors to read it") from None
    try:
        return load_file(str(path))
    except Exception as e:  # the library raises its own error types for a truncated or foreign file
        raise ValueError(
            f"{path} is not a readable .safetensors file ({type(e).__name__}: {e}); "
            f"check the download or re-save the weights"
        ) from None
