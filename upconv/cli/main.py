"""The ``upconv`` console script. Subcommands are functions; jsonargparse builds the parser from their
signatures and docstrings (training itself goes through LightningCLI in ``train.py``)."""

from __future__ import annotations

import sys
from typing import Any, Optional

import torch
from jsonargparse import CLI

from upconv.cli.args import cli_encoder, shared_args
from upconv.visualize.deconv import deconv
from upconv.evaluation.run import evaluate_cli
from upconv.cli.privacy import privacy
from upconv.cli.visualize import COMMANDS as VISUALIZE_COMMANDS


@shared_args()
def layers(encoder: str, encoder_weights: Optional[str] = None, encoder_kwargs: Optional[dict[str, Any]] = None,
           pretrained: bool = True, download: bool = False, device: str = "auto") -> None:
    """Print an encoder's layer table: name, graph node, output shape and feature count. One image is run
    through every layer on ``device`` first, so a model that cannot run there fails here.

    Args:
    """
    enc = cli_encoder(encoder, encoder_weights, encoder_kwargs, pretrained, download, device)
    with torch.no_grad():
        enc(torch.zeros(1, enc.channels, *enc.image_size, device=enc.mean.device), enc.layers)
    rows = [("layer", "node", "shape", "features")]
    rows += [(i.name, i.node, "×".join(map(str, i.shape)), str(i.numel)) for i in enc.layer_table]
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    print(f"{enc.name}  input {enc.channels}×{enc.image_size[0]}×{enc.image_size[1]}  weights {enc.weights_hash}")
    for r in rows:
        print("  ".join(c.ljust(w) if k < 3 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths))))


COMMANDS = {
    "layers": layers,
    "evaluate": evaluate_cli,
    "deconv": deconv,
    "privacy": privacy,  # attacks and defences at split points
    "visualize": VISUALIZE_COMMANDS,  # nested: upconv visualize <method>
}


def _clear_progress_bars() -> None:
    """Erase bars a failing loop left open (the traceback keeps their generators alive), so the error is
    the last thing on the terminal rather than text glued to a half-drawn bar."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main(argv: list[str] | None = None) -> None:
    try:
        CLI(COMMANDS, args=argv, as_positional=True)
    except (ValueError, FileNotFoundError) as e:
        _clear_progress_bars()
        print(f"upconv: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
