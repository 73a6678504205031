"""Reconstruction-fidelity metrics: per-image figures as pure functions, plus a seeded bootstrap.

Every metric takes reconstructions and originals as float images in [0, 1], shape (B, C, H, W), and returns
one value per image, shape (B,). Aggregation (mean, 95 % interval, n) happens once, in ``bootstrap_ci``, so
every figure of a report is summarised the same way.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SSIM_DEFINITION = (
    "per image, structural similarity (Wang et al., IEEE TIP 2004) on [0, 1] images: Gaussian window 11×11, "
    "σ = 1.5, K1 = 0.01, K2 = 0.03, data range 1, population (not sample) covariance, averaged over the "
    "valid windows only (those lying wholly inside the image; no padding) and over channels — as scikit-image's "
    "structural_similarity with gaussian_weights=True, use_sample_covariance=False"
)

PSNR_CAP_DB = 100.0
"""Per-image PSNR is capped here: an exact reconstruction has infinite PSNR, which would make the mean
infinite. 100 dB is an MSE of 1e-10 on [0, 1] images, far below 8-bit quantisation (about 59 dB)."""

LPIPS_BACKBONE = "alexnet-owt-7be5be79.pth"  # basename of torchvision's AlexNet_Weights.IMAGENET1K_V1.url
LPIPS_BACKBONE_URL = "https://download.pytorch.org/models/" + LPIPS_BACKBONE


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(
            f"expected two image batches of the same shape (B, C, H, W); got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image mean squared error over all pixels and channels, (B,)."""
    _check_pair(pred, target)
    return (pred.float() - target.float()).pow(2).flatten(1).mean(1)


def psnr(pred: Tensor, target: Tensor, cap_db: float = PSNR_CAP_DB) -> Tensor:
    """Per-image PSNR in dB for data range 1 (torchmetrics), 10·log10(1 / MSE), capped at ``cap_db``, (B,)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check_pair(pred, target)
    value = peak_signal_noise_ratio(
        pred.float(), target.float(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )  # (B,), +inf where pred == target
    return value.clamp(max=cap_db)


SSIM_SIGMA, SSIM_TRUNCATE, SSIM_K1, SSIM_K2 = 1.5, 3.5, 0.01, 0.03
SSIM_WINDOW = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1  # 11 taps, as scipy.ndimage builds the Gaussian


def _gaussian_taps(dtype: torch.dtype, device: torch.device) -> Tensor:
    """The normalised 1-D Gaussian (σ 1.5, radius int(3.5σ + 0.5) = 5) that scipy.ndimage.gaussian_filter uses."""
    r = SSIM_WINDOW // 2
    t = torch.arange(-r, r + 1, dtype=dtype, device=device)  # (11,)
    g = torch.exp(-0.5 * (t / SSIM_SIGMA) ** 2)
    return g / g.sum()


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image SSIM of Wang et al. (IEEE TIP 2004, eq. 13 and their reference code), (B,).

    Gaussian window of 11 taps, σ 1.5 (truncated at 3.5σ as scikit-image builds it), K1 0.01, K2 0.03,
    data range 1, population (not sample) variances and covariance; the SSIM map is computed only where
    the window lies wholly inside the image (no padding) and averaged over those positions and over the
    channels. This is scikit-image's ``structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=0)`` (tested to 1e-6), computed here in
    float64 so the figure does not depend on the installed torchmetrics (which, since 1.4.2, averages
    over a reflect-padded border instead). Returns float32 (float64 for float64 input).
    """
    _check_pair(pred, target)
    h, w = pred.shape[-2:]
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels (its Gaussian window); "
            f"got {h}×{w}. Evaluate at a larger image size, or leave SSIM out for images this small"
        )
    dtype = torch.float32 if pred.device.type == "mps" else torch.float64  # MPS has no float64
    x, y = pred.to(dtype), target.to(dtype)  # (B, C, H, W)
    b, c = x.shape[:2]
    stats = torch.cat([x, y, x * x, y * y, x * y], 1)  # (B, 5C, H, W)
    g = _gaussian_taps(dtype, x.device)
    # Separable Gaussian, valid positions only: (B, 5C, H-10, W-10).
    stats = F.conv2d(stats, g.view(1, 1, -1, 1).expand(5 * c, 1, -1, 1), groups=5 * c)
    stats = F.conv2d(stats, g.view(1, 1, 1, -1).expand(5 * c, 1, 1, -1), groups=5 * c)
    mx, my, mxx, myy, mxy = stats.split(c, dim=1)  # each (B, C, H-10, W-10)
    vx, vy, vxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # (K·L)² with data range L = 1
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    # (B,): every channel has the same number of windows; float32 out unless the input was float64.
    return s.flatten(1).mean(1).to(torch.promote_types(pred.dtype, torch.float32))


