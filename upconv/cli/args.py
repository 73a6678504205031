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

F = TypeVar("F", bound=Callable[..., Any])

ENCODER_ARGS = {
    "encoder": "the encoder: a name alone (positional, or --encoder NAME), or --encoder.name NAME with "
    "--encoder.weights FILE, --encoder.kwargs '{width: 0.25}', --encoder.pretrained, --encoder.download; "
    "--encoder.help lists them.",
    "device": "auto (the GPU when there is one, else the CPU), cpu, cuda or cuda:N.",
}
# Older spellings of the encoder's fields, still read on the command line (``encoder_options``).
LEGACY_OPTIONS = {
    "--encoder_weights": "--encoder.weights",
    "--encoder_kwargs": "--encoder.kwargs",
    "--pretrained": "--encoder.pretrained",
    "--download": "--encoder.download",
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


def encoder_options(argv: list[str], commands: Mapping[str, Any]) -> list[str]:
    """``argv`` with the encoder shortcuts spelled out for jsonargparse, which reads an ``EncoderSpec`` as a group
    of options: a name right after a command that takes one (``upconv layers alexnet_cifar``) or ``--encoder
    NAME`` becomes ``--encoder.name NAME``, and the older ``--encoder_weights`` … ``--download`` their
    ``--encoder.*`` names."""
    out, i, command = [], 0, commands
    while i < len(argv) and isinstance(command, Mapping) and argv[i] in command:  # the subcommand path
        command = command[argv[i]]
        out.append(argv[i])
        i += 1
    takes = inspect.isfunction(command) and "encoder" in inspect.signature(command).parameters
    if takes and i < len(argv) and not argv[i].startswith("-"):
        out.append("--encoder.name")
    for arg in argv[i:]:
        key, eq, value = arg.partition("=")
        if key in LEGACY_OPTIONS:
            arg = LEGACY_OPTIONS[key] + eq + value
        elif key == "--encoder" and eq and _is_name(value):
            arg = f"--encoder.name={value}"
        elif out[-1:] == ["--encoder"] and _is_name(arg):
            out[-1] = "--encoder.name"
        out.append(arg)
    return out


def _is_name(value: str) -> bool:
    """An encoder name, not the mapping or YAML/JSON file jsonargparse reads for a group."""
    return not value.lstrip().startswith(("{", "-")) and not value.endswith((".yaml", ".yml", ".json"))
