"""``upconv visualize <method>``: each subcommand runs one method and writes PNG grids into ``out``. This
module holds activation maximisation and DeepDream, and what every subcommand shares (``image_args``,
``write_grid``; images are read by ``upconv.data.folders.load_images``); gradient maps, search and attacks are in
``upconv.cli.attribution``.

Image inputs are image files or ImageFolder directories (``root/<class>/*.png|jpg``), resized to the
encoder's input size; ImageFolder class indices serve as labels where a method needs them. Every
subcommand takes the shared encoder arguments of ``upconv.cli.args`` (help text appended by
``shared_args``).
"""

from __future__ import annotations

import os

import torch

from upconv.cli.args import shared_args
from upconv.core.files import atomic_folder, check_out
from upconv.data.folders import load_images
from upconv.nets.spec import EncoderSpec
from upconv.visualize.recipe import Recipe

image_args = shared_args(
    {
        "recipe": "optimisation settings (parameterisation, steps, transforms, regularisers); --recipe.<field>, "
        "see upconv.visualize.Recipe.",
        "out": "output folder for the PNG grid.",
        "images": "image files and/or ImageFolder directories, resized and centre-cropped to the encoder's size.",
        "per_folder": "images taken from each folder, evenly spaced over its files (null: all).",
        "classes": "class indices.",
        "overwrite": "replace an existing non-empty out folder (otherwise it is refused, so two runs never mix).",
    }
)


def write_grid(
    out: str, name: str, images: torch.Tensor, titles: list[str], ncol: int = 8, overwrite: bool = False
) -> None:
    """Write the grid PNG ``name`` as the folder ``out``, created only once the file is complete."""
    from upconv.core.figures import save_grid

    with atomic_folder(out, overwrite) as tmp:
        save_grid(images, os.path.join(tmp, name), titles, ncol=ncol)
    print(os.path.join(out, name))


@image_args
def class_(
    encoder: EncoderSpec,
    classes: list[int],
    starts: int = 1,
    recipe: Recipe = Recipe(),
    out: str = "runs/visualize",
    overwrite: bool = False,
    device: str = "auto",
) -> None:
    """Class-score maximisation (Simonyan et al. 2014): one image per class and random start.

    Args:
        starts: random starts per class.
    """
    check_out(out, overwrite)  # before any work: two runs' figures never mix in one folder
    from upconv.visualize.activation import class_images

    enc = encoder.build(device)
    v = class_images(enc, classes, starts, recipe)
    write_grid(out, "class.png", v.images, [f"{l} s={s:.2f}" for l, s in zip(v.labels, v.scores)], overwrite=overwrite)


@image_args
def channel(
    encoder: EncoderSpec,
    layer: str,
    channels: list[int],
    recipe: Recipe = Recipe(),
    out: str = "runs/visualize",
    overwrite: bool = False,
    device: str = "auto",
) -> None:
    """What a channel responds to: maximise its mean activation, one image per channel.

    Args:
        layer: layer name (see `upconv layers`).
        channels: channel indices of the layer.
    """
    check_out(out, overwrite)  # before any work: two runs' figures never mix in one folder
    from upconv.visualize.activation import channel_images

    v = channel_images(encoder.build(device), layer, channels, recipe)
    write_grid(out, f"channel_{v.labels[0].split(':')[0]}.png", v.images, v.labels, overwrite=overwrite)


@image_args
def neuron(
    encoder: EncoderSpec,
    layer: str,
    channels: list[int],
    y: int | None = None,
    x: int | None = None,
    recipe: Recipe = Recipe(),
    out: str = "runs/visualize",
    overwrite: bool = False,
    device: str = "auto",
) -> None:
    """What one unit responds to: channel c at (y, x) of the layer's map (the centre by default).

    Args:
        layer: layer name (see `upconv layers`).
        channels: channel indices of the layer, one image each.
        y: row of the unit in the layer's map (default: the centre).
        x: column of the unit in the layer's map (default: the centre).
    """
    check_out(out, overwrite)  # before any work: two runs' figures never mix in one folder
    from upconv.visualize.activation import neuron_images

    v = neuron_images(
        encoder.build(device),
        layer,
        channels,
        y,
        x,
        recipe,
    )
    write_grid(out, f"neuron_{v.labels[0].split(':')[0]}.png", v.images, v.labels, overwrite=overwrite)


@image_args
def prototype(
    encoder: EncoderSpec,
    classes: list[int] | None = None,
    recipe: Recipe = Recipe(),
    out: str = "runs/visualize",
    overwrite: bool = False,
    device: str = "auto",
) -> None:
    """Class prototypes: per class, maximise log p_c (that class up, all others down).

    Args:
        classes: class indices (default: every class).
    """
    check_out(out, overwrite)  # before any work: two runs' figures never mix in one folder
    from upconv.visualize.activation import prototypes

    v = prototypes(encoder.build(device), classes, recipe)
    write_grid(out, "prototype.png", v.images, v.labels, overwrite=overwrite)


@image_args
def dream(
    encoder: EncoderSpec,
    images: list[str],
    layer: str,
    octaves: int = 3,
    octave_scale: float = 1.4,
    steps: int = 10,
    lr: float = 0.01,
    jitter: int = 2,
    per_folder: int | None = 16,
    out: str = "runs/visualize",
    overwrite: bool = False,
    device: str = "auto",
) -> None:
    """DeepDream (Mordvintsev et al. 2015) on images; writes a row of inputs and a row of dreams.

    Args:
        layer: layer whose mean squared activation is amplified.
        octaves: number of scales, coarse to fine.
        octave_scale: size ratio between consecutive octaves.
        steps: normalised gradient steps per octave.
        lr: step size.
        jitter: random shift of up to this many pixels each step (0: off).
    """
    check_out(out, overwrite)  # before any work: two runs' figures never mix in one folder
    from upconv.visualize.dream import deep_dream

    enc = encoder.build(device)
    x, _, names = load_images(images, enc.image_size, per_folder, enc.channels)
    d = deep_dream(
        enc, x.to(enc.device), layer, octaves=octaves, octave_scale=octave_scale, steps=steps, lr=lr, jitter=jitter
    )
    write_grid(
        out,
        "dream.png",
        torch.cat([x, d.cpu()]),
        names + [f"dream {layer}"] * len(names),
        len(names),
        overwrite=overwrite,
    )


COMMANDS = {"class": class_, "channel": channel, "neuron": neuron, "prototype": prototype, "dream": dream}
