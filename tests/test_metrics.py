"""Metric values on cases computable by hand, the bootstrap, and the offline LPIPS loading path."""

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from upconv.core import metrics as M
from upconv.nets.encoder import Encoder


def _images(n=4, lo=0.2, hi=0.8):
    return torch.rand(n, 3, 16, 16) * (hi - lo) + lo


def test_identical_images_give_capped_psnr_unit_ssim_and_zero_errors():
    x = _images()
    assert torch.equal(M.mse(x, x), torch.zeros(4))
    # Exact reconstructions sit at the documented cap, not at infinity.
    assert torch.equal(M.psnr(x, x), torch.full((4,), M.PSNR_CAP_DB))
    assert torch.allclose(M.ssim(x, x), torch.ones(4), atol=1e-5)
    assert torch.equal(M.db_error(x, x, 3.0), torch.zeros(4, dtype=torch.float64))
    assert torch.equal(M.feature_error(x, x), torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("offset", [0.1, 0.05, -0.02])
def test_uniform_offset_matches_psnr_formula(offset):
    x = _images()  # in [0.2, 0.8], so the offset never leaves [0, 1]
    y = x + offset
    assert torch.allclose(M.mse(y, x), torch.full((4,), offset**2), rtol=1e-4)
    expected = 10 * math.log10(1 / offset**2)
    assert torch.allclose(M.psnr(y, x), torch.full((4,), expected), atol=1e-3)
    assert (M.ssim(y, x) < 1).all()


def test_per_image_mse_averages_to_torchmetrics_mse():
    from torchmetrics.functional import mean_squared_error

    x, y = _images(), _images()
    assert torch.allclose(M.mse(y, x).mean(), mean_squared_error(y, x), rtol=1e-5)


def _skimage_ssim(pred, target):
    """Wang et al.'s SSIM as scikit-image computes it, one image at a time (an independent implementation)."""
    from skimage.metrics import structural_similarity

    return torch.tensor(
        [
            structural_similarity(
                p.double().numpy(),
                t.double().numpy(),
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1,
                channel_axis=0,
            )
            for p, t in zip(pred, target)
        ],
        dtype=torch.float64,
    )


def _structured_pairs():
    """(reconstructions, originals) that stress the border: photographs, edges, ramps, flat regions."""
    from skimage import data, transform

    g = torch.Generator().manual_seed(7)
    photo = torch.from_numpy(transform.resize(data.astronaut(), (32, 32), anti_aliasing=True)).permute(2, 0, 1)
    coffee = torch.from_numpy(transform.resize(data.coffee(), (32, 32), anti_aliasing=True)).permute(2, 0, 1)
    ramp = torch.linspace(0, 1, 32).view(1, 1, 32).expand(3, 32, 32)
    checker = ((torch.arange(32).view(-1, 1) // 4 + torch.arange(32).view(1, -1) // 4) % 2).float().expand(3, -1, -1)
    border = torch.full((3, 32, 32), 0.5)
    border[:, :4], border[:, -3:] = 0.0, 1.0  # all the structure sits where padding would be
    x = torch.stack([photo, coffee, ramp, checker, border]).float()  # (5, 3, 32, 32)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    shifted = x.roll(3, dims=-1)
    dimmed = 0.6 * x + 0.1
    return torch.cat([noisy, shifted, dimmed]), torch.cat([x, x, x])


@pytest.mark.parametrize("shape", [(6, 3, 32, 32), (3, 1, 11, 11), (2, 3, 20, 37)])
def test_ssim_matches_scikit_image_on_random_pairs(shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g)
    y = (x + 0.2 * torch.randn(shape, generator=g)).clamp(0, 1)
    z = torch.rand(shape, generator=g)  # unrelated image: SSIM near 0
    for pred in (y, z):
        assert torch.allclose(M.ssim(pred, x).double(), _skimage_ssim(pred, x), rtol=0, atol=1e-6)


def test_ssim_matches_scikit_image_on_structured_pairs():
    pred, target = _structured_pairs()
    assert torch.allclose(M.ssim(pred, target).double(), _skimage_ssim(pred, target), rtol=0, atol=1e-6)
    # float64 input keeps float64 throughout: agreement to rounding.
    assert torch.allclose(M.ssim(pred.double(), target.double()), _skimage_ssim(pred, target), rtol=0, atol=1e-12)


def test_ssim_is_one_for_identical_images_and_refuses_images_smaller_than_its_window():
    pred, target = _structured_pairs()
    assert torch.allclose(
        M.ssim(target.double(), target.double()), torch.ones(len(target), dtype=torch.float64), rtol=0, atol=1e-12
    )
    assert torch.allclose(M.ssim(target, target), torch.ones(len(target)), rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="at least 11×11 pixels.*got 10×16"):
        M.ssim(torch.rand(1, 3, 10, 16), torch.rand(1, 3, 10, 16))


def test_db_error_by_hand():
    # Constant images c = 0, 0.25, 1 with 4 values each: pair distances 2|c_i - c_j| = 0.5, 2, 1.5, mean 4/3.
    x = torch.tensor([0.0, 0.25, 1.0]).view(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    d_bar = M.mean_pairwise_distance(x, chunk=2)  # chunk < n exercises the blocked sum
    assert d_bar.item() == pytest.approx(4 / 3, rel=1e-12)
    xhat = x + 0.5  # distance ‖0.5·1‖ over 4 values = 1 per image
    assert torch.allclose(M.db_error(xhat, x, d_bar), torch.full((3,), 0.75, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2 images"):
        M.mean_pairwise_distance(x[:1])


def test_feature_error_by_hand_on_toy_encoder():
    # Φ(x) = sum over the three channels at each pixel (a 1×1 convolution with weights 1, no bias).
    conv = nn.Conv2d(3, 1, 1, bias=False)
    conv.weight.data.fill_(1.0)
    enc = Encoder(nn.Sequential(OrderedDict(sum=conv)), name="toy", image_size=(2, 2), mean=(0, 0, 0), std=(1, 1, 1))
    x = torch.full((1, 3, 2, 2), 0.5)  # Φ(x) = 1.5 at 4 pixels, ‖Φ(x)‖ = 3
    xhat = x.clone()
    xhat[0, 0, 0, 0] += 0.3  # Φ changes by 0.3 at one pixel
    err = M.feature_error(enc(xhat, ["sum"])["sum"], enc(x, ["sum"])["sum"])
    assert err.item() == pytest.approx(0.1, rel=1e-6)


def test_class_agreement_and_accuracy_by_hand():
    orig = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    recon = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 5.0]])
    assert M.class_agreement(recon, orig).tolist() == [1.0, 0.0, 0.0]
    assert M.accuracy(recon, torch.tensor([0, 0, 0])).tolist() == [1.0, 1.0, 0.0]


def test_bootstrap_ci_is_seeded_and_has_the_normal_width():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(400, generator=g)
    mean, lo, hi = M.bootstrap_ci(v, n_boot=2000, seed=3)
    assert mean == pytest.approx(v.double().mean().item())
    assert lo < mean < hi
    # Percentile bootstrap of a mean ≈ mean ± 1.96·s/√n.
    assert hi - lo == pytest.approx(2 * 1.96 * v.double().std().item() / 20, rel=0.15)
    assert M.bootstrap_ci(v, n_boot=2000, seed=3) == (mean, lo, hi)
    assert M.bootstrap_ci(v, n_boot=2000, seed=4) != (mean, lo, hi)
    assert M.bootstrap_ci(torch.full((7,), 0.25)) == (0.25, 0.25, 0.25)
    assert M.bootstrap_ci(torch.tensor([2.0])) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="non-finite"):
        M.bootstrap_ci(torch.tensor([1.0, float("inf")]))


# ---------------------------------------------------------------------- LPIPS
@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def no_download(*args, **kwargs):
        raise AssertionError("LPIPS must never download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    return tmp_path


def test_lpips_skipped_with_a_clear_message_when_weights_are_absent(torch_home):
    model, message = M.load_lpips()
    assert model is None
    expected = torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert str(expected) in message and M.LPIPS_BACKBONE_URL in message


def test_lpips_picks_up_the_cached_alexnet_trunk(torch_home):
    pytest.importorskip("lpips")
    import torchvision

    torch.manual_seed(5)
    features = torchvision.models.alexnet(weights=None).features.state_dict()
    state = {f"features.{k}": v for k, v in features.items()}
    state["classifier.1.weight"] = torch.zeros(2, 2)  # the real file also holds the classifier; it is ignored
    path = torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)

    model, message = M.load_lpips()
    assert message is None
    # lpips keeps torchvision's module indices inside its slices: features.6 is slice3's module "6".
    net = model.net
    for k, i in ((1, 0), (2, 3), (3, 6), (4, 8), (5, 10)):
        conv = getattr(net, f"slice{k}")._modules[str(i)]
        assert torch.equal(conv.weight, state[f"features.{i}.weight"])
        assert torch.equal(conv.bias, state[f"features.{i}.bias"])
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)  # AlexNet-LPIPS needs ≥ 32 px
    assert torch.allclose(M.lpips_distance(model, x, x), torch.zeros(2, dtype=torch.float64), atol=1e-7)
    assert (M.lpips_distance(model, y, x) > 0).all()


def test_lpips_rejects_a_cache_file_that_is_not_alexnet(torch_home):
    pytest.importorskip("lpips")
    path = torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir(parents=True)
    torch.save({"features.0.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="not a torchvision AlexNet"):
        M.load_lpips()
