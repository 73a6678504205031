"""The offline demo behind ``make demo``: no download, no GPU.

1. trains a narrow alexnet_cifar classifier on crops of the photographs inside scikit-image
   (configs/demo_encoder.yaml);
2. trains UpconvNet decoders for several of its layers in one run (configs/demo.yaml);
3. evaluates UpconvNet and DeconvNet on held-out crops and writes the depth report (DeconvNet twice: fitted
   to the true image and min-max scaled; both replay the image's own max-pool switches, so both are optimistic
   bounds, judged against DeconvNet's own floors).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def end_wandb_run() -> None:
    """Finish the wandb run a stage opened: a WandbLogger created while one is active would reuse it and log
    both stages into one run."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


QUICK = [  # a seconds-long run for tests
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--data.images.embedded_per_class=20",
    "--trainer.enable_progress_bar=false",
]


def _fit(config: str, *args: str) -> None:
    """One training stage (``train.py fit``), its own wandb run."""
    from upconv.training.cli import main as train_main

    train_main(["fit", "--config", os.path.join(CONFIGS, config), *args])
    end_wandb_run()


def run(out: str = "runs/demo", checkpoints: str = "checkpoints/demo", quick: bool = False) -> str:
    """Run the three steps; returns the report folder. ``quick`` shrinks everything for tests."""
    from upconv.data.source import ImageSource
    from upconv.evaluation.config import EvalConfig
    from upconv.evaluation.run import evaluate

    os.makedirs(checkpoints, exist_ok=True)
    for old in glob.glob(os.path.join(checkpoints, "*.ckpt")) + glob.glob(os.path.join(checkpoints, "*.pt")):
        os.remove(old)  # a stale file must not be taken for this run's
    encoder_pt = os.path.join(checkpoints, "encoder.pt")
    shrink = QUICK if quick else []
    # Overwrite rather than version: a file left by an earlier (killed) run would otherwise make ModelCheckpoint
    # write decoders-v1.ckpt, and docs/evaluation.md's evaluate command would read the stale decoders.ckpt.
    common = ["--trainer.callbacks.init_args.enable_version_counter=false", *shrink]
    out = out.rstrip("/")
    runs_dir, name = os.path.dirname(out) or ".", os.path.basename(out)
    t0 = time.time()
    where = [f"--trainer.callbacks.init_args.dirpath={checkpoints}", f"--runs_dir={runs_dir}", *common]
    _fit("demo_encoder.yaml", f"--model.init_args.export={encoder_pt}", f"--run_name={name}_encoder", *where)
    t1 = time.time()
    _fit("demo.yaml", f"--model.init_args.encoder.weights={encoder_pt}", f"--run_name={name}", *where)
    t2 = time.time()
    decoders = os.path.join(checkpoints, "decoders.ckpt")
    # The held-out 10 % of the same crops the decoders were trained beside (same data seed as the configs).
    held_out = ImageSource(source="embedded", embedded_per_class=20 if quick else 250, seed=0)
    evaluate(
        EvalConfig(
            checkpoints=[decoders],
            out=os.path.join(out, "report"),
            methods=["upconvnet", "deconvnet", "deconvnet+minmax"],
            split="val",
            seed=0,
            n_boot=200 if quick else 1000,
            overwrite=True,
        ),
        data=held_out,
    )
    t3 = time.time()
    report = os.path.join(out, "report", "report.md")
    print(f"encoder {t1 - t0:.0f} s, decoders {t2 - t1:.0f} s, evaluation {t3 - t2:.0f} s")
    print(f"report: {report}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="run folder for logs and the report")
    parser.add_argument("--checkpoints", default="checkpoints/demo", help="where the weights land")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    args = parser.parse_args()
    run(args.out, args.checkpoints, args.quick)


if __name__ == "__main__":
    main()
