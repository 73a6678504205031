"""Write a privacy run folder: report.md, metrics.csv, metrics.json, one leakage-against-utility plot per
attack and one image grid per attack; every PSNR at or below a no-information floor is marked where it is
shown (⚠ as in the depth report), and the floors are drawn beside the attacks. Written to a hidden sibling folder and
renamed into place only when
complete (as ``upconv.evaluation.report``), so a failure leaves no half-written run folder."""

from __future__ import annotations

import csv
import json
import os
from typing import Any

import torch

from upconv.core.figures import legend_below, row_grid
from upconv.core.files import atomic_folder
from upconv.core.floors import BELOW_CLASS, BELOW_FLOOR
from upconv.core.metrics import SSIM_DEFINITION
from upconv.privacy.bounds import ASSUMPTIONS, bound_table
from upconv.privacy.result import PrivacyResult
from upconv.privacy.resume import POINTS
from upconv.privacy.sweep import NetKey

COLS = (
    ["attack", "decoder", "layer", "defense", "strength", "attacker", "n", "floor_verdict"]
    + [c for k in ("psnr", "ssim", "lpips", "reid", "utility") for c in (k, f"{k}_lo", f"{k}_hi")]
    + ["psnr_bound", "bound_verdict", "inverter_health"]
)
MARKS = {BELOW_FLOOR: "⚠", BELOW_CLASS: "≤class"}  # beside a PSNR at or below a floor, as in the depth report
LEGEND = (
    "⚠ beside a PSNR: at or below the mean-image floor (the inverter recovered nothing of the image; not "
    "evidence that the features are safe). ≤class: at or below the class-mean floor (no more than the class)."
)
CLEAN_FEATURES = (
    "This run attacks the defences with clean attackers only (attackers: [clean]): inverse networks trained on "
    "the undefended victim's features, which never saw the defence, so the leakage under a defence is what such "
    "an attacker recovers, not an upper bound. Adaptive attackers (attackers: [clean, adaptive]) train on the "
    "defended features and recover what the clean ones miss."
)
BOTH_ATTACKERS = (
    "attacker = clean: inverse networks trained on the undefended victim's clean features (blind to the defence); "
    "attacker = adaptive: trained on the defended features (the retrained victim's, or the victim's with the "
    "defence applied), so it learns to invert what the defended system sends: the realistic threat. Only the "
    "query-trained attacks adapt; optimisation inversion and the shadow's attackers are clean only."
)


def _f(v: Any, digits: int) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _psnr(r: dict[str, Any], interval: bool = False) -> str:
    """A row's PSNR, its interval if asked, and the mark of a floor it does not clear."""
    text = _f(r["psnr"], 2) + (f" [{r['psnr_lo']:.2f}, {r['psnr_hi']:.2f}]" if interval else "")
    mark = MARKS.get(r.get("floor_verdict"))
    return f"{text} {mark}" if mark else text


def clean_table(result: PrivacyResult) -> str:
    """Undefended leakage: one line per (attack, decoder), PSNR / SSIM / re-identification per split layer."""
    s = result.settings
    head = ["attack", "inverter"] + [f"{L} PSNR / SSIM / re-id" for L in s["layers"]]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(s["layers"])]
    by = {(r["attack"], r["decoder"], r["layer"]): r for r in result.rows if r["defense"] == "none"}
    for a in s["attacks"]:
        for d in s["decoders"]:
            cells = [
                f"{_psnr(r)} / {_f(r['ssim'], 4)} / {_f(r['reid'], 3)}" for r in (by[(a, d, L)] for L in s["layers"])
            ]
            lines.append(f"| {a} | {d} | " + " | ".join(cells) + " |")
    for r in result.floor_rows:  # the same for every layer: the floor knows nothing of the features
        cell = f"{_f(r['psnr'], 2)} / {_f(r['ssim'], 4)} / {_f(r['reid'], 3)}"
        lines.append(f"| {r['attack']} | — | " + " | ".join([cell] * len(s["layers"])) + " |")
    return "\n".join(lines)


