"""Decoder-training throughput (images/s): InversionModule under Lightning vs plain-PyTorch loops, for one
layer and for all alexnet_cifar layers in one run, plus the 11-separate-runs equivalent.

Three measurements of the same training step (uint8 images resident on the device, random crop + flip on
the device, the frozen encoder forward under no_grad, every decoder's forward/backward, one fused AdamW step
with one parameter group per decoder, the one-cycle schedule):

- ``plain``: the minimal hand-written loop, no safety;
- ``plain+guard``: the same loop plus what the Lightning module adds on purpose — per-decoder gradient
  clipping and the health guard's on-device bookkeeping with one read-back every 50 steps — so that
  ``lightning / plain+guard`` is the framework's own overhead;
- ``lightning``: ``InversionModule`` under a ``Trainer`` with a CSV logger (every 50 steps), as in a real
  run, checkpointing off (its cost is measured separately by ``--checkpoint``).

Only the first and the last timed step synchronise with the device. Throughput does not depend on the
weights, so the encoder is random unless --encoder-weights is given.

    python benchmarks/train_throughput.py --data ../shared/data/cifar10 --steps 10 --batch 128
    python benchmarks/train_throughput.py --profile runs/profile     # where a Lightning step spends its time
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import lightning.pytorch as L
import torch
import torch.nn.functional as F

from upconv.data.augment import random_crop_flip
from upconv.data.source import ImageSource
from upconv.training.datamodule import ImageData
from upconv.training.health import HealthGuard
from upconv.training.module import InversionModule
from upconv.training.recipes import clip_grad_norms


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(L.Callback):
    """Wall time of steps ``warmup`` … ``warmup + steps - 1``, synchronising only at the two ends."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps, self.start, self.end, self.images = warmup, steps, None, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            _sync(module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > self.warmup:
            self.images += len(batch[0])
        if trainer.global_step == self.warmup + self.steps:
            _sync(module.device)
            self.end = time.perf_counter()


def _module(layers: list[str], args: argparse.Namespace) -> InversionModule:
    torch.manual_seed(0)
    return InversionModule(
        encoder={"name": "alexnet_cifar", "weights": args.encoder_weights},
        layers=layers,
        width=args.width,
        channels_last=args.channels_last,
        compile=args.compile,
    )


def _trainer(args: argparse.Namespace, callbacks: list, logdir: str, **kw) -> L.Trainer:
    from lightning.pytorch.loggers import CSVLogger

    return L.Trainer(
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        logger=CSVLogger(logdir),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        precision=args.precision,
        accelerator=args.device,
        devices=1,
        **kw,
    )


def lightning_throughput(data: ImageData, layers: list[str], args: argparse.Namespace) -> float:
    timer = StepTimer(args.warmup, args.steps)
    with tempfile.TemporaryDirectory() as logdir:
        _trainer(args, [timer], logdir).fit(_module(layers, args), data)
    return timer.images / (timer.end - timer.start)


def plain_throughput(data: ImageData, layers: list[str], args: argparse.Namespace, guard: bool) -> float:
    """The same work as a hand-written loop (``guard``: with per-decoder clipping and the health guard)."""
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    module = _module(layers, args).to(device)
    encoder, decoders = module.encoder, module.decoders
    groups = [{"params": list(decoders[n].parameters())} for n in layers]
    opt = torch.optim.AdamW(groups, lr=1e-3, weight_decay=1e-4, fused=True)
    total = args.warmup + args.steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[1e-3] * len(groups), pct_start=0.1, total_steps=total)
    health = HealthGuard(decoders) if guard else None
    if health is not None:
        health.bind(opt, sched)
    images = data.source.tensors("train")[0].to(device)  # (N, 3, 32, 32) uint8, resident on the device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
    n, done, start = len(images), 0, 0.0
    for step in range(total):
        if step == args.warmup:
            _sync(device)
            start = time.perf_counter()
        idx = torch.randint(0, n, (args.batch,), device=device)
        x = random_crop_flip(images[idx].float().div_(255), pad=4)  # (B, 3, 32, 32)
        with autocast:
            with torch.no_grad():
                feats = encoder(x, layers)
            per_layer = torch.stack([F.mse_loss(decoders[l](feats[l]).float(), x) for l in layers])  # (L,)
        opt.zero_grad(set_to_none=True)
        per_layer.sum().backward()
        if health is not None:
            health.observe(per_layer, layers)
            clip_grad_norms(decoders, 1.0)
        opt.step()
        sched.step()
        if health is not None and (step + 1) % 50 == 0:
            health.check(step + 1)
        done += args.batch if step >= args.warmup else 0
    _sync(device)
    return done / (time.perf_counter() - start)


