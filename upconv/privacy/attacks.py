"""The attacker's side: shadow encoders, inverse networks trained on queries, optimisation inversion.

He et al. (2019) settings: white-box (weights known: regularised MLE, i.e. optimisation inversion), black-box
(the encoder can be queried: an inverse network trained on (query, features) pairs, the queries being the
victim's training images, other images of the same distribution, or random noise), and query-free (only the
architecture is known: train a shadow encoder on the attacker's data, then attack the shadow instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from upconv.data.augment import to_unit
from upconv.nets.encoder import Encoder
from upconv.nets.shallow import ShallowInverseNet, mirror_widths
from upconv.nets.upconvnet import UpconvNet

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
    (He et al.'s noise queries; the attacker needs no data). ``lr`` is one Adam rate for every network, or one
    per kind (e.g. ``{"paper": 1e-2, "upconvnet": 1e-3}``); ``width`` is UpconvNet's.
    """

    kinds: tuple[str, ...] = DECODERS
    queries: Literal["data", "noise"] = "data"
    n_noise: int = 0
    epochs: int = 5
    batch_size: int = 64
    lr: float | dict[str, float] = 1e-3
    width: int = 64
    seed: int = 0


def train_inverters(encoder: Encoder, layers: list[str], images: Optional[Tensor],
                    settings: InverterSettings = InverterSettings()) -> dict[tuple[str, str], nn.Module]:
    """Train one inverse network per (kind, layer) on (query, encoder(query)) pairs, MSE to the query.

    ``images`` are the data queries (uint8 or [0, 1] float, (N, C, H, W)); None for noise queries. One encoder
    pass per batch feeds every network; Adam, learning rate decayed by cosine annealing.
    """
    s = settings
    kinds, queries, n_noise, epochs, batch_size, lr = s.kinds, s.queries, s.n_noise, s.epochs, s.batch_size, s.lr
    if queries not in QUERIES:
        raise ValueError(f"unknown query source '{queries}'; choose one of: {', '.join(QUERIES)}")
    if queries == "data" and (images is None or len(images) == 0):
        raise ValueError("data queries need attacker images; got none")
    if queries == "noise" and n_noise < 1:
        raise ValueError(f"noise queries need n_noise ≥ 1; got {n_noise}")
    layers = encoder.resolve(layers)
    dev = encoder.mean.device
    g = torch.Generator().manual_seed(s.seed)
    torch.manual_seed(s.seed)
    rates = lr if isinstance(lr, dict) else {k: lr for k in kinds}
    missing = [k for k in kinds if k not in rates]
    if missing or any(r <= 0 for r in rates.values()):
        raise ValueError(f"lr must be a positive rate, or one per inverse-network kind ({', '.join(kinds)}); got {lr}")
    nets = {(k, L): build_inverter(k, encoder, L, s.width).to(dev) for k in kinds for L in layers}
    opt = torch.optim.Adam([{"params": list(n.parameters()), "lr": rates[k]} for (k, _), n in nets.items()])
    n = len(images) if queries == "data" else n_noise
    per_epoch = max(1, n // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * per_epoch)
    shape = (encoder.channels, *encoder.image_size)
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(per_epoch):
            if queries == "data":
                x = to_unit(images[order[i * batch_size:(i + 1) * batch_size]]).to(dev)  # (B, C, H, W)
            else:
                x = torch.rand(batch_size, *shape, generator=g).to(dev)
            with torch.no_grad():
                feats = encoder(x, layers)
            loss = sum(F.mse_loss(net(feats[L]), x) for (_, L), net in nets.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return {key: net.eval().requires_grad_(False) for key, net in nets.items()}