def defense_table(result: PrivacyResult) -> str:
    head = ["attack", "inverter", "layer", "defence", "strength", "attacker"]
    head += ["utility (acc.)", "PSNR dB", "unbiased bound: PSNR ≤", "SSIM", "re-id"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in result.rows:
        if r["attack"] not in result.settings["defense_attacks"]:
            continue
        cells = [
            r["attack"],
            r["decoder"],
            r["layer"],
            r["defense"],
            "—" if r["strength"] is None else f"{r['strength']:g}",
            r.get("attacker") or "clean",
            f"{r['utility']:.3f} [{r['utility_lo']:.3f}, {r['utility_hi']:.3f}]",
            _psnr(r, interval=True),
            _f(r.get("psnr_bound"), 2) + (" (attack above: biased)" if r.get("bound_verdict") else ""),
            _f(r["ssim"], 4),
            _f(r["reid"], 3),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def health_table(result: PrivacyResult) -> str:
    """Each trained inverse network's training health (the guard's verdict and what it did), so that a low
    leakage figure from a network that diverged is never read as a private layer."""
    lines = ["| attack | inverter | layer | health | recoveries | events |", "|---|---|---|---|---:|---|"]
    for attack, records in result.settings.get("inverter_health", {}).items():
        for key, r in records.items():
            kind, layer = NetKey.parse(key)
            events = "; ".join(f"step {e['step']}: {e['kind']}" for e in r["events"]) or "—"
            lines.append(f"| {attack} | {kind} | {layer} | {r['status']} | {r['recoveries']} | {events} |")
    return "\n".join(lines)


def _plot_tradeoff(result: PrivacyResult, attack: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.settings
    fig, axes = plt.subplots(1, len(s["layers"]), figsize=(4.2 * len(s["layers"]), 3.6), squeeze=False)
    for ax, L in zip(axes[0], s["layers"]):
        for d in s["decoders"]:
            clean = [
                r
                for r in result.rows
                if (r["attack"], r["decoder"], r["layer"], r["defense"]) == (attack, d, L, "none")
            ]
            for kind in s["defenses"]:
                for who in s.get("attackers", ["clean"]):
                    rs = clean + [
                        r
                        for r in result.rows
                        if (r["attack"], r["decoder"], r["layer"], r["defense"], r.get("attacker", "clean"))
                        == (attack, d, L, kind, who)
                    ]
                    if len(rs) > len(clean):
                        label = f"{d}: {kind}" + (f" ({who})" if len(s.get("attackers", [])) > 1 else "")
                        ax.plot([r["utility"] for r in rs], [r["psnr"] for r in rs], marker="o", ms=3, label=label)
        for r, style in zip(result.floor_rows, ("--", ":")):
            ax.axhline(r["psnr"], color="grey", ls=style, lw=1, label=r["attack"] if s["layers"][0] == L else None)
        ax.set_title(f"{attack} at {L}", fontsize=10)
        ax.set_xlabel("utility: accuracy of the rest of the network")
        ax.set_ylabel("leakage: PSNR dB")
        ax.grid(alpha=0.3)
    legend_below(fig, list(axes[0]), ncol=max(2, min(4, len(s["layers"]) * 2)))  # below the panels: hides no line
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def _plot_grid(result: PrivacyResult, attack: str, path: str) -> None:
    s = result.settings
    keys = [(attack, d, L) for d in s["decoders"] for L in s["layers"]]
    verdicts = {
        (r["attack"], r["decoder"], r["layer"]): r.get("floor_verdict") for r in result.rows if r["defense"] == "none"
    }
    rows = [result.originals] + [result.grid[k] for k in keys]
    labels = ["original"] + [("⚠ " if verdicts.get(k) == BELOW_FLOOR else "") + f"{k[1]}: {k[2]}" for k in keys]
    row_grid(rows, labels, f"{attack}: originals and reconstructions (no defence)", path)


def _markdown(result: PrivacyResult) -> str:
    s = result.settings
    parts = [
        f"# Privacy risk at split points: {s['encoder']} (weights {s['encoder_weights_hash']})",
        "",
        "## Settings",
        "",
        f"- split layers: {', '.join(s['layers'])}; n = {s['n_eval']} evaluated images",
        f"- victim training images: {s['n_victim']}; attacker images: {s['n_attacker']}",
        f"- inverse networks: {s['inverter_epochs']} epochs, the decoder recipe (AdamW, warm-up, cosine, "
        f"health guard) at lr {s.get('inverter_lr')} "
        f"(UpconvNet width {s['inverter_width']}); "
        f"noise queries per epoch: {s['n_noise']}; optimisation inversion: {s['mv_steps']} steps ({s['mv_optimizer']})",
        f"- seed {s['seed']}; device {s['device']}; torch {s['torch']}; LPIPS {s['lpips']}",
        "- wall time (s): " + (", ".join(f"{k} {v:.1f}" for k, v in s.get("timings_s", {}).items()) or "—"),
        "",
    ]
    parts += [f"> {n}" for n in result.notes] + ([""] if result.notes else [])
    parts += ["## Attacks", ""] + [f"- **{a}**: paper = {p}; upconvnet = {u}" for a, (p, u) in s["roles"].items()]
    parts += ["", "## Leakage without defence", "", clean_table(result), "", LEGEND, ""]
    if s.get("floors_source"):
        parts += [
            f"Floors: what a reconstruction scores that knows nothing of the image (the mean image) or only "
            f"its class (its class's mean image), from {s['floors_source']}.",
            "",
        ]
    parts += ["## Inverse-network health", "", health_table(result), ""] if s.get("inverter_health") else []
    if s["defense_attacks"]:
        adaptive = "adaptive" in s.get("attackers", [])
        parts += ["## Defences", "", BOTH_ATTACKERS if adaptive else CLEAN_FEATURES, "", defense_table(result), ""]
        parts += [f"![leakage against utility: {a}](tradeoff_{a}.png)" for a in s["defense_attacks"]] + [""]
    if result.bounds:
        parts += ["## Fisher-information bound", "", bound_table(result.bounds), "", *bound_notes(result), ""]
    parts += (
        [
            "## Definitions",
            "",
            "- PSNR: per image 10·log10(1/MSE) on [0, 1] images (equal to PSNR on the 0–255 scale), capped at "
            f"{s['psnr_cap_db']:g} dB; LPIPS v0.1 AlexNet.",
            f"- SSIM: {SSIM_DEFINITION}.",
            f"- re-id: share of reconstructions whose nearest neighbour ({s['reid_metric']}) among "
            f"{s['n_candidates']} candidate originals (the true one and {s['n_candidates'] - 1} others drawn at "
            f"random) is the true original; chance = {s['reid_chance']:.3f}.",
            "- utility: accuracy of the rest of the network on the (defended) features, against the labels; "
            "undefended, it is the victim's own accuracy"
            + (f" ({s['victim_accuracy'][0]:.3f}; chance = {s['chance']:.3f})" if "victim_accuracy" in s else "")
            + ".",
            f"- every figure is a per-image mean; the CSV/JSON give 95 % bootstrap intervals "
            f"({s['n_boot']} resamples).",
            "",
            "## Images",
            "",
        ]
        + [f"![{a}](grid_{a}.png)" for a in s["attacks"]]
        + [""]
    )
    return "\n".join(parts)


def bound_notes(result: PrivacyResult) -> list[str]:
    """What the bound assumes, and what an attack above it means."""
    above = [r for r in result.rows if r.get("bound_verdict")]
    notes = [ASSUMPTIONS, ""]
    if above:
        notes.append(
            f"{len(above)} attack rows are above the unbiased bound: those attackers are biased (they use a prior "
            "over images), which the Cramér–Rao bound does not cover; the bound did not fail."
        )
    return notes


def write_privacy_report(result: PrivacyResult, out: str | os.PathLike, overwrite: bool = False) -> str:
    """The report files in ``out``, replaced together; a resumable run's units (``points/``) stay."""
    with atomic_folder(out, overwrite, keep=(POINTS,)) as tmp:
        with open(os.path.join(tmp, "metrics.csv"), "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(COLS)
            for r in [*result.rows, *result.floor_rows]:
                w.writerow(["" if r.get(c) is None else r[c] for c in COLS])
        with open(os.path.join(tmp, "metrics.json"), "w") as f:
            json.dump(
                {
                    "settings": result.settings,
                    "notes": result.notes,
                    "rows": result.rows,
                    "floor_rows": result.floor_rows,
                    "bounds": result.bounds,
                },
                f,
                indent=2,
            )
        if result.victim_state is not None:
            torch.save(result.victim_state, os.path.join(tmp, "victim.pt"))
        for a in result.settings["attacks"]:
            _plot_grid(result, a, os.path.join(tmp, f"grid_{a}.png"))
        for a in result.settings["defense_attacks"]:
            _plot_tradeoff(result, a, os.path.join(tmp, f"tradeoff_{a}.png"))
        with open(os.path.join(tmp, "report.md"), "w") as f:
            f.write(_markdown(result))
    return os.path.abspath(out)
