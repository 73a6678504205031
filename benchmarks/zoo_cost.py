"""Per encoder of the zoo: how long building its layer table takes (model construction + FX tracing + the probe
pass), and how long one decoder-training step takes (frozen encoder forward, two decoders' forward/backward, one
AdamW step), on the current device. Random weights (the cost does not depend on them); batch of random images.

    python benchmarks/zoo_cost.py                      # default list, CPU threads as set by torch
    python benchmarks/zoo_cost.py --models timm:resnet18 resnet18_cifar --batch 16 --steps 5
    python benchmarks/zoo_cost.py --publish docs/measurements.md   # also into the page's block "zoo-cost"
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from publish import load_now, publish, record, require  # noqa: E402

from upconv.nets.zoo import build_encoder  # noqa: E402
from upconv.training.module import InversionModule  # noqa: E402

HEAD = [
    "| encoder | input | layers | layer table (s) | one training step (s) | decoders trained |",
    "|---|---|---:|---:|---:|---|",
]


def row(r: dict) -> str:
    """One encoder of the table."""
    return (
        f"| `{r['encoder']}` | {r['input']} | {r['layers']} | {r['table_s']:.3g} | {r['step_s']:.3g} | "
        f"{', '.join(r['decoders'])} |"
    )


def render(figures: dict) -> str:
    """The table, as printed row by row and as published."""
    return "\n".join([*HEAD, *map(row, figures["rows"])])


DEFAULT = [
    "alexnet_cifar",
    "he2019_cifar",
    "resnet18_cifar",
    "resnet18",
    "timm:resnet18",
    "timm:convnext_atto",
    "timm:vit_tiny_patch16_224",
]


def decoder_layers(names: list[str]) -> list[str]:
    """A middle layer and the last feature layer before the classifier output (two decoders per step)."""
    body = names[:-1] if len(names) > 2 else names
    return sorted({body[len(body) // 2], body[-1]}, key=names.index)


def measure(name: str, batch: int, steps: int, device: str) -> dict:
    t = time.perf_counter()
    enc = build_encoder(name, pretrained=False)
    table_s = time.perf_counter() - t
    layers = decoder_layers(enc.layers)
    m = InversionModule(encoder={"name": name, "pretrained": False}, layers=layers).to(device)
    opt = torch.optim.AdamW(m.decoders.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, *enc.image_size, device=device)
    times = []
    for i in range(steps + 1):  # the first step warms up (allocations, lazy extractor build)
        t = time.perf_counter()
        losses, _ = m._losses(x)
        opt.zero_grad(set_to_none=True)
        torch.stack(list(losses.values())).sum().backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t)
    return {
        "encoder": name,
        "input": "×".join(map(str, enc.image_size)),
        "layers": len(enc.layers),
        "table_s": round(table_s, 3),
        "decoders": layers,
        "batch": batch,
        "step_s": round(statistics.median(times), 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--publish", metavar="PAGE", help="also write the table into PAGE's marked block")
    p.add_argument("--block", default="zoo-cost", help="the block's name in PAGE")
    a = p.parse_args()
    if a.publish:
        require(a.publish, a.block)
    load = load_now()
    rows = []
    device = torch.cuda.get_device_name() if a.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{device}, batch {a.batch}, median of {a.steps} steps")
    print("\n".join(HEAD))
    for name in a.models:
        rows.append(measure(name, a.batch, a.steps, a.device))
        print(row(rows[-1]), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if a.publish:
        publish(a.publish, a.block, render({"rows": rows}), record("zoo_cost", {"rows": rows}, device, load))


if __name__ == "__main__":
    main()
