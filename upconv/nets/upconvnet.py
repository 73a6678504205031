"""UpconvNet decoder (Dosovitskiy & Brox, "Inverting Visual Representations with Convolutional
Networks", CVPR 2016): reconstruct an image from one layer's features.

Spatial features (C, h, w): a few 3×3 convolutions, then stride-2 up-convolutions (4×4 transposed
convolutions) until the image size is reached, each followed by a 3×3 convolution. Vector features (D,):
fully connected layers to a small spatial map, then the same up-convolution stack. Leaky ReLU 0.2
throughout, as in the paper; the last layer is linear and predicts the image in [0, 1] (no squashing,
so the MSE gradient never vanishes at saturated pixels; callers clamp for display and metrics).

The decoder depends only on the feature shape and the image shape, which is what lets one code path
serve every layer of every encoder: for the built-in nets the number of up-convolutions equals the number
of downsampling stages above the layer, i.e. the decoder mirrors the encoder.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

NORMS = ("none", "batch", "group")


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


def _norm(kind: str, channels: int) -> list[nn.Module]:
    """The normalisation after a hidden convolution: none (the paper's), batch or group (32 groups or fewer;
    independent of the batch, so data-parallel shards need no synchronised statistics)."""
    if kind == "batch":
        return [nn.BatchNorm2d(channels)]
    if kind == "group":
        return [nn.GroupNorm(math.gcd(32, channels), channels)]
    return []


def _fc_map_size(height: int) -> int:
    """Side of the map the fully connected layers reshape to: image side / 2^k, k ≤ 5, side ≥ 4."""
    for k in range(5, -1, -1):
        if height % 2**k == 0 and height // 2**k >= 4:
            return height // 2**k
    return height


class UpconvNet(nn.Module):
    """Decoder from one layer's features to an image.

    Args:
        feature_shape: per-image feature shape, (C, h, w) or (D,).
        image_shape: (channels, H, W) of the reconstructed image.
        width: channels at full image resolution; doubled at each coarser stage, capped at ``max_width``.
        n_convs: 3×3 convolutions applied at the feature resolution before upsampling.
        fc_width: hidden width of the fully connected part (vector features only).
        max_width: cap on any stage's channel count.
        norm: normalisation after each hidden convolution: ``none`` (the paper's), ``batch`` or ``group``.
    """

    def __init__(
        self,
        feature_shape: tuple[int, ...],
        image_shape: tuple[int, int, int] = (3, 32, 32),
        width: int = 64,
        n_convs: int = 2,
        fc_width: int = 1024,
        max_width: int = 512,
        norm: str = "none",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown decoder norm '{norm}'; choose one of: {', '.join(NORMS)}")
        feature_shape = tuple(int(s) for s in feature_shape)
        if len(feature_shape) not in (1, 3) or min(feature_shape) < 1:
            raise ValueError(f"feature_shape must be (C, h, w) or (D,); got {feature_shape}")
        self.feature_shape, self.image_shape = feature_shape, tuple(image_shape)
        c_img, height, _ = self.image_shape
        if len(feature_shape) == 3:
            c_feat, h = feature_shape[0], feature_shape[1]
            self.fc = None
        else:
            h = _fc_map_size(height)
        n_up = max(0, math.ceil(math.log2(height / h) - 1e-9))
        widths = [min(max_width, width * 2 ** (n_up - i)) for i in range(n_up + 1)]  # coarse → fine
        if len(feature_shape) == 1:
            c_feat = widths[0]
            self.fc = nn.Sequential(
                nn.Linear(feature_shape[0], fc_width),
                _act(),
                nn.Linear(fc_width, fc_width),
                _act(),
                nn.Linear(fc_width, c_feat * h * h),
                _act(),
            )
            self._map = (c_feat, h, h)
        stages: list[nn.Module] = []
        c = c_feat
        for _ in range(n_convs):
            stages += [nn.Conv2d(c, widths[0], 3, padding=1), *_norm(norm, widths[0]), _act()]
            c = widths[0]
        for w in widths[1:]:
            stages += [
                nn.ConvTranspose2d(c, w, 4, stride=2, padding=1),
                *_norm(norm, w),
                _act(),
                nn.Conv2d(w, w, 3, padding=1),
                *_norm(norm, w),
                _act(),
            ]
            c = w
        stages.append(nn.Conv2d(c, c_img, 3, padding=1))
        self.body = nn.Sequential(*stages)

    def forward(self, features: Tensor) -> Tensor:
        if tuple(features.shape[1:]) != self.feature_shape:
            raise ValueError(
                f"decoder expects features of shape (B, {', '.join(map(str, self.feature_shape))}); "
                f"got {tuple(features.shape)}"
            )
        if self.fc is not None:
            features = self.fc(features).view(-1, *self._map)  # (B, C0, h, h)
        out = self.body(features)  # (B, 3, ~H, ~W)
        if out.shape[-2:] != self.image_shape[1:]:
            # Non-power-of-two ratios (e.g. AlexNet's 55×55 conv1 for 224×224 input) end with a resize.
            out = F.interpolate(out, size=self.image_shape[1:], mode="bilinear", align_corners=False)
        return out
