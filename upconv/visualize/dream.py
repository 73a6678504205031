"""DeepDream (Mordvintsev, Olah & Tyka 2015): amplify whatever a layer already sees in an image.

Gradient ascent on the layer's mean squared activation with DeepDream's normalised step
(x += lr · g / mean|g|) and random jitter, over octaves from coarse to fine. The encoder has a fixed
input size, so an octave optimises an offset at a coarser resolution that is upsampled onto the image,
rather than running the net on a smaller image; coarse octaves still grow large structures first.
"""

from __future__ import annotations

from torch import Tensor

from upconv.nets.encoder import Encoder
from upconv.optim.engine import LayerNorm, OptimSettings, optimize
from upconv.optim.params import OctaveParam
from upconv.optim.regularizers import Jitter


def deep_dream(
    encoder: Encoder,
    images: Tensor,
    layer: str,
    *,
    octaves: int = 3,
    octave_scale: float = 1.4,
    steps: int = 10,
    lr: float = 0.01,
    jitter: int = 2,
) -> Tensor:
    """Dream on ``images`` (B, C, H, W) in [0, 1] at ``layer``; returns new images, the input untouched."""
    layer = encoder.resolve(layer)[0]
    encoder.check_images(images, finite=True)
    if octaves < 1 or octave_scale < 1:
        raise ValueError(f"need octaves >= 1 and octave_scale >= 1; got octaves={octaves}, octave_scale={octave_scale}")
    h, w = encoder.image_size
    settings = OptimSettings(steps=steps, lr=lr, optimizer="normalized")
    current = images.detach().to(encoder.device)  # (B, C, H, W); optimize never writes to it
    for o in reversed(range(octaves)):  # o = octaves-1 is the coarsest
        f = octave_scale**o
        param = OctaveParam(current, (max(1, round(h / f)), max(1, round(w / f))))
        transforms = [Jitter(jitter)] if jitter > 0 else []
        current = optimize(encoder, LayerNorm(layer), param, settings, transforms=transforms).images
    return current