def checkpoint_cost(data: ImageData, layers: list[str], args: argparse.Namespace) -> dict[str, float]:
    """Seconds and bytes of one weights-only save (decoders.ckpt) and one full-state save (last.ckpt)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(args, [], tmp)
        trainer.fit(_module(layers, args), data)
        for name, weights_only in (("weights_only", True), ("full_state", False)):
            path = os.path.join(tmp, f"{name}.ckpt")
            t0 = time.perf_counter()
            trainer.save_checkpoint(path, weights_only=weights_only)
            out[f"{name}_s"] = time.perf_counter() - t0
            out[f"{name}_MB"] = os.path.getsize(path) / 2**20
    return out


def profile(data: ImageData, layers: list[str], args: argparse.Namespace) -> None:
    """torch.profiler over the timed Lightning steps: the top operations by self CPU time, and a trace."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    os.makedirs(args.profile, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "gpu" else [])

    class Window(L.Callback):
        def __init__(self) -> None:
            self.prof = torch_profile(activities=activities)

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if trainer.global_step == args.warmup:
                self.prof.__enter__()

        def on_train_end(self, trainer, module) -> None:
            self.prof.__exit__(None, None, None)

    window = Window()
    with tempfile.TemporaryDirectory() as logdir:
        _trainer(args, [window], logdir).fit(_module(layers, args), data)
    table = window.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    print(table)
    with open(os.path.join(args.profile, "lightning_steps.txt"), "w") as f:
        f.write(table)
    window.prof.export_chrome_trace(os.path.join(args.profile, "lightning_steps.json"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="ImageFolder root (with train/ and test/); embedded photos if absent")
    p.add_argument("--limit", type=int, default=5000, help="training images held in memory")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--layer", default="conv5", help="the single layer of the one-layer measurement")
    p.add_argument("--device", default="gpu" if torch.cuda.is_available() else "cpu", choices=["cpu", "gpu"])
    p.add_argument("--precision", default=None, help="e.g. bf16-mixed on a GPU")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the decoders (Lightning runs only)")
    p.add_argument("--encoder-weights", default=None)
    p.add_argument("--skip-separate", action="store_true", help="do not time each layer alone")
    p.add_argument("--checkpoint", action="store_true", help="also time one weights-only and one full-state save")
    p.add_argument("--profile", default=None, help="profile the all-layer Lightning steps into this folder, then stop")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    args.precision = args.precision or ("bf16-mixed" if args.device == "gpu" else "32-true")

    source = dict(source="folder", root=args.data) if args.data else dict(source="embedded")
    data = ImageData(
        images=ImageSource(**source, limit_train=args.limit, limit_val=args.batch, num_workers=2), batch_size=args.batch
    )
    data.setup()
    all_layers = InversionModule(encoder="alexnet_cifar", layers="all", width=8, fc_width=8).layers
    if args.profile:
        profile(data, all_layers, args)
        return
    res: dict[str, float] = {}
    for tag, layers in (("1", [args.layer]), ("all", all_layers)):
        res[f"plain_{tag}"] = plain_throughput(data, layers, args, guard=False)
        res[f"plain+guard_{tag}"] = plain_throughput(data, layers, args, guard=True)
        res[f"lightning_{tag}"] = lightning_throughput(data, layers, args)
    if not args.skip_separate:
        per_layer = {l: lightning_throughput(data, [l], args) for l in all_layers}
        res.update({f"lightning_alone_{l}": v for l, v in per_layer.items()})
        # 11 separate runs over the same images take the sum of their per-image times.
        res["separate_runs_all"] = 1.0 / sum(1.0 / v for v in per_layer.values())
        res["speedup_one_run_vs_separate"] = res["lightning_all"] / res["separate_runs_all"]
    extra = checkpoint_cost(data, all_layers, args) if args.checkpoint else {}
    dev = torch.cuda.get_device_name() if args.device == "gpu" else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"device: {dev}; batch {args.batch}; decoder width {args.width}; precision {args.precision}; "
        f"{args.steps} timed steps after {args.warmup} warm-up"
    )
    for k, v in res.items():
        print(f"{k:32s} {v:10.2f}" + ("" if k.startswith("speedup") else " images/s"))
    for tag in ("1", "all"):
        print(
            f"{'one layer' if tag == '1' else 'all layers'}: "
            f"lightning / plain {res[f'lightning_{tag}'] / res[f'plain_{tag}']:.3f}, "
            f"lightning / plain+guard {res[f'lightning_{tag}'] / res[f'plain+guard_{tag}']:.3f}, "
            f"plain+guard / plain {res[f'plain+guard_{tag}'] / res[f'plain_{tag}']:.3f}"
        )
    for k, v in extra.items():
        print(f"checkpoint {k:20s} {v:10.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev, "args": vars(args), "images_per_s": res, "checkpoint": extra}, f, indent=1)


if __name__ == "__main__":
    main()
