"""Data-parallel training on the CPU: images per second of two gloo ranks against one process doing the same
work (the same images, epochs and global batch, so the same optimizer steps), run side by side in the same
minute, and how far apart the two runs' decoder weights end (the equivalence of N ranks with batch b and one
process with batch N·b).

    python benchmarks/ddp_throughput.py                 # both runs; prints a markdown table
    python benchmarks/ddp_throughput.py --markdown docs/scale-out.md   # and writes it between the markers

Each run is a fresh process; the two-rank one goes through Lightning's own ``ddp`` launcher (it re-runs this
script for rank 1). Throughput is timed from the start of the second epoch to the end of training (the first
epoch pays for start-up and warm-up), on rank 0, whose steps wait for every rank's gradients. The decoders are
the paper's, without normalisation: batch norm would normalise over each rank's own half of the batch (see
docs/scale-out.md), and behind any normalisation a bias has no true gradient, so Adam turns its rounding noise
into full steps that the output never sees and the weights cannot be compared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = dict(
    encoder={"name": "alexnet_cifar", "kwargs": {"width": 0.5}},
    layers=["conv2", "fc6"],
    width=16,
    fc_width=256,
    max_width=128,
    norm="none",
)
BEGIN, END = "<!-- ddp_throughput: begin -->", "<!-- ddp_throughput: end -->"


def train(devices: int, batch: int, epochs: int, n: int, threads: int, out: str) -> None:
    """One run (this process is one rank of it); rank 0 writes its timing and final weights to ``out``."""
    import lightning.pytorch as L

    from upconv.data.source import ImageSource
    from upconv.training.datamodule import ImageData
    from upconv.training.module import InversionModule

    class Clock(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            if trainer.current_epoch == 1:
                self.t0, self.step0 = time.perf_counter(), trainer.global_step

        def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            self.seconds, self.steps = time.perf_counter() - self.t0, trainer.global_step - self.step0

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    module = InversionModule(**MODEL)
    data = ImageData(
        images=ImageSource(source="embedded", embedded_per_class=80, limit_train=n, limit_val=32),
        batch_size=batch,
        augment=False,
    )
    clock = Clock()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(module, data)
    if trainer.is_global_zero:
        torch.save(
            {
                "seconds": clock.seconds,
                "images": clock.steps * batch * devices,
                "steps": clock.steps,
                "state": module.decoders.state_dict(),
            },
            out,
        )


def launch(devices: int, batch: int, threads: int, args: argparse.Namespace, out: str) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--rank-run",
        json.dumps(
            {"devices": devices, "batch": batch, "epochs": args.epochs, "n": args.n, "threads": threads, "out": out}
        ),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=1800)
    return torch.load(out, weights_only=True)


RUNS = ((1, 2, "1 process, 2 threads"), (1, 1, "1 process, 1 thread"), (2, 1, "2 gloo ranks, 1 thread each"))


def table(args: argparse.Namespace) -> str:
    """Alternating runs (one process on both cores, one process on one core, two ranks, again …), so a load
    that comes and goes on a shared machine weighs on all; ratios are to the first run of the same round."""
    loads, rows, gaps = [os.getloadavg()[0]], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            recs = [
                launch(devices, 2 * args.batch // devices, threads, args, os.path.join(tmp, f"{i}_{j}.pt"))
                for j, (devices, threads, _) in enumerate(RUNS)
            ]
            loads.append(os.getloadavg()[0])
            gaps.append(max((recs[0]["state"][k] - recs[-1]["state"][k]).abs().max().item() for k in recs[0]["state"]))
            rates = [r["images"] / r["seconds"] for r in recs]
            rows += [
                f"| {i + 1} | {label} | {2 * args.batch // devices} | {r['steps']} | {rate:.0f} | "
                f"{rate / rates[0]:.2f} |"
                for (devices, _, label), r, rate in zip(RUNS, recs, rates)
            ]
    return "\n".join(
        [
            f"CPU (2 cores shared with other jobs), load average {min(loads):.1f}–{max(loads):.1f} while measuring; "
            f"{args.n} images × {args.epochs} epochs (timed from epoch 2), global batch {2 * args.batch}, "
            f"decoders {', '.join(MODEL['layers'])} of alexnet_cifar (width 0.5), no normalisation.",
            "",
            "| round | run | per-device batch | steps timed | images/s | ratio |",
            "|---:|---|---:|---:|---:|---:|",
            *rows,
            "",
            f"Largest difference between the final decoder weights of a round's one-process and two-rank runs: "
            f"{max(gaps):.1e} (the same training up to float rounding).",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32, help="per-device batch of the two-rank run")
    p.add_argument("--n", type=int, default=512, help="training images")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2, help="rounds of the three runs, alternated")
    p.add_argument("--markdown", help="write the table between the markers of this markdown file")
    p.add_argument("--rank-run", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rank_run:
        train(**json.loads(args.rank_run))
        return
    text = table(args)
    print(text)
    if args.markdown:
        with open(args.markdown) as f:
            page = f.read()
        page = re.sub(rf"{re.escape(BEGIN)}.*?{re.escape(END)}", lambda _: f"{BEGIN}\n{text}\n{END}", page, flags=re.S)
        with open(args.markdown, "w") as f:
            f.write(page)


if __name__ == "__main__":
    main()
