"""No-information floors of a reconstruction figure, and the verdict on a figure that does not clear them.

A reconstruction that knows nothing of its image scores the **mean training image**; one that knows only
its class scores the **class-mean training image**. The depth report and the privacy report both carry them
as reference rows (so they live here, below both), so a layer's figure can never be read as "information
lost" (or "no leak") when its decoder simply failed: a row at or below the mean-image floor is flagged
beside its number, and one at or below the class-mean floor is marked as carrying no more than the class.

A method that reads the true image beyond its features (DeconvNet replays the image's own max-pool switches)
can clear those floors with features that carry nothing, so it has **its own floors** too: the same method with
the features replaced by nothing (a constant, another image's). Its row is judged against them by the paired
per-image PSNR difference (row − floor, same images): the row is flagged unless the low end of that difference's
95 % interval exceeds the half-width of the row's own PSNR interval — a gain the features add that is smaller
than the figure's own uncertainty cannot be read off the figure (DeconvNet at fc8 on the demo: +0.03 dB).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

MEAN_IMAGE = "floor: mean image"
CLASS_MEAN = "floor: class mean"
FLOOR_METHODS = (MEAN_IMAGE, CLASS_MEAN)
BELOW_FLOOR = "at or below the no-information floor (the mean training image)"
BELOW_CLASS = "at or below the class-mean floor (no more than the class)"
BELOW_OWN = "not above its own no-information floor"  # + " (<kind>, …)"


def own_floor_name(method: str, kind: str) -> str:
    """The row name of a method's own floor: ``floor: deconvnet, constant signal``."""
    return f"floor: {method}, {kind}"


def uninformative(verdict_: str | None) -> bool:
    """Whether a verdict says the figure does not measure the layer's information (a ⚠ in every report)."""
    return bool(verdict_) and (verdict_ == BELOW_FLOOR or verdict_.startswith(BELOW_OWN))


@dataclass
class Floors:
    """The mean image (C, H, W) and per-class mean images (K, C, H, W) of a set of training images."""

    mean: Tensor
    class_means: Tensor
    class_counts: Tensor  # (K,)
    n: int
    source: str

    @classmethod
    def from_batches(cls, batches: Iterable[tuple[Tensor, Tensor]], source: str, n_classes: int = 0) -> Floors:
        """Accumulate float images in [0, 1] (B, C, H, W) with labels (B,) in float64, batch by batch; the
        class count grows with the labels seen (at least ``n_classes``)."""
        total = sums = counts = None
        n = 0
        for x, y in batches:
            x, y = x.double().cpu(), y.long().cpu()  # (B, C, H, W), (B,)
            if total is None:
                total = torch.zeros(x.shape[1:], dtype=torch.float64)
                sums = torch.zeros(0, *x.shape[1:], dtype=torch.float64)
                counts = torch.zeros(0, dtype=torch.float64)
            k = max(n_classes, int(y.max()) + 1 if len(y) else 0)
            if k > len(counts):
                sums = torch.cat([sums, sums.new_zeros(k - len(sums), *sums.shape[1:])])
                counts = torch.cat([counts, counts.new_zeros(k - len(counts))])
            total += x.sum(0)
            sums.index_add_(0, y, x)
            counts.index_add_(0, y, torch.ones(len(y), dtype=torch.float64))
            n += len(x)
        if n == 0:
            raise ValueError(f"no images to compute the no-information floors from ({source})")
        mean = total / n  # (C, H, W)
        present = (counts > 0).view(-1, 1, 1, 1)
        class_means = torch.where(present, sums / counts.clamp_min(1).view(-1, 1, 1, 1), mean)  # (K, C, H, W)
        return cls(mean.float(), class_means.float(), counts.long(), n, source)

    def reconstruct(self, method: str, labels: Tensor) -> Tensor:
        """What a floor "reconstructs" for images with these labels: (B, C, H, W)."""
        labels = labels.long().cpu()
        if method == MEAN_IMAGE:
            return self.mean.expand(len(labels), *self.mean.shape).clone()
        if method == CLASS_MEAN:
            if labels.numel() and (labels.min() < 0 or labels.max() >= len(self.class_means)):
                raise ValueError(
                    f"labels must be class indices in 0..{len(self.class_means) - 1} for the class-mean "
                    f"floor; got {labels.min().item()}..{labels.max().item()}"
                )
            return self.class_means[labels]
        raise ValueError(f"unknown floor '{method}'; choose {MEAN_IMAGE!r} or {CLASS_MEAN!r}")


def verdict(
    psnr: float | None,
    floor_psnr: dict[str, float],
    own_margins: dict[str, float] | None = None,
    tolerance: float = 0.0,
) -> str | None:
    """A row's standing against the floors by mean PSNR: ``BELOW_FLOOR``, ``BELOW_OWN (kinds)``, ``BELOW_CLASS``
    or None. ``own_margins``: per kind of the method's own floor, the lower end of the 95 % interval of the
    paired per-image PSNR difference (row − floor); at or below ``tolerance`` (the half-width of the row's own
    PSNR interval) the row is not above that floor."""
    if psnr is None:
        return None
    if MEAN_IMAGE in floor_psnr and psnr <= floor_psnr[MEAN_IMAGE]:
        return BELOW_FLOOR
    beaten = [kind for kind, low in (own_margins or {}).items() if low <= tolerance]
    if beaten:
        return f"{BELOW_OWN} ({', '.join(beaten)})"
    if CLASS_MEAN in floor_psnr and psnr <= floor_psnr[CLASS_MEAN]:
        return BELOW_CLASS
    return None
