"""The commands behave alike: one image reader, one rule for existing output folders, one-line errors."""

import os

import pytest
import torch
from PIL import Image


def _photo(root, size=(48, 30)):
    """One non-square photograph (W × H = ``size``) in ``root/test/a`` and ``root/train/a``; left and right
    halves differ, so a stretch and an aspect-preserving crop give different pixels."""
    g = torch.Generator().manual_seed(0)
    w, h = size
    pixels = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8)
    pixels[:, : w // 4] = 0
    for split in ("train", "test"):
        os.makedirs(root / split / "a", exist_ok=True)
        Image.fromarray(pixels.numpy()).save(root / split / "a" / "photo.png")
    return root


def test_evaluate_deconv_and_visualize_read_a_photo_as_the_same_tensor(tmp_path):
    from upconv.data.folders import load_images
    from upconv.data.source import ImageSource
    from upconv.visualize.deconv import image_folder

    root = _photo(tmp_path)
    evaluate = next(ImageSource("folder", str(root), image_size=16, num_workers=0).images("val"))[0][0]
    deconv = image_folder(str(root / "test"), (16, 16))[0][0]
    visualize = load_images([str(root / "test")], (16, 16))[0][0]
    single_file = load_images([str(root / "test" / "a" / "photo.png")], (16, 16))[0][0]
    assert evaluate.shape == (3, 16, 16)
    for other in (deconv, visualize, single_file):
        assert torch.equal(other, evaluate)
