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


def test_the_reports_page_example_reads_a_plain_folder_of_photos(tmp_path, monkeypatch):
    """docs/reports.md's `load_images(["photos/"])` failed on a plain folder (torchvision's ImageFolder wants
    class subfolders); a plain folder is read as its image files, unlabelled."""
    import re

    import numpy as np
    from PIL import Image

    from upconv.data.folders import folder_classes

    page = open(os.path.join(os.path.dirname(__file__), "..", "docs", "reports.md")).read()
    example = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    os.mkdir("photos")
    for name, shade in (("b.png", 40), ("a.jpg", 200)):
        Image.fromarray(np.full((40, 50, 3), shade, dtype=np.uint8)).save(os.path.join("photos", name))
    scope = {}
    exec(example, scope)  # the page's own code, as a reader would run it
    assert scope["x"].shape == (2, 3, 32, 32) and scope["labels"] is None and scope["names"] == ["a.jpg", "b.png"]
    assert folder_classes(["photos/"]) is None
