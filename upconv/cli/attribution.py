"""``upconv visualize gradcam|saliency|similar|adversarial|fooling``: what the net attends to in an image, which
training images it finds alike, and where it breaks (adversarial and fooling images). Options and outputs
as in ``upconv.cli.visualize``, whose shared arguments and image loading these commands use."""

from __future__ import annotations

import torch

from upconv.cli.visualize import image_args, write_grid
from upconv.core.files import check_out
from upconv.data.folders import folder_classes, load_images
from upconv.nets.spec import EncoderSpec


@image_args
def gradcam(
    encoder: EncoderSpec,
    images: list[str],
    layer: str,
    classes: list[int] | None = None,
    guided: bool = True,
    per_folder: int | None = 16,
    out: str = "runs/visualize",
    overwrite: bool = False,
    device: str = "auto",
) -> None:
    """Grad-CAM overlays (Selvaraju et al. 2017), and guided Grad-CAM, for the predicted class or ``classes``.
    Each image is titled with its class's name when the ImageFolder given has one folder per class of the
    encoder (assumed in the encoder's order), else with the class index.

    Args:
        layer: spatial layer whose maps are weighted (e.g. the last convolution).
        classes: one class for all images, or one per image (default: each image's predicted class).
        guided: also draw guided Grad-CAM (guided backpropagation × Grad-CAM).
    """
    check_out(out, overwrite)  # before any work: two runs' figures never mix in one folder
    from upconv.core.figures import overlay, signed_to_image
    from upconv.visualize.gradcam import class_labels, grad_cam, guided_grad_cam

    enc = encoder.build(device)
    x, _, names = load_images(images, enc.image_size, per_folder, enc.channels)
    x = x.to(enc.device)
    with torch.no_grad():
        logits = enc.logits(x).flatten(1)  # (N, K)
    pred = logits.argmax(1) if classes is None else torch.as_tensor(classes).to(x.device).expand(len(x))
    rows = [x.cpu(), overlay(x, grad_cam(enc, x, layer, pred))]
    if guided:
        rows.append(signed_to_image(guided_grad_cam(enc, x, layer, pred)).cpu())
    labels = class_labels(pred.tolist(), folder_classes(images), logits.shape[1])  # names when the folder has them
    titles = [f"{n} → {c}" for n, c in zip(names, labels)] * len(rows)
    write_grid(out, "gradcam.png", torch.cat(rows), titles, len(names), overwrite=overwrite)


@image_args
def saliency(
    encoder: EncoderSpec,
    images: list[str],
    classes: list[int] | None = None,
    per_folder: int | None = 16,
    out: str = "runs/visualize",
    overwrite: bool = False,
    device: str = "auto",
) -> None:
    """Simonyan et al. (2014) saliency maps for the predicted class, or ``classes``.

    Args:
        classes: one class for all images, or one per image (default: each image's predicted class).
    """
    check_out(out, overwrite)  # before any work: two runs' figures never mix in one folder
    from upconv.core.figures import overlay
    from upconv.visualize.gradcam import saliency as saliency_map

    enc = encoder.build(device)
    x, _, names = load_images(images, enc.image_size, per_folder, enc.channels)
    m = saliency_map(enc, x.to(enc.device), classes)
    m = m / m.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    gray = m[:, None].expand(-1, 3, -1, -1).cpu()
    write_grid(out, "saliency.png", torch.cat([x, gray, overlay(x, m)]), names * 3, len(names), overwrite=overwrite)


