"""``upconv visualize <method>``: each subcommand runs one method and writes PNG grids into ``out``.

Image inputs are image files or ImageFolder directories (``root/<class>/*.png|jpg``), resized to the
encoder's input size; ImageFolder class indices serve as labels where a method needs them.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from ..encoders import Encoder, build_encoder
from .recipe import Recipe

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _encoder(encoder: str, weights: Optional[str], pretrained: bool, device: str) -> Encoder:
    return build_encoder(encoder, weights, pretrained=pretrained).to(device)


def load_images(inputs: list[str], size: tuple[int, int], limit: Optional[int] = None,
                channels: int = 3) -> tuple[torch.Tensor, Optional[torch.Tensor], list[str]]:
    """Images (N, C, H, W) in [0, 1], their ImageFolder labels (None for plain files) and names."""
    from PIL import Image
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    mode = "L" if channels == 1 else "RGB"
    tf = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor()])
    images, labels, names = [], [], []
    for path in inputs:
        if os.path.isdir(path):
            ds = ImageFolder(path, transform=tf, loader=lambda p: Image.open(p).convert(mode))
            n = len(ds) if limit is None else min(limit, len(ds))
            # Evenly spaced picks so a small limit still covers every class folder.
            for i in torch.linspace(0, len(ds) - 1, n).round().long().unique().tolist():
                x, y = ds[i]
                images.append(x), labels.append(y), names.append(os.path.relpath(ds.samples[i][0], path))
        elif os.path.isfile(path) and path.lower().endswith(IMAGE_EXT):
            images.append(tf(Image.open(path).convert(mode))), labels.append(-1), names.append(os.path.basename(path))
        else:
            raise FileNotFoundError(f"{path}: expected an image file ({', '.join(IMAGE_EXT)}) or an ImageFolder directory")
    if not images:
        raise ValueError(f"no images found in {inputs}")
    y = torch.tensor(labels)
    return torch.stack(images), (None if (y < 0).any() else y), names


def _write(out: str, name: str, images: torch.Tensor, titles: list[str], ncol: int = 8) -> None:
    from .figures import save_grid

    print(save_grid(images, os.path.join(out, name), titles, ncol=ncol))


def class_(encoder: str, classes: list[int], starts: int = 1, recipe: Recipe = Recipe(), out: str = "visualize",
           weights: Optional[str] = None, pretrained: bool = True, device: str = "cpu") -> None:
    """Class-score maximisation (Simonyan et al. 2014): one image per class and random start.

    Args:
        encoder: alexnet_cifar, he2019_cifar, a torchvision model name or a class path.
        classes: class indices.
        starts: random starts per class.
        recipe: optimisation settings (parameterisation, steps, transforms, regularisers).
        out: output folder for PNGs.
        weights: state-dict or checkpoint file for the encoder.
        pretrained: torchvision models: ImageNet weights from the local cache.
        device: cpu or cuda.
    """
    from .activation import class_images

    v = class_images(_encoder(encoder, weights, pretrained, device), classes, starts, recipe)
    _write(out, "class.png", v.images, [f"{l} s={s:.2f}" for l, s in zip(v.labels, v.scores)])


def channel(encoder: str, layer: str, channels: list[int], recipe: Recipe = Recipe(), out: str = "visualize",
            weights: Optional[str] = None, pretrained: bool = True, device: str = "cpu") -> None:
    """What a channel responds to: maximise its mean activation (same arguments as ``class``; ``layer``
    from ``upconv layers``)."""
    from .activation import channel_images

    v = channel_images(_encoder(encoder, weights, pretrained, device), layer, channels, recipe)
    _write(out, f"channel_{v.labels[0].split(':')[0]}.png", v.images, v.labels)


def neuron(encoder: str, layer: str, channels: list[int], y: Optional[int] = None, x: Optional[int] = None,
           recipe: Recipe = Recipe(), out: str = "visualize", weights: Optional[str] = None, pretrained: bool = True,
           device: str = "cpu") -> None:
    """What one unit responds to: channel c at (y, x) of the layer's map (the centre by default)."""
    from .activation import neuron_images

    v = neuron_images(_encoder(encoder, weights, pretrained, device), layer, channels, y, x, recipe)
    _write(out, f"neuron_{v.labels[0].split(':')[0]}.png", v.images, v.labels)


def prototype(encoder: str, classes: Optional[list[int]] = None, recipe: Recipe = Recipe(), out: str = "visualize",
              weights: Optional[str] = None, pretrained: bool = True, device: str = "cpu") -> None:
    """Class prototypes: per class, maximise log p_c (that class up, all others down); all classes by default."""
    from .activation import prototypes

    v = prototypes(_encoder(encoder, weights, pretrained, device), classes, recipe)
    _write(out, "prototype.png", v.images, v.labels)


def dream(encoder: str, images: list[str], layer: str, octaves: int = 3, octave_scale: float = 1.4, steps: int = 10,
          lr: float = 0.01, jitter: int = 2, limit: Optional[int] = 16, out: str = "visualize",
          weights: Optional[str] = None, pretrained: bool = True, device: str = "cpu") -> None:
    """DeepDream on image files or an ImageFolder (``limit`` images from a folder); writes input and dream rows."""
    from .dream import deep_dream

    enc = _encoder(encoder, weights, pretrained, device)
    x, _, names = load_images(images, enc.image_size, limit, enc.channels)
    d = deep_dream(enc, x.to(device), layer, octaves=octaves, octave_scale=octave_scale, steps=steps, lr=lr, jitter=jitter)
    _write(out, "dream.png", torch.cat([x, d.cpu()]), names + [f"dream {layer}"] * len(names), len(names))


