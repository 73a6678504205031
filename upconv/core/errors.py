"""One line for a mistake on a command line or in a config file, instead of a parser's page of usage.

jsonargparse (``train.py``'s LightningCLI and the ``upconv`` console script alike) reports an unknown key, a
wrong value or a class argument that does not exist as an ``ArgumentError`` whose text and causes hold the
reason over many lines; ``config_error`` keeps the innermost reason and, for an unknown key, names the
nearest valid one.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from argparse import ArgumentError


def config_error(error: ArgumentError, known: set[str], help_command: str = "train.py fit --help") -> str:
    """One line for a parser's error: the innermost reason, and for an unknown key the nearest valid one."""
    chain, inner = [str(error)], error
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__
        chain.append(str(inner))
    text = "\n".join(chain)
    unknown = re.search(r"(?:does not accept option '|unrecognized arguments: --)([\w.]+)", text)
    option = re.search(r"class_path '([\w.]+)'.*?Option '(\w+)' is not accepted", text, re.S)
    if option:
        module, _, name = option.group(1).rpartition(".")
        params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
        key = re.search(r'Parser key "([\w.]+)"', text)
        prefix = f"{key.group(1) if key else 'model'}.init_args."
        bad, candidates = prefix + option.group(2), {prefix + p for p in params if p != "self"}
    elif unknown:
        bad, candidates = unknown.group(1), known
    else:
        key = re.search(r'Parser key "([\w.]+)"', text)
        reason = " ".join(chain[-1].split())
        return f"{key.group(1)}: {reason}" if key else reason
    near = difflib.get_close_matches(bad, sorted(candidates), n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]}?" if near else f"; see {help_command} for the valid keys"
    return f"unknown config key {bad}{hint}"
