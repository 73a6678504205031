"""Built-in CNN architectures: plain ``nn.Module``s with named top-level stages, and one spec per
architecture — its input size, normalisation and published split points, declared here once.

Each top-level child of these ``nn.Sequential`` nets is one entry of the encoder's layer table, so the
names below are the names users type (``conv1``, ``relu22`` …).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _init(model: nn.Module) -> nn.Module:
    """He-normal convolutions and small-normal linear layers (torchvision's VGG scheme): without batch norm,
    PyTorch's default initialisation shrinks the signal layer by layer and these nets barely start to learn."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


def _conv_relu(c_in: int, c_out: int, k: int) -> nn.Sequential:
    # Caffe convention (and Dosovitskiy & Brox's tables): the blob called "convN" is post-ReLU.
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.ReLU())


def alexnet_cifar(num_classes: int = 10, width: float = 1.0) -> nn.Sequential:
    """AlexNet-shaped network for 32×32 inputs, stage names as in Krizhevsky et al. (2012).

    ``width`` scales every channel count (1.0 is the published-table shape: 64-192-384-256-256-1024-1024);
    the offline demo uses a narrow copy so it trains in seconds on a CPU.
    """
    c = [max(1, round(n * width)) for n in (64, 192, 384, 256, 256, 1024, 1024)]
    return _init(
        nn.Sequential(
            OrderedDict(
                conv1=_conv_relu(3, c[0], 5),
                pool1=nn.MaxPool2d(2),
                conv2=_conv_relu(c[0], c[1], 5),
                pool2=nn.MaxPool2d(2),
                conv3=_conv_relu(c[1], c[2], 3),
                conv4=_conv_relu(c[2], c[3], 3),
                conv5=_conv_relu(c[3], c[4], 3),
                pool5=nn.MaxPool2d(2),
                fc6=nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(c[4] * 4 * 4, c[5]), nn.ReLU()),
                fc7=nn.Sequential(nn.Dropout(0.5), nn.Linear(c[5], c[6]), nn.ReLU()),
                fc8=nn.Linear(c[6], num_classes),
            )
        )
    )


def he2019_cifar(num_classes: int = 10) -> nn.Sequential:
    """CIFAR-10 target network of He, Zhang & Lee, "Model inversion attacks against collaborative
    inference" (ACSAC 2019). Their split points are ``conv11`` (pre-activation), ``relu22`` and ``relu32``.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = 3
    for block, c_out in ((1, 64), (2, 128), (3, 128)):
        for i in (1, 2):
            layers[f"conv{block}{i}"] = nn.Conv2d(c_in, c_out, 3, padding=1)
            layers[f"relu{block}{i}"] = nn.ReLU()
            c_in = c_out
        layers[f"pool{block}"] = nn.MaxPool2d(2)
    layers["fc1"] = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4 * 4, 512))
    layers["sigmoid1"] = nn.Sigmoid()
    layers["fc2"] = nn.Linear(512, num_classes)
    model = _init(nn.Sequential(layers))
    # fc1 feeds a sigmoid: N(0, 0.01) weights keep it at 0.5 ± 0.01, so almost no gradient reaches the
    # convolutions (the net stays at chance for epochs). Glorot's initialisation is the one made for sigmoids.
    for linear in (layers["fc1"][1], layers["fc2"]):
        nn.init.xavier_uniform_(linear.weight)
    return model


def resnet18_cifar(num_classes: int = 10, width: int = 64) -> nn.Sequential:
    """ResNet-18 (He et al., CVPR 2016) for 32×32 inputs, as used by GLASS (NeurIPS 2023) and most split-learning
    papers: a 3×3 stride-1 stem without max-pooling, then torchvision's four stages of two BasicBlocks
    (``width``, 2·, 4·, 8·width channels; strides 1, 2, 2, 2), global average pooling and a linear classifier.
    Split points ``layer1 … layer4`` are the stage outputs (32×32, 16×16, 8×8, 4×4)."""
    from torchvision.models.resnet import BasicBlock

    def stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or c_in != c_out:
            down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        return nn.Sequential(BasicBlock(c_in, c_out, stride, down), BasicBlock(c_out, c_out))

    c = [width, 2 * width, 4 * width, 8 * width]
    model = nn.Sequential(
        OrderedDict(
            stem=nn.Sequential(nn.Conv2d(3, c[0], 3, padding=1, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU()),
            layer1=stage(c[0], c[0], 1),
            layer2=stage(c[0], c[1], 2),
            layer3=stage(c[1], c[2], 2),
            layer4=stage(c[2], c[3], 2),
            pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            fc=nn.Linear(c[3], num_classes),
        )
    )
    for m in model.modules():  # torchvision's ResNet initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


@dataclass(frozen=True)
class ArchSpec:
    """What every user of a built-in architecture needs: how to build it and what input it takes."""

    build: Callable[..., nn.Module]  # (num_classes=…, **kwargs) -> nn.Module
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    split_points: tuple[str, ...] = ()  # the layers papers attack or split at (privacy defaults)


ARCHITECTURES = {
    "alexnet_cifar": ArchSpec(
        alexnet_cifar, (32, 32), CIFAR_MEAN, CIFAR_STD, split_points=("conv1", "pool2", "conv5", "fc6")
    ),
    "he2019_cifar": ArchSpec(
        he2019_cifar, (32, 32), CIFAR_MEAN, CIFAR_STD, split_points=("conv11", "relu22", "relu32")
    ),
    "resnet18_cifar": ArchSpec(
        resnet18_cifar, (32, 32), CIFAR_MEAN, CIFAR_STD, split_points=("layer1", "layer2", "layer3", "layer4")
    ),
}


def build_architecture(name: str, **kwargs: object) -> nn.Module:
    """A built-in architecture's network (random weights), or a clear error naming the choices."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{name}'; choose one of: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name].build(**kwargs)
