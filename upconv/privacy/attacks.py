"""The attacker's side: shadow encoders, inverse networks trained on queries, optimisation inversion.

He et al. (2019) settings: white-box (weights known: regularised MLE, i.e. optimisation inversion), black-box
(the encoder can be queried: an inverse network trained on (query, features) pairs, the queries being the
victim's training images, other images of the same distribution, or random noise), and query-free (only the
architecture is known: train a shadow encoder on the attacker's data, then attack the shadow instead).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from upconv.data.augment import to_unit
from upconv.nets.encoder import Encoder
from upconv.nets.shallow import ShallowInverseNet, mirror_widths
from upconv.nets.upconvnet import UpconvNet
from upconv.privacy.inference_defenses import defend
from upconv.training.recipes import DecoderRecipe

QUERIES = ("data", "noise")
DECODERS = ("paper", "upconvnet")


def build_inverter(kind: str, encoder: Encoder, layer: str, width: int = 64) -> nn.Module:
    """``paper``: He et al.'s shallow inverse network; ``upconvnet``: Dosovitskiy & Brox's decoder."""
    shape = encoder.layer(layer).shape
    image = (encoder.channels, *encoder.image_size)
    if kind == "paper":
        return ShallowInverseNet(shape, image, mirror_widths(encoder, layer))
    if kind == "upconvnet":
        return UpconvNet(shape, image, width=width)
    raise ValueError(f"unknown inverse network '{kind}'; choose one of: {', '.join(DECODERS)}")


@dataclass(frozen=True)
class InverterSettings:
    """How ``train_inverters`` trains: which inverse networks, on which queries, for how long.

    ``queries="data"`` uses the given images; ``"noise"`` draws ``n_noise`` uniform-noise images per epoch
    (He et al.'s noise queries; the attacker needs no data). Training is ``recipe``'s, the one every UpconvNet
    of the package is trained with (``upconv.training.recipes.DecoderRecipe``: AdamW, warm-up, cosine, the
    health guard; its ``lr`` is every network's rate); ``kind_lr`` replaces that rate for the kinds it names
    (e.g. ``{"paper": 1e-2, "upconvnet": 1e-3}``: He et al.'s shallow network trains faster at a higher rate);
    ``width`` is UpconvNet's. ``defense`` (kind, strength) applies an inference-time defence to the features
    the networks train on (an adaptive attacker: it learns to invert what the defended system sends), with a
    fresh draw every step.
    """

    kinds: tuple[str, ...] = DECODERS
    queries: Literal["data", "noise"] = "data"
    n_noise: int = 0
    epochs: int = 5
    batch_size: int = 64
    width: int = 64
    seed: int = 0
    recipe: DecoderRecipe = DecoderRecipe()
    kind_lr: dict[str, float] | None = None
    defense: tuple[str, float] | None = None


@dataclass
class Inverters:
    """Trained inverse networks keyed (kind, layer), in eval mode and frozen, with each one's training health
    (``HealthGuard.record()``: status ok / recovered / failed, events), so that a report can say beside a
    figure that its network diverged."""

    nets: dict[tuple[str, str], nn.Module]
    health: dict[tuple[str, str], dict[str, Any]]


def _check(images: Tensor | None, s: InverterSettings) -> dict[str, float]:
    """The per-kind learning rates, after the settings' one-line checks."""
    if s.queries not in QUERIES:
        raise ValueError(f"unknown query source '{s.queries}'; choose one of: {', '.join(QUERIES)}")
    if s.queries == "data" and (images is None or len(images) == 0):
        raise ValueError("data queries need attacker images; got none")
    if s.queries == "noise" and s.n_noise < 1:
        raise ValueError(f"noise queries need n_noise ≥ 1; got {s.n_noise}")
    given = s.kind_lr or {}
    if any(k not in DECODERS or not isinstance(r, int | float) or r <= 0 for k, r in given.items()):
        raise ValueError(
            f"kind_lr must give positive rates for inverse-network kinds ({', '.join(DECODERS)}); got {s.kind_lr}"
        )
    return {k: given.get(k, s.recipe.lr) for k in s.kinds}


def _queries(
    images: Tensor | None, s: InverterSettings, shape: tuple[int, ...], g: torch.Generator, device: torch.device
) -> Iterator[Tensor]:
    """One epoch of query batches, [0, 1] floats (B, C, H, W): the images reshuffled, or fresh noise."""
    n = len(images) if s.queries == "data" else s.n_noise
    order = torch.randperm(n, generator=g)
    for i in range(max(1, n // s.batch_size)):
        if s.queries == "data":
            yield to_unit(images[order[i * s.batch_size : (i + 1) * s.batch_size]]).to(device)
        else:
            yield torch.rand(s.batch_size, *shape, generator=g).to(device)


def train_inverters(
    encoder: Encoder, layers: list[str], images: Tensor | None, settings: InverterSettings = InverterSettings()
) -> Inverters:
    """Train one inverse network per (kind, layer) on (query, encoder(query)) pairs, MSE to the query.

    ``images`` are the data queries (uint8 or [0, 1] float, (N, C, H, W)); None for noise queries. One encoder
    pass per batch feeds every network; each network is its own parameter group and its own guarded decoder,
    exactly as ``InversionModule`` trains its decoders: a spike's gradient is tamed, a diverged network is
    restored with a lower rate or marked failed (it keeps its last good weights), never silently published.
    """
    s = settings
    rates = _check(images, s)
    layers = encoder.resolve(layers)
    dev = encoder.device
    g = torch.Generator().manual_seed(s.seed)
    torch.manual_seed(s.seed)
    nets = {(k, L): build_inverter(k, encoder, L, s.width).to(dev) for k in s.kinds for L in layers}
    guarded = nn.ModuleDict({f"{k} {L}".replace(".", "_"): net for (k, L), net in nets.items()})
    n = len(images) if s.queries == "data" else s.n_noise
    total = s.epochs * max(1, n // s.batch_size)
    groups = [{"params": list(net.parameters()), "lr": rates[k]} for (k, _), net in nets.items()]
    opt, sched = s.recipe.optimizer(groups, total, dev)
    guard = s.recipe.health_guard(guarded)
    guard.bind(opt, sched)
    step, shape = 0, (encoder.channels, *encoder.image_size)
    for _ in range(s.epochs):
        for x in _queries(images, s, shape, g, dev):  # (B, C, H, W)
            with torch.no_grad():
                feats = encoder(x, layers)
                if s.defense is not None:
                    feats = {L: defend(f, *s.defense, seed=s.seed + 1 + step) for L, f in feats.items()}
            losses = torch.stack([F.mse_loss(net(feats[L]), x) for (_, L), net in nets.items()])  # (K,)
            weight = guard.gate(losses.detach())  # on the device, as in InversionModule
            opt.zero_grad(set_to_none=True)
            torch.where(weight > 0, losses * weight, 0.0).sum().backward()  # 0 × NaN would be NaN
            s.recipe.clip_gradients(guarded)
            opt.step()
            sched.step()
            step += 1
            if guard.due(step) or step == total:
                guard.check(step)
    health = dict(zip(nets, guard.record().values()))  # the guard's keys are the nets', in order
    return Inverters({key: net.eval().requires_grad_(False) for key, net in nets.items()}, health)