@image_args
def similar(
    encoder: EncoderSpec,
    root: str,
    images: list[str],
    layer: str,
    k: int = 5,
    metric: str = "cosine",
    per_folder: int | None = None,
    out: str = "runs/visualize",
    overwrite: bool = False,
    device: str = "auto",
) -> None:
    """Nearest training images: index the ImageFolder tree ``root`` at ``layer``, then show each query with its top-k
    neighbours, their scores, and nn_ratio (≈1 typical, ≫1 unlike the data, 0 an exact copy).

    Args:
        root: the data folder, an ImageFolder tree to index (the "training set").
        images: query image files and/or ImageFolder directories.
        layer: layer whose features are compared.
        k: neighbours shown per query.
        metric: cosine or euclidean.
        per_folder: images indexed from root, evenly spaced over its files (null: all).
    """
    check_out(out, overwrite)  # before any work: two runs' figures never mix in one folder
    from upconv.visualize.similar import FeatureIndex

    enc = encoder.build(device)
    train, _, train_names = load_images([root], enc.image_size, per_folder, enc.channels)
    q, _, names = load_images(images, enc.image_size, None, enc.channels)
    res = FeatureIndex(enc, layer, metric).add(train).search(q, k)
    grid, titles = [], []
    for i in range(len(q)):
        print(
            f"{names[i]}: nn_ratio {res.nn_ratio[i]:.3f}  "
            + "  ".join(f"{train_names[j]} {s:.3f}" for j, s in zip(res.indices[i].tolist(), res.scores[i].tolist()))
        )
        grid += [q[i], *train[res.indices[i].cpu()]]
        titles += [f"query r={res.nn_ratio[i]:.2f}", *[f"{s:.3f}" for s in res.scores[i].tolist()]]
    write_grid(out, "similar.png", torch.stack(grid), titles, k + 1, overwrite=overwrite)


def _rate(k: int, n: int) -> str:
    return f"{k / n:.1%}" if n else "n/a"


@image_args
def adversarial(
    encoder: EncoderSpec,
    images: list[str],
    epsilon: float = 8 / 255,
    method: str = "pgd",
    steps: int = 10,
    labels: list[int] | None = None,
    targeted: bool = False,
    per_folder: int | None = 16,
    out: str = "runs/visualize",
    overwrite: bool = False,
    device: str = "auto",
) -> None:
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
    check_out(out, overwrite)  # before any work: two runs' figures never mix in one folder
    from upconv.visualize.adversarial import fgsm, pgd

    if method not in ("fgsm", "pgd"):
        raise ValueError(f"unknown method '{method}'; choose fgsm or pgd")
    if targeted and labels is None:
        raise ValueError("a targeted attack needs --labels: the target class, one for all images or one per image")
    enc = encoder.build(device)
    x, folder, names = load_images(images, enc.image_size, per_folder, enc.channels)
    x = x.to(enc.device)
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
    print(
        f"{method} ε={epsilon:.4f}: clean accuracy {acc}  success {_rate(k, m)} ({k} of the {m} {what})  "
        f"mean L∞ {r.linf.mean():.4f}  mean L2 {r.l2.mean():.4f}"
    )
    write_grid(
        out,
        f"{method}.png",
        torch.cat([x.cpu(), r.images.cpu()]),
        names + [f"→ {p}" for p in r.pred.tolist()],
        len(names),
        overwrite=overwrite,
    )


@image_args
def fooling(
    encoder: EncoderSpec,
    classes: list[int],
    confidence: float = 0.99,
    max_steps: int = 500,
    out: str = "runs/visualize",
    overwrite: bool = False,
    device: str = "auto",
) -> None:
    """Fooling images (Nguyen et al. 2015): optimise noise until each class gets ≥ ``confidence``.

    Args:
        confidence: softmax probability to reach, in (0, 1).
        max_steps: optimisation steps at most (the run stops once every image is there).
    """
    check_out(out, overwrite)  # before any work: two runs' figures never mix in one folder
    from upconv.visualize.adversarial import fooling_images

    enc = encoder.build(device)
    r = fooling_images(enc, classes, confidence, max_steps)
    print(f"reached {confidence:.0%}: {int(r.success.sum())}/{len(classes)}")
    write_grid(
        out,
        "fooling.png",
        r.images,
        [f"class {c} p={p:.3f}" for c, p in zip(classes, r.confidence.tolist())],
        overwrite=overwrite,
    )


COMMANDS = {
    "gradcam": gradcam,
    "saliency": saliency,
    "similar": similar,
    "adversarial": adversarial,
    "fooling": fooling,
}
