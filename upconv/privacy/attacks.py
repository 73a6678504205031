"""The attacker's side: shadow encoders, inverse networks trained on queries, optimisation inversion.

He et al. (2019) settings: white-box (weights known: regularised MLE, i.e. optimisation inversion), black-box
(the encoder can be queried: an inverse network trained on (query, features) pairs, the queries being the
victim's training images, other images of the same distribution, or random noise), and query-free (only the
architecture is known: train a shadow encoder on the attacker's data, then attack the shadow instead).
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from upconv.nets.builtin import ARCHITECTURES
from upconv.data.datamodule import random_crop_flip
from upconv.nets.encoder import CIFAR_MEAN, CIFAR_STD, Encoder
from upconv.nets.upconvnet import UpconvNet

QUERIES = ("data", "noise")
DECODERS = ("paper", "upconvnet")


class ShallowInverseNet(nn.Module):
    """He et al.'s black-box inverse network: one 3×3 transposed convolution (stride 2) + ReLU per
    downsampling stage, channel counts mirroring the encoder at each resolution, then a transposed
    convolution to the image channels. For ReLU22 of he2019_cifar: tconv 128→64 /2, ReLU, tconv 64→3.
    The kernel size is not given in the paper; 3×3 is an assumption."""

    def __init__(self, feature_shape: tuple[int, ...], image_shape: tuple[int, int, int],
                 widths: list[int]) -> None:
        super().__init__()
        if len(feature_shape) != 3:
            raise ValueError(f"the shallow inverse network needs spatial features (C, h, w); got {feature_shape}")
        self.feature_shape = tuple(feature_shape)
        layers: list[nn.Module] = []
        c = feature_shape[0]
        for w in widths:  # one per factor-2 upsampling, coarse → fine
            layers += [nn.ConvTranspose2d(c, w, 3, stride=2, padding=1, output_padding=1), nn.ReLU()]
            c = w
        layers.append(nn.ConvTranspose2d(c, image_shape[0], 3, stride=1, padding=1))
        self.body = nn.Sequential(*layers)
        self.image_shape = tuple(image_shape)

    def forward(self, features: Tensor) -> Tensor:
        out = self.body(features)  # (B, C, H', W')
        if out.shape[-2:] != self.image_shape[1:]:
            out = F.interpolate(out, size=self.image_shape[1:], mode="bilinear", align_corners=False)
        return out


def mirror_widths(encoder: Encoder, layer: str) -> list[int]:
    """Channels of the last encoder layer at each finer resolution above ``layer``, coarse → fine."""
    info = encoder.layer(layer)
    by_res: dict[int, int] = {}
    for row in encoder.layer_table:
        if row.spatial:
            by_res[row.shape[-1]] = row.shape[0]  # later layers overwrite: the last one at that resolution
    widths, res = [], info.shape[-1] * 2
    while res <= encoder.image_size[-1]:
        widths.append(by_res.get(res, info.shape[0]))
        res *= 2
    return widths


def build_inverter(kind: str, encoder: Encoder, layer: str, width: int = 64) -> nn.Module:
    """``paper``: He et al.'s shallow inverse network; ``upconvnet``: Dosovitskiy & Brox's decoder."""
    shape = encoder.layer(layer).shape
    image = (encoder.channels, *encoder.image_size)
    if kind == "paper":
        return ShallowInverseNet(shape, image, mirror_widths(encoder, layer))
    if kind == "upconvnet":
        return UpconvNet(shape, image, width=width)
    raise ValueError(f"unknown inverse network '{kind}'; choose one of: {', '.join(DECODERS)}")


def _float(images: Tensor) -> Tensor:
    return images.float().div(255) if images.dtype == torch.uint8 else images.float()


def train_inverters(
    encoder: Encoder,
    layers: list[str],
    images: Optional[Tensor],
    *,
    kinds: tuple[str, ...] = DECODERS,
    queries: Literal["data", "noise"] = "data",
    n_noise: int = 0,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float | dict[str, float] = 1e-3,
    width: int = 64,
    seed: int = 0,
) -> dict[tuple[str, str], nn.Module]:
    """Train one inverse network per (kind, layer) on (query, encoder(query)) pairs, MSE to the query.

    ``queries="data"`` uses ``images`` (uint8 or [0, 1] float, (N, C, H, W)); ``"noise"`` draws ``n_noise``
    uniform-noise images per epoch (He et al.'s noise queries; the attacker needs no data). One encoder pass
    per batch feeds every network; Adam, learning rate decayed by cosine annealing. ``lr`` is one rate for
    every network, or one per kind (e.g. ``{"paper": 1e-2, "upconvnet": 1e-3}``).
    """
    if queries not in QUERIES:
        raise ValueError(f"unknown query source '{queries}'; choose one of: {', '.join(QUERIES)}")
    if queries == "data" and (images is None or len(images) == 0):
        raise ValueError("data queries need attacker images; got none")
    if queries == "noise" and n_noise < 1:
        raise ValueError(f"noise queries need n_noise ≥ 1; got {n_noise}")
    layers = encoder.resolve(layers)
    dev = encoder.mean.device
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rates = lr if isinstance(lr, dict) else {k: lr for k in kinds}
    missing = [k for k in kinds if k not in rates]
    if missing or any(r <= 0 for r in rates.values()):
        raise ValueError(f"lr must be a positive rate, or one per inverse-network kind ({', '.join(kinds)}); got {lr}")
    nets = {(k, L): build_inverter(k, encoder, L, width).to(dev) for k in kinds for L in layers}
    opt = torch.optim.Adam([{"params": list(n.parameters()), "lr": rates[k]} for (k, _), n in nets.items()])
    n = len(images) if queries == "data" else n_noise
    per_epoch = max(1, n // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * per_epoch)
    shape = (encoder.channels, *encoder.image_size)
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(per_epoch):
            if queries == "data":
                x = _float(images[order[i * batch_size:(i + 1) * batch_size]]).to(dev)  # (B, C, H, W)
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


def train_classifier(arch: str, images: Tensor, labels: Tensor, *, num_classes: int = 10, epochs: int = 10,
                     batch_size: int = 128, lr: float = 0.05, seed: int = 0,
                     device: str | torch.device = "cpu") -> nn.Module:
    """Train a built-in architecture as a classifier (the victim, or the query-free attacker's shadow) with
    ``ClassifierModule``'s recipe and normalisation, in a plain loop over in-memory images (crop + flip)."""
    from upconv.training.classifier import ClassifierModule

    if arch not in ARCHITECTURES:
        raise ValueError(f"a shadow/victim encoder must be a built-in architecture ({', '.join(ARCHITECTURES)}); "
                         f"got '{arch}'")
    if len(images) < 2:
        raise ValueError(f"training a classifier needs at least 2 images; got {len(images)}")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    module = ClassifierModule(arch, num_classes=num_classes, lr=lr).to(device)
    per_epoch = max(1, len(images) // batch_size)
    opt, sched = module.recipe(epochs * per_epoch)
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=g)
        for i in range(per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            x = random_crop_flip(_float(images[idx]).to(device), pad=4)
            loss = F.cross_entropy(module(x), labels[idx].to(device), label_smoothing=module.hparams.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return module.model.eval().cpu()


def as_encoder(arch: str, model: nn.Module) -> Encoder:
    """Wrap a trained built-in architecture as a frozen encoder (same layer table as ``build_encoder``)."""
    return Encoder(model, name=arch, image_size=(32, 32), mean=CIFAR_MEAN, std=CIFAR_STD,
                   spec={"name": arch, "weights": None, "pretrained": False, "kwargs": {}})
