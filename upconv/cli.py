"""The ``upconv`` console script. Subcommands are functions; jsonargparse builds the parser from their
signatures and docstrings (training itself goes through LightningCLI in ``train.py``)."""

from __future__ import annotations

import sys
from typing import Optional

from jsonargparse import CLI

from .deconv_figures import deconv
from .evaluate import evaluate_cli
from .privacy.cli import privacy
from .visualize.cli import COMMANDS as VISUALIZE_COMMANDS


def layers(encoder: str, weights: Optional[str] = None, pretrained: bool = True, download: bool = False) -> None:
    """Print an encoder's layer table: name, graph node, output shape and feature count.

    Args:
        encoder: alexnet_cifar, he2019_cifar, a torchvision model name or a class path.
        weights: optional state-dict or checkpoint file for the encoder.
        pretrained: torchvision models: load ImageNet weights from the local torch cache.
        download: allow fetching torchvision weights that are not cached.
    """
    from .encoders import build_encoder

    enc = build_encoder(encoder, weights, download=download, pretrained=pretrained)
    rows = [("layer", "node", "shape", "features")]
    rows += [(i.name, i.node, "×".join(map(str, i.shape)), str(i.numel)) for i in enc.layer_table]
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    print(f"{enc.name}  input 3×{enc.image_size[0]}×{enc.image_size[1]}  weights {enc.weights_hash}")
    for r in rows:
        print("  ".join(c.ljust(w) if k < 3 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths))))


COMMANDS = {
    "layers": layers,
    "evaluate": evaluate_cli,
    "deconv": deconv,
    "privacy": privacy,  # attacks and defences at split points
    "visualize": VISUALIZE_COMMANDS,  # nested: upconv visualize <method>
}


def main(argv: list[str] | None = None) -> None:
    try:
        CLI(COMMANDS, args=argv, as_positional=True)
    except (ValueError, FileNotFoundError) as e:
        print(f"upconv: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
