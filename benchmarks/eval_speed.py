"""How long does evaluating alexnet_cifar's 11 layers take, and what would 10,000 images cost?

Decoders are full-size (UpconvNet width 64, fc_width 1024) but untrained: evaluation time does not depend
on the weights. The sweep runs on ``--images`` CIFAR-10 test images; per-image work (decoding, metrics,
the bootstrap) scales linearly and is extrapolated to 10,000 images, while the D&B normaliser (all image
pairs, quadratic) is timed directly on 10,000 images. ``--lpips-random`` times LPIPS with a random-weight
AlexNet trunk written to a temporary torch cache — timing only; those values are meaningless.

    .venv/bin/python benchmarks/eval_speed.py --images 1000 --device cpu
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10"))
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--target", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="auto")
    p.add_argument("--lpips-random", action="store_true")
    args = p.parse_args()

    from upconv.core import metrics as M
    from upconv.core.runtime import resolve_device
    from upconv.data.source import ImageSource
    from upconv.evaluation.config import EvalConfig
    from upconv.evaluation.report import write_report
    from upconv.evaluation.run import evaluate
    from upconv.training.datamodule import ImageData
    from upconv.training.module import InversionModule

    dev = resolve_device(args.device)
    tmp = tempfile.mkdtemp(prefix="eval_speed-")
    if args.lpips_random:
        import torchvision

        os.environ["TORCH_HOME"] = tmp
        path = M.lpips_backbone_path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    module = InversionModule(encoder="alexnet_cifar", layers="all")  # width 64, fc_width 1024
    state = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(state)
    ckpt = os.path.join(tmp, "decoders.ckpt")
    torch.save(state, ckpt)

    t0 = time.perf_counter()
    data = ImageData(
        images=ImageSource(source="folder", root=args.root, image_size=32, limit_val=args.images), augment=False
    )
    data.setup()
    t_load = time.perf_counter() - t0

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    sync()
    t0 = time.perf_counter()
    result = evaluate(
        EvalConfig(out=None, checkpoints=[ckpt], batch_size=args.batch_size, n_boot=1000, lpips=True, device=str(dev)),
        data=data,
    )
    sync()
    t_eval = time.perf_counter() - t0
    n = result.settings["n_images"]
    t0 = time.perf_counter()
    write_report(result, os.path.join(tmp, "report"))
    t_report = time.perf_counter() - t0

    x_n = torch.rand(n, 3, 32, 32, device=dev)
    sync()
    t0 = time.perf_counter()
    M.mean_pairwise_distance(x_n)
    sync()
    t_pairs_n = time.perf_counter() - t0
    x_t = torch.rand(args.target, 3, 32, 32, device=dev)
    sync()
    t0 = time.perf_counter()
    M.mean_pairwise_distance(x_t)
    sync()
    t_pairs_t = time.perf_counter() - t0
    linear = (t_eval - t_pairs_n) * args.target / n
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; alexnet_cifar, 11 layers, UpconvNet width 64 (untrained)")
    print(f"LPIPS: {result.settings['lpips']}" + (" (random trunk, timing only)" if args.lpips_random else ""))
    print(
        f"measured on {n} images: evaluate {t_eval:.1f} s ({1000 * t_eval / n:.1f} ms/image), "
        f"of which D&B pair distances {t_pairs_n:.2f} s; data decoding {t_load:.1f} s; report files {t_report:.1f} s"
    )
    print(f"D&B pair distances measured on {args.target} images: {t_pairs_t:.1f} s")
    print(
        f"extrapolated to {args.target} images x 11 layers: {linear + t_pairs_t:.0f} s "
        f"({(linear + t_pairs_t) / 60:.1f} min), excluding data decoding"
    )


if __name__ == "__main__":
    main()
