"""What keeps a privacy figure from misleading: the no-information floors (``upconv.core.floors``) scored
against the same evaluated images as every attack, each row's verdict against them, and a warning when the
victim's own accuracy cannot be told apart from chance.

A reconstruction at or below the mean image's PSNR says nothing about what the features leak (the inverter
failed, or learned the average); a victim at chance has features unlike a trained network's, so its
leakage figures say little about a deployed one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from upconv.core import metrics as M
from upconv.core.floors import BELOW_FLOOR, FLOOR_METHODS, MEAN_IMAGE, Floors, verdict
from upconv.data.augment import to_unit
from upconv.nets.encoder import Encoder
from upconv.privacy.config import PrivacyConfig
from upconv.privacy.leakage import score
from upconv.privacy.splits import Data


def prior_floors(attacker: Data | None, victim: Data | None, evaluated: Data, n_classes: int) -> Floors:
    """Floors from the images an attacker could average: its own data, else the victim's training images,
    else (neither given) the evaluated images themselves, which makes the floor optimistic and says so."""
    for data, source in (
        (attacker, "the attacker's images"),
        (victim, "the victim's training images"),
        (evaluated, "the evaluated images themselves (no training images were given)"),
    ):
        if data is not None:
            return Floors.from_batches([(to_unit(data[0]), data[1])], f"{source}, {len(data[0])} images", n_classes)
    raise ValueError("no images to compute the no-information floors from")


def floor_rows(c: PrivacyConfig, floors: Floors, eval_data: Data, lp: nn.Module | None) -> list[dict[str, Any]]:
    """One row per floor, scored exactly as an attack's reconstructions of the evaluated images."""
    x, y = eval_data  # (N, C, H, W) in [0, 1], (N,)
    rows = []
    for method in FLOOR_METHODS:
        xh = floors.reconstruct(method, y).to(x.device)  # (N, C, H, W)
        rows.append(
            score(
                c,
                xh,
                x,
                lp,
                {"attack": method, "decoder": None, "layer": None, "defense": "none", "strength": None, "n": len(x)},
            )
        )
    return rows


def victim_accuracy(victim: Encoder, eval_data: Data, c: PrivacyConfig) -> tuple[tuple[float, float, float], int]:
    """The victim's own accuracy (mean, lo, hi) on the evaluated images, and its number of classes."""
    x, y = eval_data
    with torch.no_grad():
        logits = torch.cat([victim.logits(b) for b in x.split(c.batch_size)]).flatten(1)  # (N, K)
    return M.bootstrap_ci(M.accuracy(logits, y), n_boot=c.n_boot, seed=c.seed), logits.shape[1]


def chance_note(accuracy: tuple[float, float, float], n_classes: int) -> str | None:
    """A warning when the accuracy's interval reaches chance (1 / classes); None otherwise."""
    chance = 1.0 / n_classes
    mean, lo, hi = accuracy
    if lo > chance:
        return None
    return (
        f"⚠ the victim is not distinguishable from chance: its accuracy on the evaluated images is "
        f"{mean:.3f} [{lo:.3f}, {hi:.3f}] and chance is 1/{n_classes} = {chance:.3f}. Its features are not "
        f"those of a trained network, so these leakage figures say little about one: train it longer "
        f"(victim_epochs) or on more images (n_victim), or pass trained encoder weights (--encoder.weights)"
    )


def judge(
    c: PrivacyConfig,
    victim: Encoder,
    eval_data: Data,
    train_data: tuple[Data | None, Data | None],
    rows: list[dict[str, Any]],
    lp: nn.Module | None,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """Floor rows, a ``floor_verdict`` on every row, the settings that record them and any warning notes.
    ``train_data``: (attacker, victim) images, either may be None."""
    accuracy, n_classes = victim_accuracy(victim, eval_data, c)
    floors = prior_floors(*train_data, (eval_data[0], eval_data[1]), n_classes)
    floors_ = floor_rows(c, floors, eval_data, lp)
    by_floor = {r["attack"]: r["psnr"] for r in floors_}
    for r in rows:
        r["floor_verdict"] = verdict(r["psnr"], by_floor)
    notes = [n for n in [chance_note(accuracy, n_classes)] if n]
    below = sum(r["floor_verdict"] == BELOW_FLOOR for r in rows)
    if below:
        notes.append(
            f"⚠ {below} of {len(rows)} rows are at or below the mean-image floor "
            f"({by_floor[MEAN_IMAGE]:.2f} dB): their inverter recovered nothing of the image, so their "
            f"figures are not evidence that the features are safe"
        )
    settings = {
        "victim_accuracy": list(accuracy),
        "n_classes": n_classes,
        "chance": 1.0 / n_classes,
        "floors_source": floors.source,
    }
    return floors_, settings, notes
