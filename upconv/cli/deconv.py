"""``upconv deconv``: DeconvNet / guided-backpropagation figures (Zeiler & Fergus 2014) written as PNGs; the
figures themselves are ``upconv.visualize.deconv``'s."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from upconv.cli.args import shared_args
from upconv.core.figures import captioned_figure, save_figure
from upconv.core.files import atomic_folder, check_out
from upconv.core.runtime import progress
from upconv.methods.deconvnet import DeconvNet
from upconv.nets.spec import EncoderSpec
from upconv.optim.indices import check_indices
from upconv.visualize.deconv import channel_figure, image_caption, image_figure, image_folder, top_activating


def _channel_figures(
    net: DeconvNet, ds: Any, layer: str, channels: list[int], index: Tensor, folder: str, zoom: int
) -> None:
    """One captioned PNG per channel: its top images (``index`` (K, top) into ``ds``) and their projections."""
    for k, c in enumerate(progress(channels, "channel figures", len(channels), unit="fig")):
        imgs = torch.stack([ds[int(i)][0] for i in index[k]])
        fig = channel_figure(net, imgs, layer, c, searched=len(ds))
        save_figure(
            captioned_figure(fig["grid"], fig["caption"], zoom), os.path.join(folder, f"{layer}_channel{c:04d}.png")
        )


@shared_args()
def deconv(
    encoder: EncoderSpec,
    layer: str,
    root: str,
    out: str = "runs/deconv",
    overwrite: bool = False,
    channels: list[int] | None = None,
    per_folder: int = 1000,
    top: int = 9,
    images: int = 8,
    top_k: int = 1,
    guided: bool = False,
    batch_size: int = 128,
    zoom: int = 4,
    device: str = "auto",
) -> None:
    """Write DeconvNet / guided-backpropagation figures (Zeiler & Fergus 2014) as PNGs.

    Per channel: the top activating images of the data set, each projection beside its receptive-field
    crop, under a caption naming the encoder, layer and channel. Per image: the image beside the projection of the
    layer's strongest activations.

    Args:
        layer: layer to project from (see ``upconv layers``).
        root: the data folder, an ImageFolder tree (root/<class>/<image>) searched whole; images are resized
            and centre-cropped to the encoder's size.
        out: output directory for the PNGs, created only once every figure is written.
        overwrite: replace an existing non-empty out folder (otherwise it is refused, so two runs never mix).
        channels: channels to draw (default: the first 16).
        per_folder: images of root searched, evenly spaced over its files.
        top: top activating images per channel.
        images: number of per-image figures (the first images of the searched subset).
        top_k: strongest activations of the layer projected in the per-image figures.
        guided: guided backpropagation (Springenberg et al. 2015) instead of DeconvNet.
        batch_size: images per forward pass when searching the data set.
        zoom: nearest-neighbour upscaling of the saved PNGs.
    """
    check_out(out, overwrite)  # before any work
    enc = encoder.build(device)
    net = DeconvNet(enc, guided=guided)
    name = enc.resolve(layer)[0]
    net.graph(name)  # refuse unsupported layers before reading any data
    n_channels = enc.layer(name).shape[0]
    channels = list(range(min(16, n_channels))) if channels is None else channels
    channels = check_indices(channels, n_channels, "channel", f"layer {name}").tolist()
    ds = image_folder(root, enc.image_size, per_folder)
    with atomic_folder(out, overwrite) as tmp:  # a corrupt image or a crash leaves no folder behind
        values, index = top_activating(enc, name, ds, channels, top, batch_size)
        _channel_figures(net, ds, name, channels, index, tmp, zoom)
        n_img = min(images, len(ds))
        if n_img > 0:
            tiles = image_figure(net, torch.stack([ds[i][0] for i in range(n_img)]), name, top_k)
            for i, tile in enumerate(progress(tiles, "image figures", n_img, unit="fig")):
                caption = image_caption(enc.name, name, i, top_k, guided)
                save_figure(captioned_figure(tile, caption, zoom), os.path.join(tmp, f"{name}_image{i:04d}.png"))
    print(
        f"{len(channels)} channel figures (top {values.shape[1]} of {len(ds)} images) and {n_img} image "
        f"figures for {enc.name} {name}{' (guided)' if guided else ''} written to {out}/"
    )
