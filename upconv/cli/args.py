"""The encoder arguments every ``upconv`` subcommand that builds an encoder takes, named and documented once.

jsonargparse builds each subcommand's options from its signature and reads the help of each option from
the docstring's ``Args:`` section; ``shared_args`` appends the shared entries there, so ``upconv layers``,
``upconv deconv`` and every ``upconv visualize <method>`` spell and explain them the same way.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from upconv.core.runtime import resolve_device
from upconv.nets.encoder import Encoder
from upconv.nets.zoo import build_encoder

F = TypeVar("F", bound=Callable[..., Any])

ENCODER_ARGS = {
    "encoder": "alexnet_cifar, he2019_cifar, a torchvision model name (alexnet, vgg11/13/16/19, resnet18/34/50) "
    "or the class path of your own nn.Module (package.module.Class); see `upconv layers`.",
    "encoder_weights": "state-dict or classifier checkpoint file for the encoder (default: torchvision's cached "
    "ImageNet weights, or seeded random weights for the others).",
    "encoder_kwargs": "keyword arguments for the encoder's constructor, e.g. {\"width\": 0.25} for the demo's "
    "narrow alexnet_cifar.",
    "pretrained": "torchvision models: load ImageNet weights from the local torch cache (false: random weights).",
    "download": "torchvision models: allow fetching ImageNet weights that are not in the local torch cache.",
    "device": "auto (the GPU when there is one, else the CPU), cpu, cuda or cuda:N.",
}


def shared_args(extra: Mapping[str, str] | None = None) -> Callable[[F], F]:
    """Decorator: append help for the shared encoder arguments (and ``extra`` ones) that ``fn`` takes and
    does not document itself to its docstring's ``Args:`` section, which must come last. Refuses, at
    import time, a command that lacks one of the encoder arguments or whose ``device`` is not ``auto``."""
    table = {**ENCODER_ARGS, **(extra or {})}

    def wrap(fn: F) -> F:
        params = inspect.signature(fn).parameters
        missing = [k for k in ENCODER_ARGS if k not in params]
        if missing or params["device"].default != "auto":
            raise TypeError(
                f"command {fn.__name__} must take {', '.join(ENCODER_ARGS)} (device='auto'); "
                f"missing: {', '.join(missing) or 'none'}"
            )
        doc = inspect.cleandoc(fn.__doc__ or "")
        if not re.search(r"^Args:$", doc, re.M):
            raise TypeError(f"command {fn.__name__} needs an Args: section in its docstring")
        lines = [f"    {k}: {table[k]}" for k in params if k in table and not re.search(rf"^\s+{k}:", doc, re.M)]
        fn.__doc__ = doc + "\n" + "\n".join(lines)
        return fn

    return wrap


def cli_encoder(
    encoder: str,
    encoder_weights: str | None,
    encoder_kwargs: dict[str, Any] | None,
    pretrained: bool,
    download: bool,
    device: str,
) -> Encoder:
    """The encoder a command's shared arguments describe, on the resolved device."""
    return build_encoder(encoder, encoder_weights, download=download, pretrained=pretrained, kwargs=encoder_kwargs).to(
        resolve_device(device)
    )
