"""What users reach for is public: the metrics and the image reader are ``upconv`` names, and the docs say so."""

import os

import pytest
import torch

import upconv
from upconv.core import metrics
from upconv.data import folders

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs", "reports.md")


@pytest.mark.parametrize(
    "name,module", [("psnr", metrics), ("ssim", metrics), ("image_folder", folders), ("load_images", folders)]
)
def test_metrics_and_the_image_reader_are_public_and_documented(name, module):
    assert name in upconv.__all__
    assert getattr(upconv, name) is getattr(module, name)
    assert f"upconv.{name}" in open(DOCS).read()


def test_the_public_psnr_is_ten_log_of_one_over_the_mean_squared_error():
    x = torch.zeros(2, 3, 16, 16)
    y = torch.full_like(x, 0.1)  # MSE 0.01 → 20 dB
    assert torch.allclose(upconv.psnr(y, x), torch.tensor([20.0, 20.0]))
    assert torch.allclose(upconv.ssim(x + 0.5, x + 0.5), torch.ones(2), atol=1e-6)
