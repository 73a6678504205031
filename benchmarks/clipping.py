"""What per-decoder gradient clipping does to an AdamW blow-up, beside what the health guard does.

Decoders for deep layers (fc6, fc8: wide fully connected layers, without normalisation by default) are trained
at a learning rate that makes them blow up (default 1e-2), each setting from the same seed on the same batches:
clipping off / at 1.0 / at 0.1, with the guard disabled (its thresholds out of reach), and the recipe's guard
with clipping off. Printed per setting and layer: the highest training loss, the loss over the last 10
steps, and the held-out loss at the end (lower is better), plus the guard's events.

    python benchmarks/clipping.py [--lr 1e-2] [--steps 60] [--data folder --root ../shared/data/cifar10]
    python benchmarks/clipping.py --steps 30 --publish docs/measurements.md   # also into the page's block "clipping"
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import lightning.pytorch as L
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from publish import load_now, publish, record, require, rounded  # noqa: E402

from upconv.data.source import ImageSource  # noqa: E402
from upconv.training.datamodule import ImageData  # noqa: E402
from upconv.training.health import GuardSettings  # noqa: E402
from upconv.training.module import InversionModule  # noqa: E402
from upconv.training.recipes import DecoderRecipe  # noqa: E402

OFF = GuardSettings(skip_factor=1e30, spike_factor=1e30)  # a guard that never acts
HEAD = ["| setting | layer | highest loss | last 10 steps | held-out loss | guard |", "|---|---|---:|---:|---:|---|"]


def row(r: dict) -> str:
    """One setting and layer of the table."""
    guard = r["status"] + (f" ({', '.join(r['events'])})" if r["events"] else "")
    return f"| {r['setting']} | {r['layer']} | {r['max']:.3g} | {r['last10']:.4g} | {r['held_out']:.4g} | {guard} |"


def render(figures: dict) -> str:
    """The table, as printed row by row and as published."""
    return "\n".join([*HEAD, *map(row, figures["rows"])])


class Curve(L.Callback):
    def __init__(self) -> None:
        self.losses: list = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        with torch.no_grad():
            losses, _ = module._losses(batch[0])
        self.losses.append({n: float(v) for n, v in losses.items()})


def run(layers: list[str], recipe: DecoderRecipe, steps: int, data: ImageData, held_out: torch.Tensor, **kw) -> dict:
    torch.manual_seed(0)
    m = InversionModule(
        layers=layers, recipe=recipe, encoder={"name": "alexnet_cifar", "kwargs": {"width": 0.5}}, **kw
    )  # a random-weight encoder
    curve = Curve()
    L.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[curve],
    ).fit(m, data)
    with torch.no_grad():
        final, _ = m._losses(held_out)
    out = {}
    for n in m.layers:
        seq = torch.tensor([c[n] for c in curve.losses])
        out[n] = {
            "max": float(seq.nan_to_num(float("inf")).max()),
            "last10": float(seq[-10:].mean()),
            "held_out": float(final[n]),
            "status": m.health.status(n),
            "events": [f"{e.kind}@{e.step}" for e in m.health.events if e.layer == n],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--layers", default="fc6,fc8")
    ap.add_argument("--data", default="embedded")
    ap.add_argument("--root", default=None)
    ap.add_argument("--norm", default="none", help="decoder normalisation (the recipe's batch norm rarely blows up)")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--publish", metavar="PAGE", help="also write the table into PAGE's marked block")
    ap.add_argument("--block", default="clipping", help="the block's name in PAGE")
    args = ap.parse_args()
    if args.publish:
        require(args.publish, args.block)
    load = load_now()
    data = ImageData(
        images=ImageSource(
            source=args.data,
            root=args.root,
            limit_train=2000 if args.root else None,
            limit_val=200 if args.root else None,
        ),
        batch_size=32,
        augment=False,
    )
    data.setup()
    held_out = data.source.tensors("val")[0][:200].float() / 255  # (N, 3, 32, 32)
    settings = {
        "no clipping, no guard": DecoderRecipe(lr=args.lr, guard=OFF),
        "clip 1.0, no guard": DecoderRecipe(lr=args.lr, grad_clip=1.0, guard=OFF),
        "clip 0.1, no guard": DecoderRecipe(lr=args.lr, grad_clip=0.1, guard=OFF),
        "guard, no clipping": DecoderRecipe(lr=args.lr),
        "guard + clip 1.0": DecoderRecipe(lr=args.lr, grad_clip=1.0),
    }
    print(f"lr {args.lr}, {args.steps} steps, layers {args.layers}, decoders width {args.width}, norm {args.norm}")
    print("\n".join(HEAD))
    rows = []
    for name, recipe in settings.items():
        t0 = time.perf_counter()
        shape = dict(norm=args.norm, width=args.width, fc_width=256, max_width=256)
        for layer, r in run(args.layers.split(","), recipe, args.steps, data, held_out, **shape).items():
            rows.append(rounded({"setting": name, "layer": layer, **r}))
            print(row(rows[-1]), flush=True)
        print(f"<!-- {name}: {time.perf_counter() - t0:.0f} s -->", flush=True)
    if args.publish:
        figures = {"rows": rows}
        device = (
            torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
        )
        publish(args.publish, args.block, render(figures), record("clipping", figures, device, load))


if __name__ == "__main__":
    main()
