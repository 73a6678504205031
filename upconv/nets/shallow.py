"""He, Zhang & Lee's (ACSAC 2019) black-box inverse network: the shallow decoder their attacks train."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from upconv.nets.encoder import Encoder


class ShallowInverseNet(nn.Module):
    """He et al.'s black-box inverse network: one 3×3 transposed convolution (stride 2) + ReLU per
    downsampling stage, channel counts mirroring the encoder at each resolution, then a transposed
    convolution to the image channels. For ReLU22 of he2019_cifar: tconv 128→64 /2, ReLU, tconv 64→3.
    The kernel size is not given in the paper; 3×3 is an assumption."""

    def __init__(self, feature_shape: tuple[int, ...], image_shape: tuple[int, int, int], widths: list[int]) -> None:
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
