"""The ``upconv`` console script. jsonargparse builds every subcommand's options from one declaration: a
function's signature and docstring, or a config dataclass's fields (``evaluate``, ``privacy``), whose
instance ``main`` hands to the run function listed in ``RUNS``. Training goes through LightningCLI in
``train.py``."""

from __future__ import annotations

import dataclasses
import inspect
import sys
from argparse import ArgumentError
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from jsonargparse import CLI

from upconv.benchmark.config import BenchmarkConfig
from upconv.benchmark.run import print_benchmark
from upconv.cli.args import encoder_options, shared_args
from upconv.cli.attribution import COMMANDS as ATTRIBUTION_COMMANDS
from upconv.cli.deconv import deconv
from upconv.cli.privacy import budget, frontier, privacy
from upconv.cli.visualize import COMMANDS as VISUALIZE_COMMANDS
from upconv.core.errors import config_error
from upconv.core.runtime import close_progress_bars
from upconv.evaluation.config import EvalConfig
from upconv.evaluation.run import run_evaluate
from upconv.nets.spec import EncoderSpec
from upconv.privacy.budget import BudgetConfig
from upconv.privacy.config import PrivacyConfig
from upconv.privacy.frontier import FrontierConfig


@shared_args()
def layers(
    encoder: EncoderSpec,
    device: str = "auto",
) -> None:
    """Print an encoder's layer table: name, graph node, output shape and feature count. One image is run
    through every layer on ``device`` first, so a model that cannot run there fails here. Pretrained weights
    that are not in the local cache are not fetched (``--download`` does): the table is then printed for
    random weights, and the header says so instead of giving a weights hash.

    Args:
    """
    try:
        enc, weights = encoder.build(device), None
    except FileNotFoundError as e:
        if encoder.weights or encoder.pretrained is False:
            raise
        # The table does not depend on the weights: show it for random ones, and say so where the hash goes.
        enc = replace(encoder, pretrained=False, download=False).build(device)
        weights = f"random (pretrained weights not loaded: {e})"
    with torch.no_grad():
        enc(torch.zeros(1, enc.channels, *enc.image_size, device=enc.device), enc.layers)
    rows = [("layer", "node", "shape", "features")]
    rows += [(i.name, i.node, "×".join(map(str, i.shape)), str(i.numel)) for i in enc.layer_table]
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    print(
        f"{enc.name}  input {enc.channels}×{enc.image_size[0]}×{enc.image_size[1]}  "
        f"weights {weights or enc.weights_hash}"
    )
    for r in rows:
        print("  ".join(c.ljust(w) if k < 3 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths))))


# A subcommand declared as a config dataclass returns its instance; this says what runs it.
RUNS: dict[type, Callable[[Any], None]] = {
    EvalConfig: run_evaluate,
    BenchmarkConfig: print_benchmark,
    PrivacyConfig: privacy,
    FrontierConfig: frontier,
    BudgetConfig: budget,
}

COMMANDS = {
    "layers": layers,
    "evaluate": EvalConfig,
    "benchmark": BenchmarkConfig,  # many models, every depth: image and class information, resumable units
    "deconv": deconv,
    "privacy": PrivacyConfig,  # attacks and defences at split points
    "privacy-frontier": FrontierConfig,  # utility against leakage over a defence's strength
    "privacy-budget": BudgetConfig,  # leakage against the attacker's number of image–feature pairs
    "visualize": {**VISUALIZE_COMMANDS, **ATTRIBUTION_COMMANDS},  # nested: upconv visualize <method>
}


# Where a command writes by default; from Python the same config's ``out=None`` writes nothing.
DEFAULTS = {"evaluate.out": "runs/eval"}


def option_names(args: list[str]) -> tuple[set[str], str]:
    """The option names of the (sub)command ``args`` start with, and the command that lists them (``--help``)."""
    component, path = COMMANDS, []
    for a in args:
        if not (isinstance(component, dict) and a in component):
            break
        component, path = component[a], [*path, a]
    if isinstance(component, dict):
        return set(component), "upconv --help"
    if dataclasses.is_dataclass(component):
        names = {f.name for f in dataclasses.fields(component)}
    else:
        names = set(inspect.signature(component).parameters)
    names |= {f"encoder.{f.name}" for f in dataclasses.fields(EncoderSpec)} if "encoder" in names else set()
    return names, f"upconv {' '.join(path)} --help"


def main(argv: list[str] | None = None) -> None:
    """Run a subcommand; a mistake (an unknown option or config key, a bad value or file) ends in one line,
    ``upconv: error: …``, and exit status 2."""
    args = encoder_options(sys.argv[1:] if argv is None else list(argv), COMMANDS)
    try:
        parsed = CLI(COMMANDS, args=args, as_positional=True, exit_on_error=False, set_defaults=DEFAULTS)
        run = RUNS.get(type(parsed))
        if run is not None:
            run(parsed)
    except ArgumentError as e:
        _fail(config_error(e, *option_names(args)))
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))


def _fail(message: str) -> None:
    close_progress_bars()
    print(f"upconv: error: {message}", file=sys.stderr)
    raise SystemExit(2) from None


if __name__ == "__main__":
    main()
