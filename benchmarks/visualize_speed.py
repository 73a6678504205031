"""Time per image of every ``upconv visualize`` method, batch 1 vs batched, at the settings of docs/visualisations.md.

    python benchmarks/visualize_speed.py --data /path/to/cifar10/test --batch 16 [--weights enc.pt]

Weights only change what the images look like, not the time per step (fooling stops early once
confident, so it is timed for a fixed number of steps). Optimisation methods cost the same every step, so
``--steps N`` times N steps and scales to the documented 256 (reported as such).
"""

from __future__ import annotations

import argparse
import time

import torch

from upconv.data.folders import load_images
from upconv.nets.zoo import build_encoder
from upconv.visualize import (
    FeatureIndex,
    Recipe,
    channel_images,
    class_images,
    deep_dream,
    fgsm,
    fooling_images,
    grad_cam,
    guided_grad_cam,
    pgd,
    prototypes,
    saliency,
)


def per_image(fn, n: int, repeats: int = 1) -> float:
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / (repeats * n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="ImageFolder directory (e.g. CIFAR-10 test)")
    ap.add_argument("--encoder", default="alexnet_cifar")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--index", type=int, default=2000, help="images to index for `similar`")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=256, help="activation-maximisation steps timed (scaled to 256)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    enc = build_encoder(a.encoder, a.weights).to(a.device)
    x, y, _ = load_images([a.data], enc.image_size, max(a.batch, a.index))
    x, y = x.to(a.device), y.to(a.device)
    q, qy = x[: a.batch], y[: a.batch]
    act = Recipe(steps=a.steps)  # Fourier, jitter 2, scale 0.05, rotate 5; the docs' figures run 256 steps
    k = 256 / a.steps
    with torch.no_grad():  # warm-up: FX tracing of every layer set used below
        for layers in (["fc8"], ["conv5", "fc8"], ["conv4"], ["fc7"]):
            enc(q[:1], layers)
    methods = {
        "class (256 steps)": lambda b: class_images(
            enc, list(range(b)) if b <= 10 else [i % 10 for i in range(b)], 1, act
        ),
        "channel conv5 (256 steps)": lambda b: channel_images(enc, "conv5", list(range(b)), act),
        "prototype (256 steps)": lambda b: prototypes(enc, [i % 10 for i in range(b)], act),
        "dream conv4 (3 octaves × 10 steps)": lambda b: deep_dream(enc, q[:b], "conv4"),
        "gradcam conv5": lambda b: grad_cam(enc, q[:b], "conv5"),
        "guided gradcam conv5": lambda b: guided_grad_cam(enc, q[:b], "conv5"),
        "saliency": lambda b: saliency(enc, q[:b]),
        "fgsm ε=8/255": lambda b: fgsm(enc, q[:b], qy[:b], 8 / 255),
        "pgd ε=8/255, 10 steps": lambda b: pgd(enc, q[:b], qy[:b], 8 / 255, 10),
        "fooling (100 steps)": lambda b: fooling_images(enc, [i % 10 for i in range(b)], 0.99999999, 100),
    }
    print(
        f"{enc.name} on {a.device}, {torch.get_num_threads()} threads; ms per image"
        + (f" (256-step rows: {a.steps} steps timed ×{k:g})" if a.steps != 256 else "")
    )
    print(f"{'method':38s} {'batch 1':>10s} {'batch ' + str(a.batch):>10s} {'speed-up':>9s}")
    for name, fn in methods.items():
        s = k if "256 steps" in name else 1.0
        t1 = s * per_image(lambda fn=fn: fn(1), 1)
        tb = s * per_image(lambda fn=fn: fn(a.batch), a.batch)
        print(f"{name:38s} {1e3 * t1:10.1f} {1e3 * tb:10.1f} {t1 / tb:8.1f}×", flush=True)
    data = x[: a.index]
    t = time.perf_counter()
    idx = FeatureIndex(enc, "fc7").add(data, batch_size=256)
    t_index = (time.perf_counter() - t) / len(data)
    idx.typical_distance()
    t1 = per_image(lambda: idx.search(q[:1], 5), 1)
    tb = per_image(lambda: idx.search(q, 5), len(q))
    print(f"{'similar fc7: index build':38s} {'':10s} {1e3 * t_index:10.2f}   (batch 256, {len(data)} images)")
    print(f"{'similar fc7: top-5 query':38s} {1e3 * t1:10.2f} {1e3 * tb:10.2f} {t1 / tb:8.1f}×")
    r = pgd(enc, q, qy, 8 / 255, 10)
    print(
        f"pgd on {len(q)} images: success {r.success_rate:.0%}, mean L∞ {r.linf.mean():.4f}, mean L2 {r.l2.mean():.3f}"
    )


if __name__ == "__main__":
    main()
