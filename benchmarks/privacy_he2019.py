"""Reproduce He, Zhang & Lee (ACSAC 2019) Table 2 (CIFAR-10, he2019_cifar) with ``upconv privacy`` and print
our figures beside the paper's, for their attack ("paper") and UpconvNet in the same setting.

    python benchmarks/privacy_he2019.py --config configs/privacy/he2019_cifar.yaml            # full scale, GPU
    python benchmarks/privacy_he2019.py --config configs/privacy/he2019_cifar.yaml --reduced  # CPU subset

``--reduced`` shrinks every budget (victim and attacker images, epochs, evaluated images, optimisation
steps) so the run fits in about 20 CPU minutes; its numbers are NOT a reproduction, only a smoke-scale
indication, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# PSNR dB (0–255 scale; equal to our data-range-1 PSNR) / SSIM, splits conv11, ReLU22, ReLU32.
PAPER = {
    "white_box": [(37.59, 0.9960), (19.47, 0.6940), (13.38, 0.1625)],
    "black_box_train": [(49.88, 0.9993), (19.81, 0.6939), (15.42, 0.3124)],
    "black_box_dist": [(49.02, 0.9992), (19.36, 0.6802), (13.95, 0.2196)],
    "black_box_noise": [(48.59, 0.9996), (12.79, 0.2930), (12.37, 0.0440)],
    "query_free": [(21.16, 0.9104), (12.74, 0.1752), (11.09, 0.0419)],
}
REDUCED = dict(n_victim=1000, n_attacker=1000, n_eval=40, victim_epochs=4, shadow_epochs=4, inverter_epochs=4,
               inverter_width=32, n_noise=1000, mv_steps=100, batch_size=64, n_boot=200,
               defenses={"noise": [0.3, 1.0, 3.0], "quantize": [4, 2, 1], "dropout": [0.5, 0.9], "topk": [0.2, 0.05]},
               defense_attacks=["black_box_dist"], out="runs/privacy_he2019_reduced")


def comparison(metrics: dict, label: str) -> str:
    rows = {(r["attack"], r["decoder"], r["layer"]): r for r in metrics["rows"] if r["defense"] == "none"}
    layers = metrics["settings"]["layers"]
    lines = [f"PSNR dB / SSIM, {label}", "",
             "| setting | " + " | ".join(f"{L}: paper | {L}: their attack (ours) | {L}: UpconvNet (ours)" for L in layers) + " |",
             "|---|" + "---:|" * (3 * len(layers))]
    for attack, ref in PAPER.items():
        if attack not in metrics["settings"]["attacks"]:
            continue
        cells = []
        for (p, s), L in zip(ref, layers):
            cells.append(f"{p:.2f} / {s:.4f}")
            for d in ("paper", "upconvnet"):
                r = rows.get((attack, d, L))
                cells.append("—" if r is None else f"{r['psnr']:.2f} / {r['ssim']:.4f}")
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/privacy/he2019_cifar.yaml")
    ap.add_argument("--reduced", action="store_true", help="CPU-sized subset (not a reproduction)")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = yaml.safe_load(f)
    if args.reduced:
        cfg.update(REDUCED)
    cfg["overwrite"] = args.overwrite
    from upconv.privacy.cli import privacy

    privacy(**cfg)
    with open(os.path.join(cfg["out"], "metrics.json")) as f:
        metrics = json.load(f)
    s = metrics["settings"]
    label = (f"{'REDUCED CPU run, not a reproduction' if args.reduced else 'full scale'}: victim trained on "
             f"{s['n_victim']} images × {s['victim_epochs']} epochs, attacker {s['n_attacker']} images, "
             f"n = {s['n_eval']} test images, inverse nets {s['inverter_epochs']} epochs, "
             f"optimisation {s['mv_steps']} steps, device {s['device']}")
    table = comparison(metrics, label)
    with open(os.path.join(cfg["out"], "comparison.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
