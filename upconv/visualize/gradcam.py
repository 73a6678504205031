"""Gradient maps: saliency (Simonyan et al. 2014, sec. 3), Grad-CAM and guided Grad-CAM (Selvaraju et al.
2017), guided backpropagation (Springenberg et al. 2015). Each takes images (B, C, H, W) in [0, 1] and the
class per image (the predicted class when None); scores are the pre-softmax class scores y^c.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from upconv.nets.encoder import Encoder
from upconv.optim.indices import check_indices


def _input(encoder: Encoder, images: Tensor) -> Tensor:
    encoder.check_images(images, finite=True)
    # A fresh leaf: the caller's tensor is never given requires_grad or a .grad.
    return images.detach().to(encoder.device).clone().requires_grad_(True)  # (B, C, H, W)


def class_score(encoder: Encoder, logits: Tensor, classes: int | Sequence[int] | None) -> tuple[Tensor, Tensor]:
    """y^c per image (B,) and the class indices used (B,)."""
    b, k = logits.shape[0], logits.flatten(1).shape[1]
    if classes is None:
        idx = logits.detach().flatten(1).argmax(1)
    else:
        idx = check_indices(classes, k, "class", encoder.name, batch=b).to(logits.device)  # (B,)
    return logits.flatten(1).gather(1, idx[:, None])[:, 0], idx


def class_labels(indices: Sequence[int], class_names: Sequence[str] | None, n_classes: int) -> list[str]:
    """A name per class index, from ``class_names`` when there is one per class of the encoder (its ``n_classes``
    outputs, assumed in that order); the index itself otherwise."""
    named = class_names is not None and len(class_names) == n_classes
    return [str(class_names[i]) if named else str(i) for i in indices]


def saliency(encoder: Encoder, images: Tensor, classes: int | Sequence[int] | None = None) -> Tensor:
    """Simonyan et al. (2014) eq. 4 image-specific saliency: M_ij = max_c |∂y^c/∂I_{c,ij}| (B, H, W),
    the gradient taken w.r.t. the [0, 1] image."""
    x = _input(encoder, images)
    score, _ = class_score(encoder, encoder.logits(x), classes)
    (g,) = torch.autograd.grad(score.sum(), x)  # (B, C, H, W); the sum keeps images independent
    return g.abs().amax(1)  # (B, H, W)


def grad_cam(
    encoder: Encoder,
    images: Tensor,
    layer: str,
    classes: int | Sequence[int] | None = None,
    *,
    upsample: bool = True,
    normalize: bool = True,
) -> Tensor:
    """Selvaraju et al. (2017) eqs. 1-2: α_k = mean_ij ∂y^c/∂A^k_ij, L = ReLU(Σ_k α_k A^k).

    Returns (B, H, W) at the image size (bilinear) or, with ``upsample=False``, at the layer's size;
    ``normalize`` divides each map by its maximum.
    """
    layer = encoder.resolve(layer)[0]
    if not encoder.layer(layer).spatial:
        spatial = [i.name for i in encoder.layer_table if i.spatial]
        raise ValueError(
            f"Grad-CAM needs a spatial (C, H, W) layer; {layer} is {encoder.layer(layer).shape}. "
            f"Choose one of: {', '.join(spatial)}"
        )
    x = _input(encoder, images)
    last = encoder.layers[-1]
    out = encoder(x, [layer, last])  # one forward pass gives both A and y
    score, _ = class_score(encoder, out[last], classes)
    a = out[layer]  # (B, K, h, w)
    (g,) = torch.autograd.grad(score.sum(), a)  # (B, K, h, w)
    cam = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1)).detach()  # (B, h, w)
    if upsample:
        cam = F.interpolate(cam[:, None], size=encoder.image_size, mode="bilinear", align_corners=False)[:, 0]
    if normalize:
        cam = cam / cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return cam  # (B, H, W)


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[None]:
    """Within the block, every ``nn.ReLU`` of ``model`` passes back only positive gradients (Springenberg
    et al. 2015). The hooks are removed on exit, error or not. ReLUs called as functions are not seen."""
    handles = []
    try:
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                handles.append(m.register_full_backward_hook(lambda _m, gi, _go: (gi[0].clamp(min=0),)))
        if not handles:
            raise ValueError("guided backpropagation found no nn.ReLU modules in the model")
        yield
    finally:
        for h in handles:
            h.remove()


def guided_backprop(encoder: Encoder, images: Tensor, classes: int | Sequence[int] | None = None) -> Tensor:
    """Guided backpropagation of y^c to the image: (B, C, H, W)."""
    x = _input(encoder, images)
    with guided_relus(encoder.model):
        score, _ = class_score(encoder, encoder.logits(x), classes)
        (g,) = torch.autograd.grad(score.sum(), x)
    return g  # (B, C, H, W)


def guided_grad_cam(encoder: Encoder, images: Tensor, layer: str, classes: int | Sequence[int] | None = None) -> Tensor:
    """Selvaraju et al. (2017) sec. 3.1: guided backprop × the upsampled Grad-CAM map, (B, C, H, W)."""
    encoder.check_images(images, finite=True)
    x = images.detach()
    if classes is None:  # fix the class once so both factors explain the same score
        with torch.no_grad():
            classes = encoder.logits(x.to(encoder.device)).flatten(1).argmax(1)
    cam = grad_cam(encoder, x, layer, classes, upsample=True, normalize=False)  # (B, H, W)
    return guided_backprop(encoder, x, classes) * cam[:, None]
