"""The benchmark's two figures: ``depth.png`` (PSNR, SSIM and probe accuracy against relative depth, one curve
per model with its interval band, the floors and chance marked, a hollow marker on every figure at or below its
floor) and ``grid.png`` (the same test images reconstructed from matched relative depths of every model)."""

from __future__ import annotations

import os
from typing import Any

import torch

from upconv.benchmark.depth import nearest
from upconv.benchmark.unit import PROBE, EncoderPlan
from upconv.core.files import atomic_file, load_torch_file
from upconv.core.units import UnitStore

PANELS = (("upconvnet", "psnr", "PSNR (dB)"), ("upconvnet", "ssim", "SSIM"), (PROBE, "accuracy", "probe accuracy"))


def depth_figure(rows: list[dict[str, Any]], floors: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    models = list(dict.fromkeys(r["model"] for r in rows))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (method, metric, label) in zip(axes, PANELS):
        for i, model in enumerate(models):
            rs = sorted(
                (r for r in rows if r["model"] == model and r["method"] == method and r["metric"] == metric),
                key=lambda r: r["relative_depth"],
            )
            if not rs:
                continue
            c = colours[i % len(colours)]
            x = [r["relative_depth"] for r in rs]
            ax.plot(x, [r["mean"] for r in rs], "-", color=c, lw=1.2, label=model)
            ax.fill_between(x, [r["lo"] for r in rs], [r["hi"] for r in rs], color=c, alpha=0.2, lw=0)
            for r in rs:
                bad = bool(r.get("floor_verdict"))
                ax.plot(r["relative_depth"], r["mean"], "o", ms=5, color=c, mfc="white" if bad else c)
        if method == PROBE:
            chance = [r["floor"] for r in rows if r["method"] == PROBE and r.get("floor") is not None]
            if chance:
                ax.axhline(max(chance), color="black", ls="-.", lw=1, label="chance (best constant answer)")
        for f, style in zip([f for f in floors if f["metric"] == metric], ("--", ":")):
            ax.axhline(f["mean"], color="grey", ls=style, lw=1, label=f["method"])
        ax.set_xlabel("relative depth (share of the forward pass's multiply-adds)", fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.set_xlim(0, 1.02)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    h2, l2 = axes[2].get_legend_handles_labels()
    extra = [(h, lab) for h, lab in zip(h2, l2) if lab not in labels]
    fig.legend(
        handles + [h for h, _ in extra], labels + [lab for _, lab in extra], loc="lower center", ncol=6, fontsize=8
    )
    fig.text(
        0.5, 0.93, "hollow marker: at or below its floor (reconstruction) or at chance (probe)", ha="center", fontsize=8
    )
    fig.tight_layout(rect=(0, 0.1, 1, 0.93))
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def grid_figure(plans: list[EncoderPlan], store: UnitStore, depths: list[float], path: str) -> bool:
    """Originals, then for each target depth a row per model: its UpconvNet reconstructions from the finished
    layer nearest that depth. False (nothing written) when no unit has finished."""
    from upconv.core.figures import row_grid

    rows, labels, originals = [], [], None
    done = {}
    for plan in plans:
        for unit in plan.units:
            folder = store.folder(unit.key)
            if store.record(unit.key) is not None:
                saved = load_torch_file(os.path.join(folder, "grid.pt"), "benchmark grid")
                originals = saved["originals"] if originals is None else originals
                for layer in unit.settings["layers"]:
                    done.setdefault(plan.entry.name, {})[layer] = (
                        plan.layout[layer].depth,
                        saved[f"upconvnet/{layer}"],
                    )
    if originals is None:
        return False
    shown: set[tuple[str, str]] = set()
    for target in depths:
        for model, layers in done.items():
            layer = nearest({n: d for n, (d, _) in layers.items()}, target)
            if (model, layer) in shown:  # two targets nearest the same layer: shown once
                continue
            shown.add((model, layer))
            depth, images = layers[layer]
            rows.append(images)
            labels.append(f"≈{target:g}: {model} {layer} ({depth:.2f})")
    rows.insert(0, originals)
    labels.insert(0, "original")
    with atomic_file(path) as tmp:
        title = "UpconvNet at matched relative depths"
        row_grid([torch.as_tensor(r) for r in rows], labels, title, tmp + ".png")
        os.replace(tmp + ".png", tmp)
    return True
