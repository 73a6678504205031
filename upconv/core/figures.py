"""PNG figures: captioned images and image grids, labelled row grids, heat-map overlays and signed maps (matplotlib,
headless)."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never opens a window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402


def signed_to_image(g: Tensor) -> Tensor:
    """Map signed maps (B, C, H, W) to [0, 1] with 0 at mid-grey, each scaled by its own max |g|
    (``0.5 + 0.5 · g / max|g|``): gradients, DeconvNet projections, guided Grad-CAM."""
    peak = g.flatten(1).abs().amax(1).clamp_min(torch.finfo(g.dtype).tiny)  # (B,)
    return 0.5 + 0.5 * g / peak.view(-1, *[1] * (g.dim() - 1))


def overlay(images: Tensor, maps: Tensor, alpha: float = 0.5, cmap: str = "jet") -> Tensor:
    """Blend heat maps (B, H, W) in [0, 1] over images (B, C, H, W): returns (B, 3, H, W) in [0, 1]."""
    colours = torch.as_tensor(matplotlib.colormaps[cmap](maps.detach().cpu().clamp(0, 1).numpy())[..., :3])
    colours = colours.permute(0, 3, 1, 2).to(images.dtype)  # (B, 3, H, W)
    base = images.detach().cpu()
    base = base.expand(-1, 3, -1, -1) if base.shape[1] == 1 else base
    return (1 - alpha) * base + alpha * colours


def save_grid(
    images: Tensor, path: str | os.PathLike, titles: Sequence[str] | None = None, ncol: int = 8, cell: float = 1.4
) -> str:
    """Write images (N, C, H, W) in [0, 1] as a grid PNG with optional per-image captions; returns the path."""
    n = images.shape[0]
    ncol = max(1, min(ncol, n))
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(cell * ncol, cell * nrow + (0.25 * nrow if titles else 0)), squeeze=False
    )
    imgs = images.detach().cpu().float().clamp(0, 1)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        im = imgs[i].permute(1, 2, 0).numpy()  # (H, W, C)
        ax.imshow(
            im[..., 0] if im.shape[-1] == 1 else im,
            cmap="gray" if im.shape[-1] == 1 else None,
            interpolation="nearest",
            vmin=0,
            vmax=1,
        )
        if titles:
            ax.set_title(titles[i], fontsize=7)
    fig.tight_layout(pad=0.3)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def row_grid(rows: Sequence[Tensor], labels: Sequence[str], title: str, path: str | os.PathLike) -> None:
    """Write image rows (each (N, C, H, W) in [0, 1], the same N) as one PNG, each row labelled on the left:
    originals and their reconstructions in the evaluation and privacy reports. The labels and the title are
    measured as drawn and the figure is laid out around them, so none is cut at an edge."""
    from torchvision.utils import make_grid

    n = len(rows[0])
    grid = make_grid(torch.cat(list(rows)).float().clamp(0, 1), nrow=n, padding=2, pad_value=1.0)  # (C, Hg, Wg)
    h = rows[0].shape[-2] + 2
    img_h = 0.6 * len(rows)  # inches: 0.6 per row, the width in proportion
    img_w = img_h * grid.shape[2] / grid.shape[1]
    fig = plt.figure(figsize=(img_w + 2, img_h + 0.5))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_yticks([2 + h * i + (h - 2) / 2 for i in range(len(rows))], list(labels), fontsize=7)
    ax.set_xticks([])
    heading = fig.suptitle(title, fontsize=9)
    fig.canvas.draw()
    inches = lambda t: t.get_window_extent().width / fig.dpi  # noqa: E731 - width of a drawn text
    label_in = max((inches(t) for t in ax.get_yticklabels()), default=0) + 0.25  # text, tick marks, a margin
    pad, top = 0.1, 0.35
    width = max(label_in + img_w + 2 * pad, inches(heading) + 2 * pad)
    height = img_h + top + pad
    fig.set_size_inches(width, height)
    ax.set_position((label_in / width, pad / height, img_w / width, img_h / height))
    heading.set_y(1 - 0.08 / height)
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no timestamp: the same run gives the same bytes
    plt.close(fig)


def legend_below(fig: plt.Figure, axes: Sequence[plt.Axes], ncol: int = 2, fontsize: float = 8) -> None:
    """One legend for the entries of every panel (each label once), below the panels, so it covers no data:
    the figure grows by the legend's height and the panels are laid out above it. Call it last, before saving."""
    entries: dict[str, object] = {}
    for ax in axes:
        entries.update({label: h for h, label in zip(*ax.get_legend_handles_labels()) if not label.startswith("_")})
    fig.legend(entries.values(), entries.keys(), loc="lower center", ncol=ncol, fontsize=fontsize, frameon=False)
    legend_in = fontsize / 72 * 1.6 * -(-len(entries) // ncol) + 0.15  # inches of legend rows and margin
    fig.set_figheight(fig.get_figheight() + legend_in)
    fig.tight_layout(rect=(0, legend_in / fig.get_figheight(), 1, 1))


def captioned_figure(image: Tensor, caption: str, zoom: int = 1, fontsize: float = 8) -> plt.Figure:
    """An image (C, H, W) in [0, 1], ``zoom`` screen pixels per pixel (at 100 dpi), under its caption wrapped
    to the figure's width. The caller saves and closes it."""
    img = image.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy()  # (H, W, C)
    h, w = img.shape[0] * zoom / 100, max(img.shape[1] * zoom, 320) / 100  # inches
    lines = textwrap.wrap(caption, max(24, int(w * 72 / (0.55 * fontsize))))
    top = (len(lines) * 1.25 * fontsize + 8) / 72  # inches for the caption
    fig = plt.figure(figsize=(w, h + top))
    ax = fig.add_axes((0, 0, 1, h / (h + top)))
    ax.imshow(
        img[..., 0] if img.shape[-1] == 1 else img,
        cmap="gray" if img.shape[-1] == 1 else None,
        interpolation="nearest",
        vmin=0,
        vmax=1,
    )
    ax.axis("off")
    fig.suptitle("\n".join(lines), fontsize=fontsize, y=1 - 3 / 72 / (h + top), va="top")
    return fig


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> None:
    """Write ``fig`` as a PNG without a timestamp (the same figure gives the same bytes) and close it."""
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
