"""Augmentation and conversion on the device, vectorised over the batch."""

from __future__ import annotations

import torch
from torch import Tensor


def to_unit(images: Tensor) -> Tensor:
    """uint8 images (0–255) to float in [0, 1]; float images pass through as float32."""
    return images.float().div(255) if images.dtype == torch.uint8 else images.float()


def random_crop_flip(x: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """Per-image random crop (after reflect-padding by ``pad``) and horizontal flip, vectorised."""
    b, _, h, w = x.shape  # (B, C, H, W)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x
    dy = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device)
    rows = dy + torch.arange(h, device=x.device)  # (B, H)
    cols = dx + torch.arange(w, device=x.device)  # (B, W)
    flip = torch.rand(b, 1, device=x.device) < 0.5
    cols = torch.where(flip, cols.flip(1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()
