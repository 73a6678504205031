"""Zeiler & Fergus (2014) figures from DeconvNet projections (the ``upconv deconv`` command writes them).

- Per channel: the top-9 activating images of a data set for that channel; for each, the projection of the
  channel's strongest activation in that image beside the matching receptive-field crop of the image.
- Per image: the image beside the projection of the layer's ``top_k`` strongest activations.

Projections are shown with zero as mid-grey: ``0.5 + 0.5 * p / max|p|`` per projection.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from upconv.core.figures import signed_to_image
from upconv.core.runtime import progress
from upconv.data import folders
from upconv.methods.deconvnet import DeconvNet
from upconv.nets.encoder import Encoder


def image_folder(root: str, image_size: tuple[int, int], limit: int | None = None) -> torch.utils.data.Dataset:
    """``upconv.data.folders.image_folder`` as float images in [0, 1]; ``limit`` keeps that many images evenly
    spaced through the (class-sorted) file list, so every class is represented."""
    ds = folders.image_folder(root, image_size, "float")
    if limit is not None and limit < len(ds):
        ds = torch.utils.data.Subset(ds, folders.evenly_spaced(len(ds), limit))
    return ds


def top_activating(
    encoder: Encoder, layer: str, dataset: Any, channels: list[int], top: int = 9, batch_size: int = 128
) -> tuple[Tensor, Tensor]:
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


def channel_caption(
    encoder: str, layer: str, channel: int, n: int, searched: int | None = None, guided: bool = False
) -> str:
    """What a channel figure shows: encoder, layer and channel, how its images were chosen, and each tile."""
    method = "guided backpropagation" if guided else "DeconvNet"
    among = f" of {searched}" if searched is not None else ""
    return (
        f"{encoder} {layer}, channel {channel}: the top {n}{among} images by the channel's strongest activation "
        f"(best first, rows of three); in each tile the {method} projection of that activation (left, zero "
        f"= grey) beside the image's receptive-field crop around it (right)"
    )


def channel_figure(
    deconvnet: DeconvNet, images: Tensor, layer: str, channel: int, searched: int | None = None
) -> dict[str, Any]:
    """Tiles (N, C, h, 2w): for each image, the projection of ``channel``'s strongest activation beside the
    receptive-field crop of the image around it; ``grid`` puts them in rows of three and ``caption`` says so
    (``searched``: how many images the top N were chosen from)."""
    from torchvision.utils import make_grid

    enc = deconvnet.encoder
    images = images.to(enc.std.device)
    with torch.no_grad():
        act = enc(images, layer)[enc.resolve(layer)[0]][:, channel]  # (N, H', W') or (N,)
    proj = signed_to_image(deconvnet.project(images, layer, channels=channel, top_k=1))  # (N, C, H, W)
    rf = deconvnet.receptive_field(layer)
    tiles, windows = [], []
    for n in range(len(images)):
        y, x = divmod(int(act[n].flatten().argmax()), act.shape[-1]) if act.dim() == 3 else (0, 0)
        t, l, h, w = rf.window(y, x, enc.image_size)
        windows.append((t, l, h, w))
        tiles.append(torch.cat([proj[n, :, t : t + h, l : l + w], images[n, :, t : t + h, l : l + w]], dim=-1))
    tiles = torch.stack(tiles)  # (N, C, h, 2w)
    caption = channel_caption(enc.name, layer, channel, len(images), searched, deconvnet.guided)
    return {
        "tiles": tiles,
        "windows": windows,
        "grid": make_grid(tiles, nrow=3, padding=2, pad_value=1.0),
        "caption": caption,
    }


def image_caption(encoder: str, layer: str, index: int, top_k: int = 1, guided: bool = False) -> str:
    """What a per-image figure shows: the image and the projection beside it."""
    method = "guided backpropagation" if guided else "DeconvNet"
    strongest = "strongest activation" if top_k == 1 else f"{top_k} strongest activations"
    return (
        f"{encoder} {layer}, image {index}: the image (left) beside the {method} projection of the layer's "
        f"{strongest} (right, zero = grey), carried down through the image's own max-pool switches"
    )


def image_figure(deconvnet: DeconvNet, images: Tensor, layer: str, top_k: int = 1) -> Tensor:
    """(N, C, H, 2W): each image beside the projection of the layer's ``top_k`` strongest activations."""
    proj = signed_to_image(deconvnet.project(images, layer, top_k=top_k))  # (N, C, H, W)
    return torch.cat([images.to(proj.device), proj], dim=-1)
