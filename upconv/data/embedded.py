"""Images that ship with the package's dependencies: random crops of the colour photographs inside
scikit-image, one class per photograph — the offline default (no download)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.transforms import v2

EMBEDDED_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle",
)


def embedded_images(per_class: int, size: int, seed: int = 0) -> tuple[Tensor, Tensor, list[str]]:
    """Random crops of the colour photographs that ship inside scikit-image, one class per photograph.

    Crops cover 5–40 % of a photograph's shorter side squared, are resized to ``size``×``size`` with
    antialiasing and are deterministic for a seed. Returns (uint8 (N, 3, size, size), labels (N,), names).
    """
    import skimage.data

    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for k, name in enumerate(EMBEDDED_PHOTOS):
        photo = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
        photo = torch.from_numpy(photo[..., :3].copy()).permute(2, 0, 1)  # (3, H, W) uint8
        _, h, w = photo.shape
        sides = (torch.empty(per_class).uniform_(0.22, 0.63, generator=g) * min(h, w)).long()
        for s in sides.tolist():
            top = int(torch.randint(0, h - s + 1, (1,), generator=g))
            left = int(torch.randint(0, w - s + 1, (1,), generator=g))
            images.append(v2.functional.resized_crop(photo, top, left, s, s, [size, size], antialias=True))
            labels.append(k)
    return torch.stack(images), torch.tensor(labels), list(EMBEDDED_PHOTOS)
