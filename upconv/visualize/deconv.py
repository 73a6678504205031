"""Zeiler & Fergus (2014) figures from DeconvNet projections (the ``upconv deconv`` command writes them).

- Per channel: the top-9 activating images of a data set for that channel; for each, the projection of the
  channel's strongest activation in that image beside the matching receptive-field crop of the image.
- Per image: the image beside the projection of the layer's ``top_k`` strongest activations.

Projections are shown with zero as mid-grey: ``0.5 + 0.5 * p / max|p|`` per projection.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from upconv.core.figures import signed_to_image
from upconv.methods.deconvnet import DeconvNet
from upconv.nets.encoder import Encoder
from upconv.core.files import read_image
from upconv.core.runtime import progress


@dataclass(frozen=True)
class ReceptiveField:
    """Input window of a unit: unit (y, x) sees rows ``y*stride[0] - offset[0]`` … ``+ size[0] - 1``
    (likewise columns); rows outside the image are zero padding."""

    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]

    def window(self, y: int, x: int, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the size×size window (capped at the image size), shifted inside
        the image, that holds every in-image pixel of unit (y, x)'s receptive field."""
        box = []
        for i, pos in enumerate((y, x)):
            t = min(self.size[i], image_size[i])
            box.append((min(max(pos * self.stride[i] - self.offset[i], 0), image_size[i] - t), t))
        return box[0][0], box[1][0], box[0][1], box[1][1]


def receptive_field(deconvnet: DeconvNet, layer: str) -> ReceptiveField:
    """Walk kernel size k, stride s, padding p and dilation d from the input up to ``layer``:
    size += d(k-1)·jump, offset += p·jump, jump *= s. ReLU, batch norm, dropout and size-preserving
    reshapes/adaptive pools leave it unchanged; after a linear layer, a flatten or a resizing adaptive pool
    a unit sees the whole image (size = image size, stride 0, offset 0)."""
    enc = deconvnet.encoder
    steps = deconvnet.steps(layer)
    with torch.no_grad():
        probe = torch.zeros(1, enc.channels, *enc.image_size, dtype=enc.std.dtype, device=enc.std.device)
        _, saved = deconvnet._forward(probe, steps)
    shapes_out = [s for s, _ in saved[1:]] + [torch.Size((1, *enc.layer(layer).shape))]
    size, jump, offset = [1, 1], [1, 1], [0, 0]
    for st, (shape_in, _), shape_out in zip(steps, saved, shapes_out):
        m = st.module
        if st.kind in ("conv", "maxpool") or isinstance(m, nn.AvgPool2d):
            k, s, p, d = (_pair(v) for v in (m.kernel_size, m.stride, m.padding, getattr(m, "dilation", 1)))
            for i in (0, 1):
                size[i] += d[i] * (k[i] - 1) * jump[i]
                offset[i] += p[i] * jump[i]
                jump[i] *= s[i]
        elif st.kind == "linear" or (st.kind in ("avgpool", "reshape") and shape_in != shape_out):
            return ReceptiveField(enc.image_size, (0, 0), (0, 0))
    return ReceptiveField((size[0], size[1]), (jump[0], jump[1]), (offset[0], offset[1]))


def image_folder(root: str, image_size: tuple[int, int], limit: Optional[int] = None) -> torch.utils.data.Dataset:
    """An ImageFolder resized and centre-cropped to ``image_size``; ``limit`` keeps that many images evenly
    spaced through the (class-sorted) file list, so every class is represented. A file that cannot be
    decoded is one error naming it (``upconv.core.files.read_image``)."""
    from torchvision import datasets, transforms

    if not os.path.isdir(root):
        raise FileNotFoundError(f"data directory not found: {root} (expected an ImageFolder tree root/<class>/*.jpg)")
    tf = transforms.Compose([transforms.Resize(min(image_size)), transforms.CenterCrop(image_size),
                             transforms.ToTensor()])
    ds = datasets.ImageFolder(root, transform=tf, loader=functools.partial(read_image, mode="RGB"))
    if limit is not None and limit < len(ds):
        if limit < 1:
            raise ValueError(f"limit must be a positive number of images; got {limit}")
        ds = torch.utils.data.Subset(ds, torch.linspace(0, len(ds) - 1, limit).round().long().tolist())
    return ds


def top_activating(encoder: Encoder, layer: str, dataset: Any, channels: list[int], top: int = 9,
                   batch_size: int = 128) -> tuple[Tensor, Tensor]:
    """Values and data-set indices (K, top) of the images whose strongest activation of each channel
    (maximum over positions) is largest, best first."""
    if not 1 <= top <= len(dataset):
        raise ValueError(f"top must be in 1..{len(dataset)} (the data set size); got {top}")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    best_v = best_i = None
    seen = 0
    with torch.no_grad():
        for images, _ in progress(loader, f"searching {len(dataset)} images", len(loader), unit="batch"):
            images = images.to(encoder.std.device)
            encoder.check_images(images, finite=True)
            act = encoder(images, layer)[encoder.resolve(layer)[0]][:, channels]  # (B, K, ...)
            v = act.reshape(*act.shape[:2], -1).amax(2).T  # (K, B)
            i = torch.arange(seen, seen + len(images), device=v.device).expand_as(v)
            seen += len(images)
            if best_v is not None:
                v, i = torch.cat([best_v, v], 1), torch.cat([best_i, i], 1)
            best_v, order = v.topk(min(top, v.shape[1]), dim=1)
            best_i = i.gather(1, order)
    return best_v.cpu(), best_i.cpu()


def channel_figure(deconvnet: DeconvNet, images: Tensor, layer: str, channel: int) -> dict[str, Any]:
    """Tiles (N, C, h, 2w): for each image, the projection of ``channel``'s strongest activation beside the
    receptive-field crop of the image around it; ``grid`` puts them in rows of three."""
    from torchvision.utils import make_grid

    enc = deconvnet.encoder
    images = images.to(enc.std.device)
    with torch.no_grad():
        act = enc(images, layer)[enc.resolve(layer)[0]][:, channel]  # (N, H', W') or (N,)
    proj = signed_to_image(deconvnet.project(images, layer, channels=channel, top_k=1))  # (N, C, H, W)
    rf = receptive_field(deconvnet, layer)
    tiles, windows = [], []
    for n in range(len(images)):
        y, x = divmod(int(act[n].flatten().argmax()), act.shape[-1]) if act.dim() == 3 else (0, 0)
        t, l, h, w = rf.window(y, x, enc.image_size)
        windows.append((t, l, h, w))
        tiles.append(torch.cat([proj[n, :, t:t + h, l:l + w], images[n, :, t:t + h, l:l + w]], dim=-1))
    tiles = torch.stack(tiles)  # (N, C, h, 2w)
    return {"tiles": tiles, "windows": windows, "grid": make_grid(tiles, nrow=3, padding=2, pad_value=1.0)}


def image_figure(deconvnet: DeconvNet, images: Tensor, layer: str, top_k: int = 1) -> Tensor:
    """(N, C, H, 2W): each image beside the projection of the layer's ``top_k`` strongest activations."""
    proj = signed_to_image(deconvnet.project(images, layer, top_k=top_k))  # (N, C, H, W)
    return torch.cat([images.to(proj.device), proj], dim=-1)
