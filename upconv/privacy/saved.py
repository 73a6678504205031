"""The trained parts of a privacy run as files in its units (``upconv.privacy.resume``): networks as plain
state dicts (read back with ``weights_only=True``), rebuilt around the encoder they belong to."""

from __future__ import annotations

import copy
import os

import torch
from torch import Tensor, nn

from upconv.core.files import load_torch_file
from upconv.nets.encoder import Encoder
from upconv.privacy.attacks import build_inverter

Nets = dict[tuple[str, str], nn.Module]  # (kind, layer) -> inverse network


def cpu_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_nets(nets: Nets, folder: str, name: str = "inverters.pt") -> None:
    """Every inverse network's weights in one file, keyed "kind layer"."""
    torch.save({f"{k} {L}": cpu_state(net) for (k, L), net in nets.items()}, os.path.join(folder, name))


def load_nets(encoder: Encoder, folder: str, width: int, name: str = "inverters.pt") -> Nets:
    """The inverse networks of ``save_nets``, rebuilt for ``encoder``'s layers, frozen, on its device."""
    states = load_torch_file(os.path.join(folder, name), "inverse networks of a finished unit")
    nets = {}
    for key, state in states.items():
        kind, layer = key.split(" ", 1)
        net = build_inverter(kind, encoder, layer, width)
        net.load_state_dict(state)
        nets[(kind, layer)] = net.to(encoder.device).eval().requires_grad_(False)
    return nets


def load_state(folder: str, name: str) -> dict[str, Tensor]:
    return load_torch_file(os.path.join(folder, name), "weights of a finished unit")


def with_state(template: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """A copy of ``template`` (the same architecture) holding ``state``, in eval mode on the CPU."""
    model = copy.deepcopy(template).cpu()
    model.load_state_dict(state)
    return model.eval()
