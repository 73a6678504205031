"""``upconv visualize <method>``: each subcommand runs one method and writes PNG grids into ``out``.

Image inputs are image files or ImageFolder directories (``root/<class>/*.png|jpg``), resized to the
encoder's input size; ImageFolder class indices serve as labels where a method needs them. Every
subcommand takes the shared encoder arguments of ``upconv.cli.args`` (help text appended by
``shared_args``).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

from upconv.cli.args import cli_encoder, shared_args
from upconv.core.files import read_image
from upconv.core.runtime import progress
from upconv.visualize.recipe import Recipe

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_ARGS = shared_args({
    "recipe": "optimisation settings (parameterisation, steps, transforms, regularisers); --recipe.<field>, "
              "see upconv.visualize.Recipe.",
    "out": "output folder for the PNG grid.",
    "images": "image files and/or ImageFolder directories, resized and centre-cropped to the encoder's size.",
    "limit": "images taken from each folder, evenly spaced over its files (null: all).",
    "classes": "class indices.",
})


def load_images(inputs: list[str], size: tuple[int, int], limit: Optional[int] = None,
                channels: int = 3) -> tuple[torch.Tensor, Optional[torch.Tensor], list[str]]:
    """Images (N, C, H, W) in [0, 1], their ImageFolder labels (None for plain files) and names. A file that
    cannot be decoded is one error naming it (``upconv.core.files.read_image``)."""
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    mode = "L" if channels == 1 else "RGB"
    tf = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor()])
    picks: list[tuple[str, int, str]] = []  # (file, label, name)
    for path in inputs:
        if os.path.isdir(path):
            ds = ImageFolder(path)  # lists files only; nothing is decoded here
            n = len(ds) if limit is None else min(limit, len(ds))
            # Evenly spaced picks so a small limit still covers every class folder.
            for i in torch.linspace(0, len(ds) - 1, n).round().long().unique().tolist():
                file, label = ds.samples[i]
                picks.append((file, label, os.path.relpath(file, path)))
        elif os.path.isfile(path) and path.lower().endswith(IMAGE_EXT):
            picks.append((path, -1, os.path.basename(path)))
        else:
            raise FileNotFoundError(f"{path}: expected an image file ({', '.join(IMAGE_EXT)}) or an ImageFolder directory")
    if not picks:
        raise ValueError(f"no images found in {inputs}")
    images = [tf(read_image(f, mode)) for f, _, _ in progress(picks, "loading images", len(picks), unit="img")]
    y = torch.tensor([label for _, label, _ in picks])
    return torch.stack(images), (None if (y < 0).any() else y), [name for _, _, name in picks]


def _write(out: str, name: str, images: torch.Tensor, titles: list[str], ncol: int = 8) -> None:
    from upconv.core.figures import save_grid

    print(save_grid(images, os.path.join(out, name), titles, ncol=ncol))


@_ARGS
def class_(encoder: str, classes: list[int], starts: int = 1, recipe: Recipe = Recipe(), out: str = "visualize",
           encoder_weights: Optional[str] = None, encoder_kwargs: Optional[dict[str, Any]] = None,
           pretrained: bool = True, download: bool = False, device: str = "auto") -> None:
    """Class-score maximisation (Simonyan et al. 2014): one image per class and random start.

    Args:
        starts: random starts per class.
    """
    from upconv.visualize.activation import class_images

    enc = cli_encoder(encoder, encoder_weights, encoder_kwargs, pretrained, download, device)
    v = class_images(enc, classes, starts, recipe)
    _write(out, "class.png", v.images, [f"{l} s={s:.2f}" for l, s in zip(v.labels, v.scores)])


@_ARGS
def channel(encoder: str, layer: str, channels: list[int], recipe: Recipe = Recipe(), out: str = "visualize",
            encoder_weights: Optional[str] = None, encoder_kwargs: Optional[dict[str, Any]] = None,
            pretrained: bool = True, download: bool = False, device: str = "auto") -> None:
    """What a channel responds to: maximise its mean activation, one image per channel.

    Args:
        layer: layer name (see `upconv layers`).
        channels: channel indices of the layer.
    """
    from upconv.visualize.activation import channel_images

    v = channel_images(cli_encoder(encoder, encoder_weights, encoder_kwargs, pretrained, download, device),
                       layer, channels, recipe)
    _write(out, f"channel_{v.labels[0].split(':')[0]}.png", v.images, v.labels)


@_ARGS
def neuron(encoder: str, layer: str, channels: list[int], y: Optional[int] = None, x: Optional[int] = None,
           recipe: Recipe = Recipe(), out: str = "visualize", encoder_weights: Optional[str] = None,
           encoder_kwargs: Optional[dict[str, Any]] = None, pretrained: bool = True, download: bool = False,
           device: str = "auto") -> None:
    """What one unit responds to: channel c at (y, x) of the layer's map (the centre by default).

    Args:
        layer: layer name (see `upconv layers`).
        channels: channel indices of the layer, one image each.
        y: row of the unit in the layer's map (default: the centre).
        x: column of the unit in the layer's map (default: the centre).
    """
    from upconv.visualize.activation import neuron_images

    v = neuron_images(cli_encoder(encoder, encoder_weights, encoder_kwargs, pretrained, download, device),
                      layer, channels, y, x, recipe)
    _write(out, f"neuron_{v.labels[0].split(':')[0]}.png", v.images, v.labels)


@_ARGS
def prototype(encoder: str, classes: Optional[list[int]] = None, recipe: Recipe = Recipe(), out: str = "visualize",
              encoder_weights: Optional[str] = None, encoder_kwargs: Optional[dict[str, Any]] = None,
              pretrained: bool = True, download: bool = False, device: str = "auto") -> None:
    """Class prototypes: per class, maximise log p_c (that class up, all others down).

    Args:
        classes: class indices (default: every class).
    """
    from upconv.visualize.activation import prototypes

    v = prototypes(cli_encoder(encoder, encoder_weights, encoder_kwargs, pretrained, download, device), classes, recipe)
    _write(out, "prototype.png", v.images, v.labels)


@_ARGS
def dream(encoder: str, images: list[str], layer: str, octaves: int = 3, octave_scale: float = 1.4, steps: int = 10,
          lr: float = 0.01, jitter: int = 2, limit: Optional[int] = 16, out: str = "visualize",
          encoder_weights: Optional[str] = None, encoder_kwargs: Optional[dict[str, Any]] = None,
          pretrained: bool = True, download: bool = False, device: str = "auto") -> None:
    """DeepDream (Mordvintsev et al. 2015) on images; writes a row of inputs and a row of dreams.

    Args:
        layer: layer whose mean squared activation is amplified.
        octaves: number of scales, coarse to fine.
        octave_scale: size ratio between consecutive octaves.
        steps: normalised gradient steps per octave.
        lr: step size.
        jitter: random shift of up to this many pixels each step (0: off).
    """
    from upconv.visualize.dream import deep_dream

    enc = cli_encoder(encoder, encoder_weights, encoder_kwargs, pretrained, download, device)
    x, _, names = load_images(images, enc.image_size, limit, enc.channels)
    d = deep_dream(enc, x.to(enc.mean.device), layer, octaves=octaves, octave_scale=octave_scale, steps=steps,
                   lr=lr, jitter=jitter)
    _write(out, "dream.png", torch.cat([x, d.cpu()]), names + [f"dream {layer}"] * len(names), len(names))


@_ARGS
def gradcam(encoder: str, images: list[str], layer: str, classes: Optional[list[int]] = None, guided: bool = True,
            limit: Optional[int] = 16, out: str = "visualize", encoder_weights: Optional[str] = None,
            encoder_kwargs: Optional[dict[str, Any]] = None, pretrained: bool = True, download: bool = False,
            device: str = "auto") -> None:
    """Grad-CAM overlays (Selvaraju et al. 2017), and guided Grad-CAM, for the predicted class or ``classes``.

    Args:
        layer: spatial layer whose maps are weighted (e.g. the last convolution).
        classes: one class for all images, or one per image (default: each image's predicted class).
        guided: also draw guided Grad-CAM (guided backpropagation × Grad-CAM).
    """
    from upconv.core.figures import overlay, signed_to_image
    from upconv.visualize.gradcam import grad_cam, guided_grad_cam

    enc = cli_encoder(encoder, encoder_weights, encoder_kwargs, pretrained, download, device)
    x, _, names = load_images(images, enc.image_size, limit, enc.channels)
    x = x.to(enc.mean.device)
    with torch.no_grad():
        pred = enc.logits(x).flatten(1).argmax(1) if classes is None else torch.as_tensor(classes).to(x.device)
    rows = [x.cpu(), overlay(x, grad_cam(enc, x, layer, pred))]
    if guided:
        rows.append(signed_to_image(guided_grad_cam(enc, x, layer, pred)).cpu())
    _write(out, "gradcam.png", torch.cat(rows), [f"{n} → {c}" for n, c in zip(names, pred.tolist())] * len(rows), len(names))


@_ARGS
def saliency(encoder: str, images: list[str], classes: Optional[list[int]] = None, limit: Optional[int] = 16,
             out: str = "visualize", encoder_weights: Optional[str] = None,
             encoder_kwargs: Optional[dict[str, Any]] = None, pretrained: bool = True, download: bool = False,
             device: str = "auto") -> None:
    """Simonyan et al. (2014) saliency maps for the predicted class, or ``classes``.

    Args:
        classes: one class for all images, or one per image (default: each image's predicted class).
    """
    from upconv.core.figures import overlay
    from upconv.visualize.gradcam import saliency as saliency_map

    enc = cli_encoder(encoder, encoder_weights, encoder_kwargs, pretrained, download, device)
    x, _, names = load_images(images, enc.image_size, limit, enc.channels)
    m = saliency_map(enc, x.to(enc.mean.device), classes)
    m = m / m.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    gray = m[:, None].expand(-1, 3, -1, -1).cpu()
    _write(out, "saliency.png", torch.cat([x, gray, overlay(x, m)]), names * 3, len(names))


@_ARGS
def similar(encoder: str, data: str, images: list[str], layer: str, k: int = 5, metric: str = "cosine",
            limit: Optional[int] = None, out: str = "visualize", encoder_weights: Optional[str] = None,
            encoder_kwargs: Optional[dict[str, Any]] = None, pretrained: bool = True, download: bool = False,
            device: str = "auto") -> None:
    """Nearest training images: index ImageFolder ``data`` at ``layer``, then show each query with its top-k
    neighbours, their scores, and nn_ratio (≈1 typical, ≫1 unlike the data, 0 an exact copy).

    Args:
        data: ImageFolder directory to index (the "training set").
        images: query image files and/or ImageFolder directories.
        layer: layer whose features are compared.
        k: neighbours shown per query.
        metric: cosine or euclidean.
        limit: images indexed from data, evenly spaced over its files (null: all).
    """
    from upconv.visualize.similar import FeatureIndex

    enc = cli_encoder(encoder, encoder_weights, encoder_kwargs, pretrained, download, device)
    train, _, train_names = load_images([data], enc.image_size, limit, enc.channels)
    q, _, names = load_images(images, enc.image_size, None, enc.channels)
    res = FeatureIndex(enc, layer, metric).add(train).search(q, k)
    grid, titles = [], []
    for i in range(len(q)):
        print(f"{names[i]}: nn_ratio {res.nn_ratio[i]:.3f}  " +
              "  ".join(f"{train_names[j]} {s:.3f}" for j, s in zip(res.indices[i].tolist(), res.scores[i].tolist())))
        grid += [q[i], *train[res.indices[i].cpu()]]
        titles += [f"query r={res.nn_ratio[i]:.2f}", *[f"{s:.3f}" for s in res.scores[i].tolist()]]
    from upconv.core.figures import save_grid

    print(save_grid(torch.stack(grid), os.path.join(out, "similar.png"), titles, ncol=k + 1))


def _rate(k: int, n: int) -> str:
    return f"{k / n:.1%}" if n else "n/a"


@_ARGS
def adversarial(encoder: str, images: list[str], epsilon: float = 8 / 255, method: str = "pgd", steps: int = 10,
                labels: Optional[list[int]] = None, targeted: bool = False, limit: Optional[int] = 16,
                out: str = "visualize", encoder_weights: Optional[str] = None,
                encoder_kwargs: Optional[dict[str, Any]] = None, pretrained: bool = True, download: bool = False,
                device: str = "auto") -> None:
    """FGSM or L∞ PGD. Prints the clean accuracy, the success rate and the perturbation norms.

    Untargeted success counts only the images the net classified correctly before the attack; targeted
    success counts only the images not already of the target class.

    Args:
        epsilon: L∞ radius in [0, 1] pixel units (8/255 ≈ 0.0314).
        method: fgsm or pgd.
        steps: PGD steps.
        labels: true classes (one, or one per image; default: the ImageFolder classes, else the clean
            predictions); with --targeted, the target classes (required).
        targeted: move each image towards its label instead of away from it.
    """
    from upconv.visualize.adversarial import fgsm, pgd

    if method not in ("fgsm", "pgd"):
        raise ValueError(f"unknown method '{method}'; choose fgsm or pgd")
    if targeted and labels is None:
        raise ValueError("a targeted attack needs --labels: the target class, one for all images or one per image")
    enc = cli_encoder(encoder, encoder_weights, encoder_kwargs, pretrained, download, device)
    x, folder, names = load_images(images, enc.image_size, limit, enc.channels)
    x = x.to(enc.mean.device)
    with torch.no_grad():
        clean = enc.logits(x).flatten(1).argmax(1).cpu()  # (N,)
    y = labels if labels is not None else folder if folder is not None else clean
    r = fgsm(enc, x, y, epsilon, targeted) if method == "fgsm" else pgd(enc, x, y, epsilon, steps, targeted=targeted)
    n, k, m = len(x), int(r.success.sum()), int(r.eligible.sum())
    if targeted:  # the labels are targets: accuracy needs the folders' true classes
        correct = None if folder is None else int((clean == folder).sum())
        what, unknown = "not already of the target class", "no true labels"
    else:
        correct = None if labels is None and folder is None else m
        what, unknown = "initially correct", "labels are the clean predictions"
    acc = f"{_rate(correct, n)} ({correct}/{n})" if correct is not None else f"n/a ({unknown})"
    print(f"{method} ε={epsilon:.4f}: clean accuracy {acc}  success {_rate(k, m)} ({k} of the {m} {what})  "
          f"mean L∞ {r.linf.mean():.4f}  mean L2 {r.l2.mean():.4f}")
    _write(out, f"{method}.png", torch.cat([x.cpu(), r.images.cpu()]), names + [f"→ {p}" for p in r.pred.tolist()], len(names))


@_ARGS
def fooling(encoder: str, classes: list[int], confidence: float = 0.99, max_steps: int = 500, out: str = "visualize",
            encoder_weights: Optional[str] = None, encoder_kwargs: Optional[dict[str, Any]] = None,
            pretrained: bool = True, download: bool = False, device: str = "auto") -> None:
    """Fooling images (Nguyen et al. 2015): optimise noise until each class gets ≥ ``confidence``.

    Args:
        confidence: softmax probability to reach, in (0, 1).
        max_steps: optimisation steps at most (the run stops once every image is there).
    """
    from upconv.visualize.adversarial import fooling_images

    enc = cli_encoder(encoder, encoder_weights, encoder_kwargs, pretrained, download, device)
    r = fooling_images(enc, classes, confidence, max_steps)
    print(f"reached {confidence:.0%}: {int(r.success.sum())}/{len(classes)}")
    _write(out, "fooling.png", r.images, [f"class {c} p={p:.3f}" for c, p in zip(classes, r.confidence.tolist())])


COMMANDS = {"class": class_, "channel": channel, "neuron": neuron, "prototype": prototype, "dream": dream,
            "gradcam": gradcam, "saliency": saliency, "similar": similar, "adversarial": adversarial, "fooling": fooling}
