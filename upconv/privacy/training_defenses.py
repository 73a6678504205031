"""Training-time defences, trained into the victim: its training loss gains a term that makes the features at
one split layer harder to invert. Both go through the package's classifier recipe (``train_classifier``'s
``extra_loss``), so a defended victim differs from the undefended one only by that term.

- ``nopeek`` (Vepakomma et al., ICDMW 2020): loss = CE + w · dCor(input, split features) per batch
  (``upconv.privacy.dcor``); strength w ≥ 0.
- ``adversarial`` (ResSFL, Li et al., CVPR 2022; GLASS's adversarial training, NeurIPS 2023): a simulated
  attacker (He et al.'s shallow inverse network, its output squashed into [0, 1] so its error is bounded)
  is trained alternately on every batch to minimise its MSE on the detached features; the victim minimises
  CE − λ · that MSE through the attacker. Strength λ ≥ 0.

Strength 0 is the undefended victim itself (no retraining), so a sweep's first point is exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from upconv.nets.builtin import ARCHITECTURES
from upconv.nets.encoder import Encoder
from upconv.privacy.attacks import build_inverter
from upconv.privacy.dcor import distance_correlation
from upconv.privacy.sweep import TRAINED, check_defense
from upconv.training.recipes import train_classifier


@contextlib.contextmanager
def captured(model: nn.Module, node: str) -> Iterator[dict[str, Tensor]]:
    """Within the block, ``out["features"]`` is the output of ``model``'s submodule ``node`` of the last
    forward pass (with its graph, for a loss); the hook is removed on exit."""
    try:
        module = model.get_submodule(node)
    except AttributeError:
        raise ValueError(
            f"a trained defence splits at a submodule's output; '{node}' is not a submodule of the victim "
            f"(choose a layer whose node is a module, e.g. a built-in network's named stages)"
        ) from None
    out: dict[str, Tensor] = {}
    handle = module.register_forward_hook(lambda m, i, o: out.__setitem__("features", o))
    try:
        yield out
    finally:
        handle.remove()


class NoPeek:
    """Extra loss w · dCor(images, split features) (``train_classifier``'s ``extra_loss``)."""

    def __init__(self, node: str, weight: float) -> None:
        self.node, self.weight = node, weight

    def __call__(self, model: nn.Module, xn: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        with captured(model, node=self.node) as out:
            logits = model(xn)
        return logits, self.weight * distance_correlation(x, out["features"])


class Adversarial:
    """Extra loss −λ · MSE of a simulated inverse network trained alternately, one step per victim step."""

    def __init__(self, node: str, weight: float, attacker: nn.Module, lr: float = 1e-3) -> None:
        self.node, self.weight, self.attacker = node, weight, attacker
        self.opt = torch.optim.Adam(attacker.parameters(), lr=lr)

    def __call__(self, model: nn.Module, xn: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        self.attacker.to(x.device)
        with captured(model, node=self.node) as out:
            logits = model(xn)
        f = out["features"]  # (B, C, h, w)
        self.opt.zero_grad(set_to_none=True)  # the attacker's step first, on features it cannot change
        F.mse_loss(torch.sigmoid(self.attacker(f.detach())), x).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)  # the victim's term below leaves gradients here; drop them next step
        return logits, -self.weight * F.mse_loss(torch.sigmoid(self.attacker(f)), x)


def train_defended(
    victim: Encoder,
    layer: str,
    defense: tuple[str, float],
    data: tuple[Tensor, Tensor],
    epochs: int,
    from_scratch: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Encoder:
    """The victim retrained with defence ``(kind, strength)`` at ``layer`` on ``data`` (images, labels).

    ``from_scratch`` (a built-in architecture, as the run trains its undefended victim): trained anew with the
    same recipe and seed, so the two differ by the defence's term alone; otherwise a copy of the victim's
    model (a user's model, or weights given) is fine-tuned from its weights. Strength 0 returns ``victim``."""
    kind, strength = defense
    check_defense(kind, strength)
    if kind not in TRAINED:
        raise ValueError(f"'{kind}' is applied at inference time, not trained; trained defences: {', '.join(TRAINED)}")
    if float(strength) == 0:
        return victim
    layer = victim.resolve([layer])[0]
    node = victim.layer(layer).node
    if kind == "nopeek":
        term = NoPeek(node, float(strength))
    else:
        torch.manual_seed(seed + 7)  # the simulated attacker's initial weights
        term = Adversarial(node, float(strength), build_inverter("paper", victim, layer))
    if from_scratch and victim.name not in ARCHITECTURES:
        raise ValueError(f"{victim.name} is not a built-in architecture to train from scratch; fine-tune it instead")
    with torch.no_grad():
        n_classes = victim.logits(torch.zeros(1, victim.channels, *victim.image_size, device=victim.device)).shape[-1]
    arch = victim.name if from_scratch else victim
    model = train_classifier(
        arch, *data, num_classes=n_classes, epochs=epochs, seed=seed, device=device, extra_loss=term
    )
    return defended_encoder(victim, model)


def defended_encoder(victim: Encoder, model: nn.Module) -> Encoder:
    """``model`` (the victim's architecture, retrained) wrapped as the victim is: its layers, image size and
    normalisation."""
    layers = {info.name: info.node for info in victim.layer_table}
    return Encoder.from_model(
        model,
        victim.name,
        image_size=victim.image_size,
        mean=_floats(victim.mean),
        std=_floats(victim.std),
        layers=layers,
    )


def _floats(v: Tensor) -> list[float]:
    return [float(a) for a in v.flatten()]
