"""``upconv privacy``: attack the features at each split layer in every setting, with and without defences,
and summarise what leaks (PSNR, SSIM, LPIPS, re-identification) beside the utility that remains.

Every figure is a per-image mean with a 95 % bootstrap interval (``upconv.core.metrics.bootstrap_ci``), exactly as
the depth-evaluation report. PSNR is computed on [0, 1] images with data range 1, which equals PSNR on the
0–255 scale (the ratio peak² / MSE does not depend on the scale), so figures compare directly with papers
that report 0–255 PSNR.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from upconv.core import metrics as M
from upconv.nets.encoder import Encoder
from upconv.nets.zoo import build_encoder
from upconv.core.runtime import progress, resolve_device
from upconv.methods.mahendran_vedaldi import MV_STEPS, MVSettings, invert
from upconv.core.files import check_out
from upconv.data.augment import to_unit
from upconv.privacy import attacks as A
from upconv.training.recipes import train_classifier
from upconv.privacy.defenses import check_strength, defend, tail
from upconv.privacy.reid import METRIC, check_candidates, reid_hits

ATTACKS = ("white_box", "black_box_train", "black_box_dist", "black_box_noise", "query_free")
LEAKAGE = ("psnr", "ssim", "lpips", "reid")
# What "paper" and "upconvnet" mean in each setting (shown in the report).
ROLES = {
    "white_box": ("optimisation inversion (rMLE / M&V) on the victim's weights",
                  "UpconvNet trained through the victim on the attacker's same-distribution data"),
    "black_box_train": ("He et al.'s shallow inverse net, queries = victim's training images",
                        "UpconvNet, queries = victim's training images"),
    "black_box_dist": ("He et al.'s shallow inverse net, queries = other images of the same distribution",
                       "UpconvNet, same queries"),
    "black_box_noise": ("He et al.'s shallow inverse net, queries = uniform-noise images", "UpconvNet, same queries"),
    "query_free": ("optimisation inversion (rMLE / M&V) on a shadow encoder trained on the attacker's data",
                   "UpconvNet trained on the shadow encoder"),
}


@dataclass
class PrivacyResult:
    rows: list[dict[str, Any]]
    settings: dict[str, Any]
    notes: list[str]
    originals: Tensor  # (N_grid, C, H, W)
    grid: dict[tuple[str, str, str], Tensor] = field(default_factory=dict)  # (attack, decoder, layer) -> images
    out: Optional[str] = None
    victim_state: Optional[dict[str, Tensor]] = None  # weights of a victim trained by the run (saved as victim.pt)


def _check(attacks: Sequence[str], decoders: Sequence[str], defenses: dict[str, list[float]],
           defense_attacks: Sequence[str], n_candidates: int, n_eval: int) -> None:
    for a in [*attacks, *defense_attacks]:
        if a not in ATTACKS:
            raise ValueError(f"unknown attack '{a}'; choose from: {', '.join(ATTACKS)}")
    for d in decoders:
        if d not in A.DECODERS:
            raise ValueError(f"unknown decoder '{d}'; choose from: {', '.join(A.DECODERS)}")
    for kind, strengths in defenses.items():
        for s in strengths:
            check_strength(kind, s)
    check_candidates(n_candidates, n_eval)


def run_privacy(
    encoder: str | Encoder,
    layers: Sequence[str],
    eval_data: tuple[Tensor, Tensor],
    *,
    victim_data: Optional[tuple[Tensor, Tensor]] = None,
    attacker_data: Optional[tuple[Tensor, Tensor]] = None,
    encoder_weights: Optional[str] = None,
    encoder_kwargs: Optional[dict[str, Any]] = None,
    attacks: Sequence[str] = ATTACKS,
    decoders: Sequence[str] = A.DECODERS,
    defenses: Optional[dict[str, list[float]]] = None,
    defense_attacks: Sequence[str] = ("black_box_dist",),
    num_classes: int = 10,
    victim_epochs: int = 30,
    shadow_epochs: int = 30,
    inverter_epochs: int = 20,
    inverter_width: int = 64,
    inverter_lr: float | dict[str, float] = 1e-3,
    n_noise: int = 50000,
    mv_steps: int = MV_STEPS,
    mv_optimizer: str = "sgd",
    mv_batch_size: Optional[int] = None,
    mv_tv_weight: Optional[float] = None,
    n_candidates: int = 10,
    batch_size: int = 128,
    lpips: bool = True,
    n_boot: int = 1000,
    grid_images: int = 8,
    seed: int = 0,
    device: str = "auto",
    out: Optional[str] = None,
    overwrite: bool = False,
) -> PrivacyResult:
    """Run the attacks and defences and, with ``out``, write the run folder (atomically).

    Images are uint8 or [0, 1] float tensors (N, C, H, W) with labels (N,). ``encoder`` is a built Encoder, or
    a name: with ``encoder_weights`` (and ``encoder_kwargs``) that is the victim, otherwise a built-in
    architecture is trained on ``victim_data`` (the victim's training set, which black_box_train queries with).
    The evaluated images must be finite (checked before any training). ``attacker_data`` is the
    attacker's own same-distribution data (black_box_dist, white_box's UpconvNet, the query-free shadow).
    ``defenses`` maps a defence to its strength sweep; it is applied to the victim's features for the
    attacks in ``defense_attacks`` (inverters trained on clean features: the attacker does not adapt).
    ``mv_batch_size`` images are inverted together by optimisation (default ``batch_size``); the wall time of
    each training stage and of each attack's reconstructions is recorded in ``settings["timings_s"]``, and
    progress bars on stderr follow the training stages and the attacks. ``mv_steps`` defaults to M&V's 2100.
    ``mv_tv_weight`` replaces M&V's depth schedule of the total-variation weight (``inversion.default_tv_weight``).
    """
    defenses = dict(defenses or {})
    n_eval = len(eval_data[0])
    _check(attacks, decoders, defenses, defense_attacks if defenses else (), n_candidates, n_eval)
    if mv_batch_size is not None and mv_batch_size < 1:
        raise ValueError(f"mv_batch_size must be a positive number of images; got {mv_batch_size}")
    if mv_tv_weight is not None and mv_tv_weight < 0:
        raise ValueError(f"mv_tv_weight must be ≥ 0 (or None for M&V's schedule); got {mv_tv_weight}")
    mv_batch = mv_batch_size or batch_size
    timings: dict[str, float] = {}
    if out is not None:
        check_out(out, overwrite)  # fail before any (long) computation
    dev = resolve_device(device)

    def clock() -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)  # kernels run asynchronously: time finished work only
        return time.perf_counter()

    def timed(stage: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        result = fn(*args, **kwargs)
        timings[stage] = timings.get(stage, 0.0) + clock() - t0
        return result

    wb_upconv = "white_box" in attacks and "upconvnet" in decoders  # reuses black_box_dist's UpconvNets
    need_attacker = "black_box_dist" in attacks or "query_free" in attacks or wb_upconv
    if need_attacker and attacker_data is None:
        raise ValueError("the chosen attacks need attacker_data (images of the same distribution as the victim's)")
    notes: list[str] = []
    victim_state: Optional[dict[str, Tensor]] = None
    trains_victim = not isinstance(encoder, Encoder) and not encoder_weights
    if isinstance(encoder, Encoder):
        if encoder_kwargs:
            raise ValueError("encoder_kwargs apply to an encoder given by name; this Encoder is already built")
        victim: Optional[Encoder] = encoder
    elif trains_victim:
        if encoder_kwargs:
            raise ValueError(f"encoder_kwargs apply to a victim loaded from encoder_weights; a victim trained here "
                             f"is {encoder} with its default arguments (got {encoder_kwargs})")
        if victim_data is None:
            raise ValueError(f"no victim: pass encoder_weights for {encoder} or victim_data to train it on")
        victim = None
    else:
        victim = build_encoder(encoder, encoder_weights, kwargs=encoder_kwargs)
    # Checked before any training: the untrained architecture has the same layer table and input size.
    probe = victim if victim is not None else build_encoder(encoder)
    layers = probe.resolve(list(layers))
    x = to_unit(eval_data[0])  # (N, C, H, W)
    probe.check_images(x, finite=True)
    if "black_box_train" in attacks and victim_data is None:
        raise ValueError("black_box_train queries with the victim's training images: pass victim_data")

    kw = dict(kinds=tuple(d for d in decoders), epochs=inverter_epochs, batch_size=batch_size, width=inverter_width,
              lr=inverter_lr, seed=seed)
    nets: dict[str, dict[tuple[str, str], Any]] = {}
    shadow: Optional[Encoder] = None

    def train_victim() -> None:
        nonlocal victim, victim_state
        model = train_classifier(encoder, *victim_data, num_classes=num_classes, epochs=victim_epochs, seed=seed,
                                   device=dev)
        victim = Encoder.from_model(model, encoder)
        notes.append(f"victim {encoder} trained here on {len(victim_data[0])} images for {victim_epochs} epochs; "
                     "its weights are saved as victim.pt (pass them as encoder_weights to attack the same victim again)")
        victim_state = {k: v.detach().cpu().clone() for k, v in victim.model.state_dict().items()}

    def inverters(key: str, target: Any, images: Optional[Tensor], **extra: Any) -> None:
        nets[key] = A.train_inverters(target() if callable(target) else target, layers, images, **{**kw, **extra})

    def train_shadow() -> None:
        nonlocal shadow
        shadow = Encoder.from_model(train_classifier(victim.name, *attacker_data, num_classes=num_classes,
                                                              epochs=shadow_epochs, seed=seed + 1, device=dev), victim.name).to(dev)

    stages: list[tuple[str, Callable[[], None]]] = []  # in order; later stages use what earlier ones trained
    if trains_victim:
        stages.append(("train victim", train_victim))
    get_victim = lambda: victim.to(dev)  # noqa: E731 - the victim may be trained by an earlier stage
    if "black_box_train" in attacks:
        stages.append(("train inverters black_box_train",
                       lambda: inverters("black_box_train", get_victim, victim_data[0])))
    if "black_box_dist" in attacks or wb_upconv:
        stages.append(("train inverters black_box_dist", lambda: inverters("black_box_dist", get_victim,
                                                                            attacker_data[0])))
    if "black_box_noise" in attacks:
        stages.append(("train inverters black_box_noise", lambda: inverters(
            "black_box_noise", get_victim, None, queries="noise", n_noise=n_noise)))
    if "query_free" in attacks:
        stages.append(("train shadow", train_shadow))
        if "upconvnet" in decoders:
            stages.append(("train inverters query_free", lambda: inverters(
                "query_free", lambda: shadow, attacker_data[0], kinds=("upconvnet",))))
    for stage, fn in progress(stages, desc="privacy: training", total=len(stages), unit="stage"):
        timed(stage, fn)
    victim = victim.to(dev)
    if wb_upconv:
        nets["white_box"] = {k: v for k, v in nets["black_box_dist"].items() if k[0] == "upconvnet"}
    tails = {L: tail(victim, L) for L in layers}

    def reconstruct(attack: str, decoder: str, layer: str, feats: Tensor) -> Tensor:
        if decoder == "paper" and attack in ("white_box", "query_free"):
            target = victim if attack == "white_box" else shadow
            mv = MVSettings(steps=mv_steps, optimizer=mv_optimizer, tv_weight=mv_tv_weight, seed=seed)
            chunks = [invert(target, layer, f, mv).images for f in feats.split(mv_batch)]
            return torch.cat(chunks)
        with torch.no_grad():
            return torch.cat([nets[attack][(decoder, layer)](f) for f in feats.split(batch_size)]).clamp(0, 1)

    x = x.to(dev)  # (N, C, H, W)
    y = eval_data[1].to(dev)
    with torch.no_grad():
        clean = victim(x, layers)
    lp_model, lp_note = M.load_lpips() if lpips else (None, "LPIPS skipped: disabled (lpips=False)")
    if lp_note:
        notes.append(lp_note)
    lp_model = lp_model.to(dev) if lp_model is not None else None

    def summarise(values: Tensor) -> tuple[float, float, float]:
        return M.bootstrap_ci(values, n_boot=n_boot, seed=seed)

    points = [("none", None)] + [(k, float(s)) for k, ss in defenses.items() for s in ss]
    runs = [(kind, strength, L, attack, dec) for kind, strength in points for L in layers for attack in attacks
            if kind == "none" or attack in defense_attacks for dec in decoders]
    rows, grid = [], {}
    utility: dict[tuple[str, Any, str], tuple[float, float, float]] = {}
    defended: dict[tuple[str, Any, str], Tensor] = {}
    for kind, strength, L, attack, dec in progress(runs, desc="privacy: attacks", total=len(runs), unit="attack"):
        if (kind, strength, L) not in defended:
            f = clean[L] if kind == "none" else defend(clean[L], kind, strength, seed=seed)
            defended = {(kind, strength, L): f}  # one defended point at a time: features can be large
            with torch.no_grad():
                utility[(kind, strength, L)] = summarise(M.accuracy(tails[L](f), y))
        f = defended[(kind, strength, L)]
        xh = timed(f"reconstruct {attack} {dec}", reconstruct, attack, dec, L, f)
        xh = xh.detach().float().clamp(0, 1)
        if kind == "none":
            grid[(attack, dec, L)] = xh[:grid_images].cpu()
        vals = {"psnr": M.psnr(xh, x), "ssim": M.ssim(xh, x),
                "lpips": M.lpips_distance(lp_model, xh, x) if lp_model is not None else None,
                "reid": reid_hits(xh, x, n_candidates, seed=seed)}
        row: dict[str, Any] = {"attack": attack, "decoder": dec, "layer": L, "defense": kind,
                               "strength": strength, "n": n_eval}
        for k, v in vals.items():
            row[k], row[f"{k}_lo"], row[f"{k}_hi"] = summarise(v) if v is not None else (None,) * 3
        row["utility"], row["utility_lo"], row["utility_hi"] = utility[(kind, strength, L)]
        rows.append(row)
    settings = {
        "encoder": victim.name, "encoder_weights_hash": victim.weights_hash, "layers": layers,
        "attacks": list(attacks), "decoders": list(decoders), "roles": {a: ROLES[a] for a in attacks},
        "defenses": defenses, "defense_attacks": list(defense_attacks) if defenses else [],
        "n_eval": n_eval, "n_victim": len(victim_data[0]) if victim_data is not None else None,
        "n_attacker": len(attacker_data[0]) if attacker_data is not None else None,
        "victim_epochs": victim_epochs, "shadow_epochs": shadow_epochs, "inverter_epochs": inverter_epochs,
        "inverter_width": inverter_width, "inverter_lr": inverter_lr, "n_noise": n_noise, "mv_steps": mv_steps,
        "mv_optimizer": mv_optimizer,
        "mv_batch_size": mv_batch, "mv_tv_weight": "M&V depth schedule" if mv_tv_weight is None else mv_tv_weight,
        "batch_size": batch_size,
        "n_candidates": n_candidates, "reid_metric": METRIC, "reid_chance": 1.0 / n_candidates,
        "psnr_cap_db": M.PSNR_CAP_DB, "n_boot": n_boot, "seed": seed, "device": dev.type, "torch": torch.__version__,
        "lpips": "computed (v0.1, AlexNet trunk)" if lp_model is not None else "skipped",
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    result = PrivacyResult(rows=rows, settings=settings, notes=notes, originals=x[:grid_images].cpu(), grid=grid,
                           victim_state=victim_state)
    if out is not None:
        from upconv.privacy.report import write_privacy_report

        result.out = write_privacy_report(result, out, overwrite=overwrite)
    return result
