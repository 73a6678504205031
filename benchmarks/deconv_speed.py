"""Time DeconvNet projections: K channels × B images of one layer in one batched call, against the same
projections one channel at a time through autograd (every ReLU's backward replaced by a ReLU of the
incoming signal, on a private copy of the model).

    python benchmarks/deconv_speed.py --layer conv5 --images 32 --channels 64 [--device cuda] [--weights W]
    python benchmarks/deconv_speed.py --repeats 3 --publish docs/measurements.md   # also into the block "deconv-speed"
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from publish import publish, record, require, rounded  # noqa: E402

from upconv import build_encoder  # noqa: E402
from upconv.methods.deconvnet import DeconvNet  # noqa: E402


class _DeconvReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        return g.clamp(min=0)  # DeconvNet rectification of the signal coming down


class _SwappedReLU(nn.Module):
    def forward(self, x):
        return _DeconvReLU.apply(x)


def truncated_copy(model: nn.Sequential, layer: str) -> nn.Sequential:
    """A private copy of the stages up to ``layer`` with every ReLU swapped."""
    names = [n for n, _ in model.named_children()]
    trunk = copy.deepcopy(nn.Sequential(*list(model.children())[: names.index(layer) + 1]))
    for mod in list(trunk.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(mod, child_name, _SwappedReLU())
    return trunk


def per_channel_autograd(trunk: nn.Module, x: torch.Tensor, channels: list[int], reuse_forward: bool) -> torch.Tensor:
    outs = []
    x = x.detach().requires_grad_()
    act = trunk(x) if reuse_forward else None
    for c in channels:
        a = act if reuse_forward else trunk(x)  # (B, C, H, W)
        sel = torch.zeros_like(a)
        sel[:, c] = a[:, c].detach()
        (g,) = torch.autograd.grad(a, x, sel, retain_graph=reuse_forward)
        outs.append(g)
    return torch.stack(outs, 1)  # (B, K, C, H, W)


def timed(fn, device: str, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats + 1):  # the first run warms up allocators and kernels
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:]), out


def render(figures: dict) -> str:
    """Seconds per method and the ratio to the first (the batched projection), as printed and as published."""
    first = figures["rows"][0]["seconds"]
    lines = ["| method | seconds | × batched |", "|---|---:|---:|"]
    lines += [f"| {r['method']} | {r['seconds']:.2f} | {r['seconds'] / first:.1f} |" for r in figures["rows"]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="alexnet_cifar")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--layer", default="conv5")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--publish", metavar="PAGE", help="also write the table into PAGE's marked block")
    ap.add_argument("--block", default="deconv-speed", help="the block's name in PAGE")
    args = ap.parse_args()
    if args.publish:
        require(args.publish, args.block)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = os.getloadavg()[0]  # other processes on a shared machine skew CPU timings
    enc = build_encoder(args.encoder, args.weights).to(args.device)
    images = torch.rand(args.images, 3, *enc.image_size, device=args.device)
    channels = list(range(args.channels))
    net = DeconvNet(enc)
    trunk = truncated_copy(enc.model, enc.layer(args.layer).node)
    x = enc.normalize(images)

    with torch.no_grad():
        t_batched, batched = timed(
            lambda: net.project(images, args.layer, channels=channels, chunk=args.chunk), args.device, args.repeats
        )
    t_loop, loop = timed(lambda: per_channel_autograd(trunk, x, channels, False), args.device, args.repeats)
    t_reuse, _ = timed(lambda: per_channel_autograd(trunk, x, channels, True), args.device, args.repeats)
    loop = loop * enc.std.unsqueeze(0)  # DeconvNet returns pixel units (× std)
    err = ((batched - loop).abs().max() / loop.abs().max()).item()

    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{enc.name} {args.layer}, weights {'random' if not args.weights else args.weights}, "
        f"{args.channels} channels × {args.images} images, {dev}, torch {torch.__version__}, "
        f"median of {args.repeats}, load average before {load:.1f}"
    )
    print(f"max |batched - autograd| / max |autograd| = {err:.1e}\n")
    figures = rounded(
        {
            "rows": [
                {"method": "`DeconvNet.project`, batched (one call)", "seconds": t_batched},
                {"method": "autograd, forward + backward per channel", "seconds": t_loop},
                {"method": "autograd, one forward, then a backward per channel", "seconds": t_reuse},
            ]
        }
    )
    print(render(figures))
    if args.publish:
        publish(args.publish, args.block, render(figures), record("deconv_speed", figures, dev, round(load, 1)))


if __name__ == "__main__":
    main()
