"""Decoder-training throughput (images/s): InversionModule under Lightning vs a minimal plain-PyTorch loop,
for one layer and for all alexnet_cifar layers in one run, plus the 11-separate-runs equivalent.

Both paths see the same work per step: uint8 images already in memory (on the device), random crop + flip
on the device, the frozen encoder forward under no_grad, every decoder's forward/backward, one AdamW step.
Throughput does not depend on the weights, so the encoder is random unless --encoder-weights is given.

    python benchmarks/train_throughput.py --data ../shared/data/cifar10 --steps 10 --batch 128
"""

from __future__ import annotations

import argparse
import json
import time

import lightning.pytorch as L
import torch
import torch.nn.functional as F

from upconv.data import ImageData, random_crop_flip
from upconv.module import InversionModule


class StepTimer(L.Callback):
    """Wall time of the last ``steps`` training steps (the first ``warmup`` are excluded)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.images = warmup, None, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx == self.warmup:
            self._sync(module)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx >= self.warmup:
            self.images += len(batch[0])
            self._sync(module)
            self.end = time.perf_counter()

    @staticmethod
    def _sync(module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize()


def lightning_throughput(data: ImageData, layers: list[str], args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    module = InversionModule(encoder="alexnet_cifar", encoder_weights=args.encoder_weights, layers=layers,
                             width=args.width, channels_last=args.channels_last)
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(max_steps=args.warmup + args.steps, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer], precision=args.precision, accelerator=args.device, devices=1)
    trainer.fit(module, data)
    return timer.images / (timer.end - timer.start)


def plain_throughput(data: ImageData, layers: list[str], args: argparse.Namespace) -> float:
    """The same work as a hand-written loop: the baseline a user would write without Lightning."""
    torch.manual_seed(0)
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    module = InversionModule(encoder="alexnet_cifar", encoder_weights=args.encoder_weights, layers=layers,
                             width=args.width, channels_last=args.channels_last).to(device)
    encoder, decoders = module.encoder, module.decoders
    opt = torch.optim.AdamW(decoders.parameters(), lr=1e-3, weight_decay=1e-4)
    images = data._train[0].to(device)  # (N, 3, 32, 32) uint8, resident on the device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
    n, done, start = len(images), 0, 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        idx = torch.randint(0, n, (args.batch,), device=device)
        x = random_crop_flip(images[idx].float().div_(255), pad=4)  # (B, 3, 32, 32)
        with autocast:
            with torch.no_grad():
                feats = encoder(x, layers)
            loss = sum(F.mse_loss(decoders[l](feats[l]).float(), x) for l in layers)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += args.batch if step >= args.warmup else 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="ImageFolder root (with train/ and test/); embedded photos if absent")
    p.add_argument("--limit", type=int, default=5000, help="training images held in memory")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--layer", default="conv5", help="the single layer of the one-layer measurement")
    p.add_argument("--device", default="gpu" if torch.cuda.is_available() else "cpu", choices=["cpu", "gpu"])
    p.add_argument("--precision", default=None, help="e.g. bf16-mixed on a GPU")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--encoder-weights", default=None)
    p.add_argument("--skip-separate", action="store_true", help="do not time each layer alone")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    args.precision = args.precision or ("bf16-mixed" if args.device == "gpu" else "32-true")

    source = dict(source="folder", root=args.data) if args.data else dict(source="embedded")
    data = ImageData(**source, batch_size=args.batch, limit_train=args.limit, limit_val=args.batch, num_workers=2)
    data.setup()
    all_layers = InversionModule(encoder="alexnet_cifar", layers="all", width=8, fc_width=8).layers
    res: dict[str, float] = {}
    res["plain_1"] = plain_throughput(data, [args.layer], args)
    res["lightning_1"] = lightning_throughput(data, [args.layer], args)
    res["plain_all"] = plain_throughput(data, all_layers, args)
    res["lightning_all"] = lightning_throughput(data, all_layers, args)
    if not args.skip_separate:
        per_layer = {l: lightning_throughput(data, [l], args) for l in all_layers}
        res.update({f"lightning_alone_{l}": v for l, v in per_layer.items()})
        # 11 separate runs over the same images take the sum of their per-image times.
        res["separate_runs_all"] = 1.0 / sum(1.0 / v for v in per_layer.values())
        res["speedup_one_run_vs_separate"] = res["lightning_all"] / res["separate_runs_all"]
    dev = torch.cuda.get_device_name() if args.device == "gpu" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {dev}; batch {args.batch}; decoder width {args.width}; precision {args.precision}; "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    for k, v in res.items():
        print(f"{k:32s} {v:10.1f}" + ("" if k.startswith("speedup") else " images/s"))
    print(f"lightning / plain: one layer {res['lightning_1'] / res['plain_1']:.2f}, "
          f"all layers {res['lightning_all'] / res['plain_all']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev, "args": vars(args), "images_per_s": res}, f, indent=1)


if __name__ == "__main__":
    main()
