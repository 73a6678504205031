"""The baseline the package's decoder recipe must beat: a plain PyTorch loop, as a user would write it from
Dosovitskiy & Brox (CVPR 2016) — one UpconvNet decoder at a time (256 channels at full resolution), Adam at
1e-3 from step 0, cosine decay over the run, MSE to the image, no augmentation, no guard, no clipping.

Used by ``benchmarks/recipe_vs_plain.py`` (equal budget on the CPU) and ``benchmarks/reproduce.py``
(the full-scale table). Nothing here is imported by the package.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from upconv.core import metrics as M
from upconv.nets.encoder import Encoder
from upconv.nets.upconvnet import UpconvNet

PLAIN_WIDTH = 256


def train_plain(
    encoder: Encoder,
    layer: str,
    images: Tensor,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    bf16: bool = False,
    width: int = PLAIN_WIDTH,
) -> tuple[nn.Module, dict]:
    """Train one decoder for ``layer`` on uint8 ``images`` (N, C, H, W) already on the encoder's device;
    returns it (eval mode) and its training log (steps, seconds, highest loss, last loss)."""
    dev = encoder.device
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    decoder = UpconvNet(encoder.layer(layer).shape, (encoder.channels, *encoder.image_size), width=width).to(dev)
    per_epoch = max(1, len(images) // batch_size)
    opt = torch.optim.Adam(decoder.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * per_epoch)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    losses = []
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=g).to(images.device)
        for i in range(per_epoch):
            x = images[order[i * batch_size : (i + 1) * batch_size]].float() / 255  # (B, C, H, W)
            with torch.no_grad(), autocast:
                feats = encoder(x, [layer])[layer]
            with autocast:
                loss = F.mse_loss(decoder(feats).float(), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.detach())
    curve = torch.stack(losses).float().cpu()  # one read-back per decoder
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return decoder.eval(), {
        "steps": len(curve),
        "seconds": seconds,
        "max_loss": float(curve.max()),
        "last_loss": float(curve[-5:].mean()),
        "finite": bool(torch.isfinite(curve).all()),
    }


@torch.no_grad()
def per_image_psnr(encoder: Encoder, decoder: nn.Module, layer: str, images: Tensor, batch_size: int = 500) -> Tensor:
    """Per-image PSNR (dB, the package's ``metrics.psnr``) of ``decoder``'s reconstructions of uint8 images."""
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(encoder.device).float() / 255
        out.append(M.psnr(decoder(encoder(x, [layer])[layer]).float().clamp(0, 1), x).cpu())
    return torch.cat(out)


def mean_image_floor(train: Tensor, test: Tensor) -> Tensor:
    """Per-image PSNR of the training set's mean image as every reconstruction: what a decoder that read
    nothing of the features would score (the evaluation's mean-image floor)."""
    mean = (train.float() / 255).mean(0, keepdim=True)  # (1, C, H, W)
    x = test.float() / 255
    return M.psnr(mean.expand_as(x).to(x.device), x).cpu()


def interval(values: Tensor, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95 % bootstrap interval of per-image scores."""
    return M.bootstrap_ci(values, n_boot=n_boot, seed=seed)
