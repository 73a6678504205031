"""Distance correlation (Székely, Rizzo & Bakirov, Ann. Statist. 2007), the leakage measure NoPeek minimises
(Vepakomma et al., "NoPeek: Information leakage reduction to share activations in distributed deep learning",
ICDMW 2020).

For a batch of n pairs (x_i, z_i): a_ij = ‖x_i − x_j‖, b_ij = ‖z_i − z_j‖, each matrix double-centred
(A = a − row means − column means + grand mean); dCov²(X, Z) = mean(A ∘ B), dVar²(X) = mean(A ∘ A), and
dCor(X, Z) = sqrt(dCov² / sqrt(dVar²(X) · dVar²(Z))) ∈ [0, 1], 0 exactly when the two are independent (in the
population). This is the V-statistic NoPeek uses; it is differentiable, so it can be a loss term.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _distances(v: Tensor) -> Tensor:
    """Pairwise Euclidean distances (n, n) of rows (n, d); exact zeros on the diagonal, finite gradients."""
    sq = v.pow(2).sum(1)  # (n,)
    d2 = (sq[:, None] + sq[None, :] - 2 * v @ v.T).clamp_min(1e-12)  # (n, n)
    return d2.sqrt() * (1 - torch.eye(len(v), device=v.device, dtype=v.dtype))


def _centred(d: Tensor) -> Tensor:
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


def distance_correlation(x: Tensor, z: Tensor) -> Tensor:
    """dCor between two batches of the same length (n, ...) each, flattened per sample; a scalar in [0, 1]."""
    if len(x) != len(z) or len(x) < 2:
        raise ValueError(
            f"distance correlation needs two batches of the same length ≥ 2; got {len(x)} and {len(z)} samples"
        )
    a, b = _centred(_distances(x.flatten(1))), _centred(_distances(z.flatten(1)))  # (n, n) each
    dcov2 = (a * b).mean()
    dvar2 = (a * a).mean() * (b * b).mean()
    return (dcov2 / dvar2.sqrt().clamp_min(1e-24)).clamp_min(1e-12).sqrt()  # finite gradient at 0
