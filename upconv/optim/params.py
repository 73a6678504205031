"""Image parameterisations for ``optimize``: what the optimiser actually changes.

Each is an ``nn.Module`` whose ``forward()`` returns a batch of images in [0, 1], shape (B, C, H, W), and
whose ``set_image`` writes an image back into its parameters, so pixel-space projections (blur, zeroing)
combine with every parameterisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Lucid's square root of the ImageNet colour covariance (Olah et al. 2017, "Feature Visualization"):
# optimising in these decorrelated colour coordinates makes every step change colours evenly.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


class Parameterization(nn.Module):
    """Base class: ``forward() -> (B, C, H, W)`` in [0, 1]."""

    def set_image(self, image: Tensor) -> None:
        raise NotImplementedError

    def after_step(self) -> None:
        """Called (under no_grad) after every optimiser step."""


class PixelParam(Parameterization):
    """Raw pixels, projected back into [0, 1] after each step (Simonyan et al. 2014)."""

    def __init__(self, init: Tensor) -> None:
        super().__init__()
        self.x = nn.Parameter(init.detach().clone().clamp(0, 1))  # (B, C, H, W); never aliases the caller's tensor

    def forward(self) -> Tensor:
        return self.x

    def set_image(self, image: Tensor) -> None:
        self.x.data.copy_(image.clamp(0, 1))

    def after_step(self) -> None:
        self.x.data.clamp_(0, 1)


def _logit(x: Tensor, eps: float = 1e-4) -> Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x) - torch.log1p(-x)


class FourierParam(Parameterization):
    """Decorrelated Fourier image (Olah et al. 2017): a half spectrum scaled by 1/frequency, then the
    colour transform above, then a sigmoid. Low frequencies get large steps, so images come out smooth."""

    def __init__(
        self,
        batch: int,
        channels: int,
        size: tuple[int, int],
        sd: float = 0.01,
        decay: float = 1.0,
        decorrelate: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        h, w = size
        self.size = (h, w)
        fy = torch.fft.fftfreq(h, dtype=dtype)[:, None]
        fx = torch.fft.rfftfreq(w, dtype=dtype)[None, :]
        freq = (fy**2 + fx**2).sqrt().clamp_min(1.0 / max(h, w))  # (h, w//2+1)
        self.register_buffer("scale", freq.pow(-decay) * math.sqrt(h * w), persistent=False)
        self.spectrum = nn.Parameter(sd * torch.randn(batch, channels, h, w // 2 + 1, 2, dtype=dtype))
        colour = _COLOR.to(dtype) if decorrelate and channels == 3 else torch.eye(channels, dtype=dtype)
        self.register_buffer("colour", colour, persistent=False)

    def forward(self) -> Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale  # (B, C, h, w//2+1)
        t = torch.fft.irfft2(spec, s=self.size) / 4.0  # (B, C, H, W); scaling and /4 as in Lucid
        t = torch.einsum("dc,bchw->bdhw", self.colour, t)  # decorrelated → RGB
        return torch.sigmoid(t)

    @torch.no_grad()
    def set_image(self, image: Tensor) -> None:
        t = torch.einsum("dc,bchw->bdhw", torch.linalg.inv(self.colour), _logit(image.to(self.scale.dtype)))
        spec = torch.fft.rfft2(t * 4.0) / self.scale  # exact inverse of forward for real t
        self.spectrum.data.copy_(torch.view_as_real(spec))


class DenseParam(Parameterization):
    """A dense layer fed a constant input whose weights reshape into the image; only this layer trains
    (the "dream network" parameterisation). Weights (B, C·H·W, n_in), constant input z = 1/√n_in."""

    def __init__(
        self,
        batch: int,
        channels: int,
        size: tuple[int, int],
        n_in: int = 16,
        sd: float = 0.1,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.shape = (channels, *size)
        self.weight = nn.Parameter(sd * torch.randn(batch, channels * size[0] * size[1], n_in, dtype=dtype))
        self.register_buffer("z", torch.full((n_in,), n_in**-0.5, dtype=dtype), persistent=False)

    def forward(self) -> Tensor:
        return torch.sigmoid(self.weight @ self.z).view(-1, *self.shape)  # (B, C, H, W)

    @torch.no_grad()
    def set_image(self, image: Tensor) -> None:
        # Smallest weight change that hits the target exactly: W += (t - Wz) zᵀ / ‖z‖².
        r = _logit(image.to(self.z.dtype)).flatten(1) - self.weight @ self.z  # (B, C·H·W)
        self.weight.data += r[:, :, None] * self.z[None, None, :] / self.z.pow(2).sum()


class OctaveParam(Parameterization):
    """``base`` plus a pixel offset optimised at a coarser ``resolution`` and upsampled (one DeepDream
    octave: coarse octaves change large structures, fine octaves add detail)."""

    def __init__(self, base: Tensor, resolution: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("base", base.detach().clone(), persistent=False)  # (B, C, H, W)
        self.delta = nn.Parameter(base.new_zeros(base.shape[0], base.shape[1], *resolution))  # (B, C, h, w)

    def _up(self, d: Tensor) -> Tensor:
        if d.shape[-2:] == self.base.shape[-2:]:
            return d
        return F.interpolate(d, size=self.base.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self) -> Tensor:
        return (self.base + self._up(self.delta)).clamp(0, 1)  # (B, C, H, W)

    @torch.no_grad()
    def set_image(self, image: Tensor) -> None:
        # Exact at full resolution; an area-average (least-squares-like) fit at coarser octaves.
        d = image - self.base
        if d.shape[-2:] != self.delta.shape[-2:]:
            d = F.interpolate(d, size=self.delta.shape[-2:], mode="area")
        self.delta.data.copy_(d)