def mean_pairwise_distance(images: Tensor, chunk: int = 1024) -> Tensor:
    """Mean Euclidean distance between distinct images, mean_{i<j} ‖x_i − x_j‖₂, as a float64 scalar.

    Exact over all n(n−1)/2 pairs, computed in float64 blocks (the ‖a‖² + ‖b‖² − 2ab form loses digits in
    float32 when images are close).
    """
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"the normalised reconstruction error needs at least 2 images; got {n}")
    flat = images.flatten(1).double()  # (N, D)
    sq = flat.pow(2).sum(1)  # (N,)
    total = torch.zeros((), dtype=torch.float64, device=images.device)
    for start in range(0, n, chunk):
        block = flat[start : start + chunk]  # (b, D)
        d2 = sq[start : start + chunk, None] + sq[None, :] - 2 * block @ flat.T  # (b, N)
        total += d2.clamp_min(0).sqrt().sum()  # includes the zero diagonal, and each pair twice
    return total / (n * (n - 1))


def db_error(pred: Tensor, target: Tensor, mean_distance: Tensor | float) -> Tensor:
    """Dosovitskiy & Brox (CVPR 2016) normalised reconstruction error, per image, (B,):

    ‖x̂_i − x_i‖₂ / d̄, with d̄ = mean_{i<j} ‖x_i − x_j‖₂ over the evaluated originals
    (``mean_pairwise_distance``): the error relative to the typical distance between two images, so 1 is
    as far as a random other image of the data set.
    """
    _check_pair(pred, target)
    dist = (pred.double() - target.double()).flatten(1).norm(dim=1)  # (B,)
    return dist / torch.as_tensor(mean_distance, dtype=torch.float64, device=dist.device)


def relative_feature_error(
    pred_features: Tensor, target_features: Tensor, squared: bool = False, floor: float = 1e-12
) -> Tensor:
    """Per-image relative feature distance ‖a − b‖₂ / ‖b‖₂, or with ``squared`` ‖a − b‖₂² / ‖b‖₂² (Mahendran &
    Vedaldi 2015, eq. 3's data term), (B,), in the inputs' own precision and differentiable.

    ``floor`` bounds the denominator (‖b‖ or ‖b‖²) from below, so an all-zero target (a dead ReLU layer) gives
    a large but finite value rather than NaN. The squared form is computed without a square root, so its
    gradient stays finite where a = b.
    """
    if pred_features.shape != target_features.shape:
        raise ValueError(f"feature shapes differ: {tuple(pred_features.shape)} vs {tuple(target_features.shape)}")
    if squared:
        diff = (pred_features - target_features).flatten(1).pow(2).sum(1)  # (B,)
        return diff / target_features.flatten(1).pow(2).sum(1).clamp_min(floor)
    diff = (pred_features - target_features).flatten(1).norm(dim=1)  # (B,)
    return diff / target_features.flatten(1).norm(dim=1).clamp_min(floor)


def feature_error(pred_features: Tensor, target_features: Tensor) -> Tensor:
    """Per-image ‖Φ_L(x̂) − Φ_L(x)‖₂ / ‖Φ_L(x)‖₂ (not squared) in float64, (B,): how well x̂ explains the
    features (``relative_feature_error``; its floor keeps an all-zero target finite)."""
    return relative_feature_error(pred_features.double(), target_features.double())