def gradcam(encoder: str, images: list[str], layer: str, classes: Optional[list[int]] = None, guided: bool = True,
            limit: Optional[int] = 16, out: str = "visualize", weights: Optional[str] = None, pretrained: bool = True,
            device: str = "cpu") -> None:
    """Grad-CAM overlays (and guided Grad-CAM with ``guided``) for the predicted class, or ``classes``."""
    from .figures import overlay, signed_to_image
    from .gradcam import grad_cam, guided_grad_cam

    enc = _encoder(encoder, weights, pretrained, device)
    x, _, names = load_images(images, enc.image_size, limit, enc.channels)
    x = x.to(device)
    with torch.no_grad():
        pred = enc.logits(x).flatten(1).argmax(1) if classes is None else torch.as_tensor(classes).to(device)
    rows = [x.cpu(), overlay(x, grad_cam(enc, x, layer, pred))]
    if guided:
        rows.append(signed_to_image(guided_grad_cam(enc, x, layer, pred)).cpu())
    _write(out, "gradcam.png", torch.cat(rows), [f"{n} → {c}" for n, c in zip(names, pred.tolist())] * len(rows), len(names))


def saliency(encoder: str, images: list[str], classes: Optional[list[int]] = None, limit: Optional[int] = 16,
             out: str = "visualize", weights: Optional[str] = None, pretrained: bool = True, device: str = "cpu") -> None:
    """Simonyan et al. (2014) saliency maps for the predicted class, or ``classes``."""
    from .figures import overlay
    from .gradcam import saliency as saliency_map

    enc = _encoder(encoder, weights, pretrained, device)
    x, _, names = load_images(images, enc.image_size, limit, enc.channels)
    m = saliency_map(enc, x.to(device), classes)
    m = m / m.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    gray = m[:, None].expand(-1, 3, -1, -1).cpu()
    _write(out, "saliency.png", torch.cat([x, gray, overlay(x, m)]), names * 3, len(names))


def similar(encoder: str, data: str, images: list[str], layer: str, k: int = 5, metric: str = "cosine",
            limit: Optional[int] = None, out: str = "visualize", weights: Optional[str] = None, pretrained: bool = True,
            device: str = "cpu") -> None:
    """Nearest training images: index ImageFolder ``data`` (first ``limit`` images) at ``layer``, then show
    each query with its top-k neighbours, their scores, and nn_ratio (≈1 typical, ≫1 unlike the data)."""
    from .similar import FeatureIndex

    enc = _encoder(encoder, weights, pretrained, device)
    train, _, train_names = load_images([data], enc.image_size, limit, enc.channels)
    q, _, names = load_images(images, enc.image_size, None, enc.channels)
    res = FeatureIndex(enc, layer, metric).add(train).search(q, k)
    grid, titles = [], []
    for i in range(len(q)):
        print(f"{names[i]}: nn_ratio {res.nn_ratio[i]:.3f}  " +
              "  ".join(f"{train_names[j]} {s:.3f}" for j, s in zip(res.indices[i].tolist(), res.scores[i].tolist())))
        grid += [q[i], *train[res.indices[i].cpu()]]
        titles += [f"query r={res.nn_ratio[i]:.2f}", *[f"{s:.3f}" for s in res.scores[i].tolist()]]
    from .figures import save_grid

    print(save_grid(torch.stack(grid), os.path.join(out, "similar.png"), titles, ncol=k + 1))


def adversarial(encoder: str, images: list[str], epsilon: float = 8 / 255, method: str = "pgd", steps: int = 10,
                labels: Optional[list[int]] = None, targeted: bool = False, limit: Optional[int] = 16,
                out: str = "visualize", weights: Optional[str] = None, pretrained: bool = True,
                device: str = "cpu") -> None:
    """FGSM or PGD (L∞, ``epsilon`` in [0, 1] units). Labels: ``labels``, else ImageFolder classes, else the
    clean predictions. Prints success rate and perturbation norms."""
    from .adversarial import fgsm, pgd

    if method not in ("fgsm", "pgd"):
        raise ValueError(f"unknown method '{method}'; choose fgsm or pgd")
    enc = _encoder(encoder, weights, pretrained, device)
    x, folder, names = load_images(images, enc.image_size, limit, enc.channels)
    x = x.to(device)
    if labels is None:
        with torch.no_grad():
            labels = folder if folder is not None else enc.logits(x).flatten(1).argmax(1)
    r = fgsm(enc, x, labels, epsilon, targeted) if method == "fgsm" else pgd(enc, x, labels, epsilon, steps, targeted=targeted)
    print(f"{method} ε={epsilon:.4f}: success {r.success_rate:.1%}  mean L∞ {r.linf.mean():.4f}  mean L2 {r.l2.mean():.4f}")
    _write(out, f"{method}.png", torch.cat([x.cpu(), r.images.cpu()]), names + [f"→ {p}" for p in r.pred.tolist()], len(names))


def fooling(encoder: str, classes: list[int], confidence: float = 0.99, max_steps: int = 500, out: str = "visualize",
            weights: Optional[str] = None, pretrained: bool = True, device: str = "cpu") -> None:
    """Fooling images (Nguyen et al. 2015): optimise noise until each class gets ≥ ``confidence``."""
    from .adversarial import fooling_images

    r = fooling_images(_encoder(encoder, weights, pretrained, device), classes, confidence, max_steps)
    print(f"reached {confidence:.0%}: {int(r.success.sum())}/{len(classes)}")
    _write(out, "fooling.png", r.images, [f"class {c} p={p:.3f}" for c, p in zip(classes, r.confidence.tolist())])


COMMANDS = {"class": class_, "channel": channel, "neuron": neuron, "prototype": prototype, "dream": dream,
            "gradcam": gradcam, "saliency": saliency, "similar": similar, "adversarial": adversarial, "fooling": fooling}
