import pytest
import torch

from upconv.nets.upconvnet import UpconvNet
from upconv.nets.zoo import build_encoder

ENC = build_encoder("alexnet_cifar", kwargs={"width": 0.25})
HE = build_encoder("he2019_cifar")


@pytest.mark.parametrize("info", ENC.layer_table + [HE.layer("relu32"), HE.layer("fc2")], ids=lambda i: i.name)
def test_decoder_contract_over_layer_table(info):
    dec = UpconvNet(info.shape, (3, 32, 32), width=8, fc_width=32)
    feats = torch.randn(2, *info.shape)
    out = dec(feats)
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dec.parameters())


def test_up_convolutions_mirror_the_encoders_downsampling():
    def n_up(shape):
        return sum(isinstance(m, torch.nn.ConvTranspose2d) for m in UpconvNet(shape, (3, 32, 32)).modules())

    assert [n_up(ENC.layer(n).shape) for n in ("conv1", "pool1", "pool2", "conv5", "pool5", "fc6")] == [
        0,
        1,
        2,
        2,
        3,
        3,
    ]


def test_non_power_of_two_ratio_ends_at_image_size():
    dec = UpconvNet((64, 55, 55), (3, 224, 224), width=4, max_width=8)
    assert dec(torch.randn(1, 64, 55, 55)).shape == (1, 3, 224, 224)


def test_wrong_feature_shape_is_a_clear_error():
    dec = UpconvNet((16, 8, 8), width=4)
    with pytest.raises(ValueError, match=r"expects features of shape \(B, 16, 8, 8\); got \(1, 16, 4, 4\)"):
        dec(torch.randn(1, 16, 4, 4))
    with pytest.raises(ValueError, match="feature_shape must be"):
        UpconvNet((3, 4), width=4)
