"""Reproduce He, Zhang & Lee (ACSAC 2019) Table 2 (CIFAR-10, he2019_cifar) with ``upconv privacy`` and print
our figures beside the paper's, for their attack ("paper") and UpconvNet in the same setting.

    python benchmarks/privacy_he2019.py --config configs/privacy/he2019_cifar.yaml            # full scale, GPU
    python benchmarks/privacy_he2019.py --config configs/privacy/he2019_cifar.yaml --reduced  # CPU subset

``--reduced`` shrinks every budget (victim and attacker images, epochs, evaluated images, optimisation
steps) so the run fits in about 20 CPU minutes; its numbers are NOT a reproduction, only a smoke-scale
indication, and the table says so.

The full run can be split into parallel parts that attack one victim (each part writes its own run folder),
then merged into one table:

    python benchmarks/privacy_he2019.py --splits S.pt --train-victim victim.pt          # decode once, train once
    python benchmarks/privacy_he2019.py --splits S.pt --set "encoder={name: he2019_cifar, weights: victim.pt}" \
        --set "attacks=[black_box_noise, query_free]" --out runs/he2019_b                  # one part (any number)
    python benchmarks/privacy_he2019.py --merge runs/he2019_a runs/he2019_b              # one comparison table

``--publish docs/measurements.md`` also writes the comparison table into that page's block (``privacy-he2019``,
or ``privacy-he2019-reduced`` with ``--reduced``; ``--block`` names another).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from publish import load_now, publish, record, require, rounded  # noqa: E402

# PSNR dB (0–255 scale; equal to our data-range-1 PSNR) / SSIM, at the splits of PAPER_LAYERS.
PAPER_LAYERS = ("conv11", "relu22", "relu32")
PAPER = {
    "white_box": [(37.59, 0.9960), (19.47, 0.6940), (13.38, 0.1625)],
    "black_box_train": [(49.88, 0.9993), (19.81, 0.6939), (15.42, 0.3124)],
    "black_box_dist": [(49.02, 0.9992), (19.36, 0.6802), (13.95, 0.2196)],
    "black_box_noise": [(48.59, 0.9996), (12.79, 0.2930), (12.37, 0.0440)],
    "query_free": [(21.16, 0.9104), (12.74, 0.1752), (11.09, 0.0419)],
}
REDUCED = dict(
    n_victim=1000,
    n_attacker=1000,
    n_eval=40,
    victim_epochs=4,
    shadow_epochs=4,
    inverter_epochs=4,
    inverter_width=32,
    n_noise=1000,
    mv_steps=100,
    batch_size=64,
    n_boot=200,
    defenses={"noise": [0.3, 1.0, 3.0], "quantize": [4, 2, 1], "dropout": [0.5, 0.9], "topk": [0.2, 0.05]},
    defense_attacks=["black_box_dist"],
    out="runs/privacy_he2019_reduced",
)


def comparison_figures(metrics: dict, label: str) -> dict:
    """What the comparison table shows (``render``'s figures): the undefended rows of a run's metrics."""
    keep = ("attack", "decoder", "layer", "psnr", "ssim")
    return rounded(
        {
            "label": label,
            "layers": metrics["settings"]["layers"],
            "attacks": metrics["settings"]["attacks"],
            "rows": [{k: r[k] for k in keep} for r in metrics["rows"] if r["defense"] == "none"],
        }
    )


def render(figures: dict) -> str:
    """Our PSNR / SSIM beside the paper's, per setting and split (as printed, written and published)."""
    rows = {(r["attack"], r["decoder"], r["layer"]): r for r in figures["rows"]}
    layers = figures["layers"]
    lines = [
        f"PSNR dB / SSIM, {figures['label']}",
        "",
        "| setting | "
        + " | ".join(f"{L}: paper | {L}: their attack (ours) | {L}: UpconvNet (ours)" for L in layers)
        + " |",
        "|---|" + "---:|" * (3 * len(layers)),
    ]
    for attack, ref in PAPER.items():
        if attack not in figures["attacks"]:
            continue
        cells = []
        paper = dict(zip(PAPER_LAYERS, ref))
        for L in layers:
            cells.append("—" if L not in paper else f"{paper[L][0]:.2f} / {paper[L][1]:.4f}")
            for d in ("paper", "upconvnet"):
                r = rows.get((attack, d, L))
                cells.append("—" if r is None else f"{r['psnr']:.2f} / {r['ssim']:.4f}")
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison(metrics: dict, label: str) -> str:
    """The comparison table of a run's metrics."""
    return render(comparison_figures(metrics, label))


def show(figures: dict, args: argparse.Namespace, device: str, load: float) -> str:
    """Print the table and, with ``--publish``, write it into the page's block; returns the table."""
    table = render(figures)
    print(table)
    if args.publish:
        publish(args.publish, args.block, table, record("privacy_he2019", figures, device, load))
    return table


SPLIT_KEYS = ("data", "root", "n_victim", "n_attacker", "n_eval", "seed", "num_workers")


def load_or_decode(cfg: dict, path: str | None) -> tuple:
    """The victim / attacker / evaluation splits, decoded once and cached in ``path`` (a torch file of uint8
    tensors) so parallel parts neither decode the JPEGs again nor risk drawing different splits."""
    import torch

    from upconv.privacy.splits import load_splits

    key = {k: cfg.get(k) for k in SPLIT_KEYS if k != "num_workers"}  # what decides the images drawn
    if path and os.path.exists(path):
        saved = torch.load(path, weights_only=True)
        if saved["key"] != key:
            raise SystemExit(f"{path} holds splits for {saved['key']}, not {key}; delete it or pass another path")
        return saved["splits"]
    splits = load_splits(
        cfg["data"],
        cfg.get("root"),
        cfg["n_victim"],
        cfg["n_attacker"],
        cfg["n_eval"],
        cfg.get("seed", 0),
        num_workers=cfg.get("num_workers", 0),
    )
    if path:
        tmp = path + ".partial"
        torch.save({"key": key, "splits": splits}, tmp)
        os.replace(tmp, path)
    return splits


def train_victim(cfg: dict, splits: tuple, path: str) -> None:
    """Train the victim exactly as ``run_privacy`` does and save its weights (a state dict)."""
    import time

    import torch

    from upconv.core import metrics as M
    from upconv.core.runtime import resolve_device
    from upconv.data.augment import to_unit
    from upconv.nets.encoder import Encoder
    from upconv.training.recipes import train_classifier

    (xv, yv), _, (xe, ye) = splits
    dev = resolve_device(cfg.get("device", "auto"))
    t0 = time.perf_counter()
    model = train_classifier(
        cfg["encoder"]["name"],
        xv,
        yv,
        num_classes=cfg.get("num_classes", 10),
        epochs=cfg["victim_epochs"],
        seed=cfg.get("seed", 0),
        device=dev,
    )
    seconds = time.perf_counter() - t0
    enc = Encoder.from_model(model, cfg["encoder"]["name"])
    with torch.no_grad():
        logits = torch.cat([enc.model(enc.normalize(to_unit(x))) for x in xe.split(500)])
    acc = M.accuracy(logits, ye).mean().item()
    tmp = path + ".partial"
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    print(
        f"victim {cfg['encoder']['name']}: {len(xv)} images × {cfg['victim_epochs']} epochs in {seconds:.1f} s on "
        f"{dev.type}; accuracy {acc:.4f} on the {len(xe)} evaluated test images; weights → {path}"
    )


def merge(folders: list[str]) -> dict:
    """One metrics dict from parts that attacked the same victim (their rows concatenated)."""
    parts = []
    for d in folders:
        with open(os.path.join(d, "metrics.json")) as f:
            parts.append(json.load(f))
    hashes = {p["settings"]["encoder_weights_hash"] for p in parts}
    if len(hashes) != 1:
        raise SystemExit(
            f"the parts attacked different victims (weights hashes {sorted(hashes)}); merge parts of one run"
        )
    settings = dict(parts[0]["settings"])
    settings["attacks"] = list(dict.fromkeys(a for p in parts for a in p["settings"]["attacks"]))
    rows = [r for p in parts for r in p["rows"]]
    return {"settings": settings, "rows": rows}


def label_for(metrics: dict, reduced: bool) -> str:
    s = metrics["settings"]
    return (
        f"{'REDUCED CPU run, not a reproduction' if reduced else 'full scale'}: victim trained on "
        f"{s['n_victim']} images × {s['victim_epochs']} epochs, attacker {s['n_attacker']} images, "
        f"n = {s['n_eval']} test images, inverse nets {s['inverter_epochs']} epochs, "
        f"optimisation {s['mv_steps']} steps ({s['mv_optimizer']}), device {s['device']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/privacy/he2019_cifar.yaml")
    ap.add_argument("--reduced", action="store_true", help="CPU-sized subset (not a reproduction)")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config entry (VALUE is read as YAML), e.g. --set mv_optimizer=adam",
    )
    ap.add_argument("--out", help="run folder (default: the config's)")
    ap.add_argument("--splits", help="cache file for the decoded splits (created if missing)")
    ap.add_argument("--decode-only", action="store_true", help="only decode the images into --splits")
    ap.add_argument("--train-victim", metavar="PATH", help="only train the victim and save its weights to PATH")
    ap.add_argument("--merge", nargs="+", metavar="RUN", help="only print one comparison table from these run folders")
    ap.add_argument("--publish", metavar="PAGE", help="also write the comparison table into PAGE's marked block")
    ap.add_argument("--block", help="the block's name in PAGE (default privacy-he2019, or privacy-he2019-reduced)")
    args = ap.parse_args()
    args.block = args.block or ("privacy-he2019-reduced" if args.reduced else "privacy-he2019")
    if args.publish:
        require(args.publish, args.block)
    load = load_now()
    if args.merge:
        metrics = merge(args.merge)
        label = label_for(metrics, args.reduced) + f" (parts: {', '.join(args.merge)})"
        show(
            comparison_figures(metrics, label), args, metrics["settings"]["device"], None
        )  # the parts' load is unknown
        return
    with open(args.config) as f:
        cfg = yaml.safe_load(f)
    if args.reduced:
        cfg.update(REDUCED)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE; got '{item}'")
        cfg[key] = yaml.safe_load(value)
    if args.out:
        cfg["out"] = args.out
    splits = load_or_decode(cfg, args.splits)
    if args.decode_only:
        return
    if args.train_victim:
        train_victim(cfg, splits, args.train_victim)
        return
    from upconv.privacy.config import PrivacyConfig
    from upconv.privacy.run import run_privacy

    victim, attacker, evaluation = splits
    run_privacy(PrivacyConfig(**{**cfg, "overwrite": args.overwrite}), evaluation, victim, attacker)
    with open(os.path.join(cfg["out"], "metrics.json")) as f:
        metrics = json.load(f)
    table = show(
        comparison_figures(metrics, label_for(metrics, args.reduced)), args, metrics["settings"]["device"], load
    )
    with open(os.path.join(cfg["out"], "comparison.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
