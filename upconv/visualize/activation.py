"""Activation maximisation: classes, channels, neurons (Simonyan et al. 2014; Yosinski et al. 2015;
Olah et al. 2017) and class prototypes ("this class up, all others down")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from upconv.nets.encoder import Encoder
from upconv.optim.engine import ChannelMean, ClassContrast, ClassScore, Neuron
from upconv.optim.indices import check_indices
from upconv.visualize.recipe import Recipe


@dataclass
class Visualization:
    images: Tensor  # (N, C, H, W) in [0, 1]
    scores: Tensor  # (N,) final objective value of each image
    labels: list[str]  # one caption per image


def class_images(
    encoder: Encoder, classes: Sequence[int], starts: int = 1, recipe: Recipe | None = None
) -> Visualization:
    """Maximise the pre-softmax score S_c of each class from ``starts`` random starts (Simonyan et al. eq. 1).
    All len(classes)·starts images are optimised as one batch."""
    last = encoder.layers[-1]
    classes = check_indices(classes, encoder.layer(last).shape[0], "class", f"{encoder.name} ({last})").tolist()
    if starts < 1:
        raise ValueError(f"starts must be >= 1; got {starts}")
    per_image = [c for c in classes for _ in range(starts)]
    res = (recipe or Recipe()).run(encoder, ClassScore(per_image, last), len(per_image))
    return Visualization(res.images, res.scores, [f"class {c}" for c in per_image])


def prototypes(encoder: Encoder, classes: Sequence[int] | None = None, recipe: Recipe | None = None) -> Visualization:
    """One image per class maximising log p_c = S_c - logsumexp_k S_k: the class up, all others down."""
    last = encoder.layers[-1]
    k = encoder.layer(last).shape[0]
    classes = check_indices(range(k) if classes is None else classes, k, "class", f"{encoder.name} ({last})").tolist()
    res = (recipe or Recipe()).run(encoder, ClassContrast(classes, last), len(classes))
    return Visualization(res.images, res.scores, [f"class {c} p={s.exp():.2f}" for c, s in zip(classes, res.scores)])


def channel_images(
    encoder: Encoder, layer: str, channels: Sequence[int], recipe: Recipe | None = None
) -> Visualization:
    """Maximise the mean activation of each channel of ``layer`` (one image per channel)."""
    layer = encoder.resolve(layer)[0]
    channels = check_indices(channels, encoder.layer(layer).shape[0], "channel", f"layer {layer}").tolist()
    res = (recipe or Recipe()).run(encoder, ChannelMean(layer, channels), len(channels))
    return Visualization(res.images, res.scores, [f"{layer}:{c}" for c in channels])


def neuron_images(
    encoder: Encoder,
    layer: str,
    channels: Sequence[int],
    y: int | None = None,
    x: int | None = None,
    recipe: Recipe | None = None,
) -> Visualization:
    """Maximise one unit of each channel, at (y, x) of the layer's map (the centre by default)."""
    layer = encoder.resolve(layer)[0]
    shape = encoder.layer(layer).shape
    channels = check_indices(channels, shape[0], "channel", f"layer {layer}").tolist()
    if len(shape) == 3:
        y = shape[1] // 2 if y is None else y
        x = shape[2] // 2 if x is None else x
        if not (0 <= y < shape[1] and 0 <= x < shape[2]):
            raise ValueError(f"neuron position ({y}, {x}) is outside the {shape[1]}×{shape[2]} map of layer {layer}")
    res = (recipe or Recipe()).run(encoder, Neuron(layer, channels, y, x), len(channels))
    where = "" if len(shape) == 1 else f"@({y},{x})"
    return Visualization(res.images, res.scores, [f"{layer}:{c}{where}" for c in channels])
