"""``upconv privacy``: attack the features at each split layer in every setting, with and without defences,
and summarise what leaks (PSNR, SSIM, LPIPS, re-identification) beside the utility that remains.

Stages: load the splits (``upconv.privacy.config.from_config``) → check everything → train the victim, the
inverse networks and the shadow (``upconv.privacy.stages``) → attack clean and defended features
(``upconv.privacy.leakage``) → judge every figure against the no-information floors and the victim's accuracy
against chance (``upconv.privacy.verdicts``) → summarise the settings and write the run folder
(``upconv.privacy.report``).

Every figure is a per-image mean with a 95 % bootstrap interval (``upconv.core.metrics.bootstrap_ci``), exactly as
the depth-evaluation report. PSNR is computed on [0, 1] images with data range 1, which equals PSNR on the
0–255 scale (the ratio peak² / MSE does not depend on the scale), so figures compare directly with papers
that report 0–255 PSNR.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from upconv.core import metrics as M
from upconv.core.runtime import resolve_device
from upconv.core.units import UnitStore
from upconv.data.augment import to_unit
from upconv.nets.encoder import Encoder
from upconv.nets.zoo import build_encoder
from upconv.privacy.config import PrivacyConfig, check_config, uses_attacker_data
from upconv.privacy.points import PointRunner
from upconv.privacy.reid import METRIC
from upconv.privacy.report import write_privacy_report
from upconv.privacy.result import PrivacyResult
from upconv.privacy.resume import Resume, open_store
from upconv.privacy.splits import Data
from upconv.privacy.stages import Clock, Trained, given_victim, run_training
from upconv.privacy.sweep import ATTACKS, ROLES, TRAINED, AttackerKey, by_name
from upconv.privacy.verdicts import judge

__all__ = ["ATTACKS", "PrivacyConfig", "PrivacyResult", "run_privacy"]


def _check_data(
    c: PrivacyConfig, victim: Encoder | None, victim_data: Data | None, attacker_data: Data | None
) -> Trained:
    """Everything that can fail before training, in the order the errors are reported."""
    dev = resolve_device(c.device)
    if uses_attacker_data(c) and attacker_data is None:
        raise ValueError("the chosen attacks need attacker_data (images of the same distribution as the victim's)")
    return Trained(victim=given_victim(c, victim, victim_data), device=dev)


def run_privacy(
    config: PrivacyConfig,
    eval_data: Data,
    victim_data: Data | None = None,
    attacker_data: Data | None = None,
    victim: Encoder | None = None,
    store: UnitStore | None = None,
) -> PrivacyResult:
    """Run the attacks and defences of ``config`` and, with ``config.out``, write the run folder.

    Images are uint8 or [0, 1] float tensors (N, C, H, W) with labels (N,); ``config``'s data fields (data,
    root, n_victim, n_attacker, n_eval, num_workers) are not read here. The victim is ``victim`` (a built
    Encoder), else ``config.encoder`` when it gives weights (and kwargs), else that built-in
    architecture trained on ``victim_data`` (the victim's training set, which black_box_train queries with).
    The evaluated images must be finite (checked before any training). ``attacker_data`` is the attacker's
    own same-distribution data (black_box_dist, white_box's UpconvNet, the query-free shadow). Every defended
    point of ``config.defenses`` (an inference-time defence applied to the victim's features, or the victim
    retrained with a training-time one) is attacked by ``defense_attacks``, by each of ``config.attackers``:
    clean (inverse networks trained on the undefended victim's features, blind to the defence) and adaptive
    (trained on the defended features, so they learn to invert what the defended system sends; the
    query-trained attacks only). The wall time
    of each training stage and of each attack's reconstructions is in ``settings["timings_s"]``; progress bars
    on stderr follow the stages.

    Every trained part and every point is a unit (``upconv.privacy.resume``) of ``store``, by default
    ``<config.out>/points``: a finished one is reused, a changed one refused (redone with ``overwrite``);
    ``result.units`` says which were reused and which computed.
    """
    c = config
    check_config(c, len(eval_data[0]))
    store = store if store is not None else open_store(c.out, c.overwrite)  # fail before any (long) computation
    t = _check_data(c, victim, victim_data, attacker_data)
    # Checked before any training: the untrained architecture has the same layer table and input size.
    probe = t.victim if t.victim is not None else build_encoder(c.encoder.name)
    layers = probe.resolve(list(c.layers))
    x = to_unit(eval_data[0])  # (N, C, H, W)
    probe.check_images(x, finite=True)
    if "black_box_train" in c.attacks and victim_data is None:
        raise ValueError("black_box_train queries with the victim's training images: pass victim_data")
    if any(k in TRAINED for k in c.defenses or {}) and victim_data is None:
        raise ValueError("trained defences retrain the victim: pass victim_data (its training images)")
    resume = Resume(store, Clock(t.device))
    run_training(c, t, layers, (victim_data, attacker_data), resume)
    runner = PointRunner(c, t, (victim_data, attacker_data), resume)
    lp = runner.run(layers, (x, eval_data[1])).lp
    rows = runner.rows
    for r in (r for r in rows if "inverter_health" not in r):  # None where no network was trained (M&V)
        r["inverter_health"] = (
            t.health.get(AttackerKey(r["attack"]), {}).get((r["decoder"], r["layer"]), {}).get("status")
        )
    floors, checks, warnings = judge(
        c, t.victim, (x.to(t.device), eval_data[1].to(t.device)), (attacker_data, victim_data), rows, lp
    )
    settings = {**summary(c, t, layers, (eval_data, victim_data, attacker_data), lp), **checks}
    settings["inverter_health"] = {str(a): by_name(h) for a, h in t.health.items()}
    settings["timings_s"] = {k: round(v, 2) for k, v in resume.timings.items()}
    result = PrivacyResult(
        rows=rows,
        settings=settings,
        notes=warnings + t.notes,
        originals=x[: c.grid_images].cpu(),
        grid=runner.grid,
        victim_state=t.victim_state,
        floor_rows=floors,
        bounds=runner.bounds,
        units=resume.summary(),
    )
    if c.out is not None:
        result.out = write_privacy_report(result, c.out, overwrite=True)  # checked above; the units stay
    return result


def summary(
    c: PrivacyConfig, t: Trained, layers: list[str], data: tuple[Data | None, ...], lp: nn.Module | None
) -> dict[str, Any]:
    """The run's settings as written to metrics.json and the report; ``data``: (evaluated, victim, attacker)."""
    n = [len(d[0]) if d is not None else None for d in data]
    return {
        "encoder": t.victim.name,
        "encoder_weights_hash": t.victim.weights_hash,
        "layers": layers,
        "attacks": list(c.attacks),
        "decoders": list(c.decoders),
        "roles": {a: ROLES[a] for a in c.attacks},
        "defenses": dict(c.defenses or {}),
        "defense_attacks": list(c.defense_attacks) if c.defenses else [],
        "attackers": list(c.attackers),
        "n_eval": n[0],
        "n_victim": n[1],
        "n_attacker": n[2],
        "victim_epochs": c.victim_epochs,
        "shadow_epochs": c.shadow_epochs,
        "inverter_epochs": c.inverter_epochs,
        "inverter_width": c.inverter_width,
        "inverter_lr": c.inverter_lr,
        "n_noise": c.n_noise,
        "mv_steps": c.mv_steps,
        "mv_optimizer": c.mv_optimizer,
        "mv_batch_size": c.mv_batch_size or c.batch_size,
        "mv_tv_weight": "M&V depth schedule" if c.mv_tv_weight is None else c.mv_tv_weight,
        "batch_size": c.batch_size,
        "n_candidates": c.n_candidates,
        "reid_metric": METRIC,
        "reid_chance": 1.0 / c.n_candidates,
        "psnr_cap_db": M.PSNR_CAP_DB,
        "fisher_probes": c.fisher_probes,
        "fisher_prior": c.fisher_prior,
        "n_boot": c.n_boot,
        "seed": c.seed,
        "device": t.device.type,
        "torch": torch.__version__,
        "lpips": "computed (v0.1, AlexNet trunk)" if lp is not None else "skipped",
    }