def class_agreement(pred_logits: Tensor, target_logits: Tensor) -> Tensor:
    """Per-image 1.0 where the encoder gives the reconstruction the class it gave the original, else 0.0, (B,)."""
    return (pred_logits.argmax(1) == target_logits.argmax(1)).double()


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-image 1.0 where argmax of ``logits`` equals the data set label, else 0.0, (B,)."""
    return (logits.argmax(1) == labels.to(logits.device)).double()


# ---------------------------------------------------------------------- LPIPS
def lpips_backbone_path() -> str:
    """Where LPIPS's AlexNet backbone must be: ``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", LPIPS_BACKBONE)


def load_lpips() -> tuple[nn.Module | None, str | None]:
    """LPIPS v0.1 (Zhang et al. 2018, AlexNet trunk) built offline, or ``(None, reason)`` when it cannot be.

    The lpips package's linear calibration weights ship inside the package; the AlexNet trunk is read from
    the local torch cache with ``weights_only=True``. Nothing is ever downloaded, and a trunk with random
    weights is never returned: without the cached file the metric is skipped and the reason says which
    file to place where.
    """
    path = lpips_backbone_path()
    if not os.path.isfile(path):
        return None, (f"LPIPS skipped: place {LPIPS_BACKBONE} (from {LPIPS_BACKBONE_URL}) at {path} to compute it")
    try:
        import lpips
    except ImportError:
        return None, "LPIPS skipped: the lpips package is not installed (pip install 'upconv[lpips]')"
    import warnings

    with warnings.catch_warnings():  # lpips passes torchvision's deprecated ``pretrained=False``
        warnings.simplefilter("ignore")
        # pnet_rand=True stops lpips from asking torchvision to download the trunk; we fill it in below.
        model = lpips.LPIPS(pretrained=True, net="alex", pnet_rand=True, verbose=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    # lpips splits torchvision's ``features`` Sequential into slices keeping the original indices:
    # slice1 = 0–1, slice2 = 2–4, slice3 = 5–7, slice4 = 8–9, slice5 = 10–11.
    slices = [(1, range(0, 2)), (2, range(2, 5)), (3, range(5, 8)), (4, range(8, 10)), (5, range(10, 12))]
    trunk = {}
    for k, idx in slices:
        for i in idx:
            for p in ("weight", "bias"):
                if f"features.{i}.{p}" in state:
                    trunk[f"slice{k}.{i}.{p}"] = state[f"features.{i}.{p}"]
    try:
        model.net.load_state_dict(trunk, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path} is not a torchvision AlexNet state dict usable by LPIPS: {e}") from e
    return model.eval().requires_grad_(False), None


def lpips_distance(model: nn.Module, pred: Tensor, target: Tensor) -> Tensor:
    """Per-image LPIPS distance for images in [0, 1] (rescaled to [−1, 1] as LPIPS expects), (B,)."""
    _check_pair(pred, target)
    with torch.no_grad():
        return model(pred.float(), target.float(), normalize=True).flatten().double()  # (B,)


# ---------------------------------------------------------------------- aggregation
def bootstrap_ci(values: Tensor, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` (n,) and its percentile-bootstrap confidence interval (Efron & Tibshirani 1993).

    ``n_boot`` resamples of n values with replacement, drawn from a generator seeded with ``seed`` (so two
    metrics of the same images share resamples, and a report is reproducible). Returns (mean, low, high);
    with n = 1 the interval collapses to the value.
    """
    values = values.detach().double().flatten().cpu()
    n = values.numel()
    if n == 0:
        raise ValueError("cannot summarise an empty set of values")
    if not torch.isfinite(values).all():
        raise ValueError("non-finite per-image values cannot be summarised; check the reconstructions")
    mean = float(values.mean())
    if n == 1 or n_boot <= 0:
        return mean, mean, mean
    g = torch.Generator().manual_seed(seed)
    means = []
    for start in range(0, n_boot, 100):  # blocks bound memory at 100·n indices
        idx = torch.randint(0, n, (min(100, n_boot - start), n), generator=g)  # (b, n)
        means.append(values[idx].mean(1))
    means = torch.cat(means)  # (n_boot,)
    alpha = (1 - level) / 2
    lo, hi = torch.quantile(means, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return mean, lo, hi
