"""The encoder zoo: build a frozen ``Encoder`` by name — a built-in architecture, a torchvision classifier or
a user's ``nn.Module`` class path — and rebuild the one a checkpoint recorded.

Nothing downloads unless asked (``download=True``); weights files load with ``weights_only=True``.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import Any

import torch
from torch import nn

from upconv.nets import timm_models
from upconv.nets.builtin import ARCHITECTURES, CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD
from upconv.nets.encoder import Encoder
from upconv.nets.weights import apply_weights, construct, load_state_dict

TORCHVISION_MODELS = ("alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50")


def _torchvision_layers(name: str, model: nn.Module) -> dict[str, str]:
    """Dosovitskiy & Brox / Simonyan names for AlexNet and VGG; top-level module names otherwise."""
    if not (name == "alexnet" or name.startswith("vgg")):
        return {n: n for n, _ in model.named_children()}
    layers: dict[str, str] = {}
    block, conv_in_block, conv_total = 1, 0, 0
    last_conv: str | None = None
    for i, m in enumerate(model.features):
        if isinstance(m, nn.Conv2d):
            conv_total += 1
            conv_in_block += 1
            last_conv = f"conv{conv_total}" if name == "alexnet" else f"conv{block}_{conv_in_block}"
        elif isinstance(m, nn.ReLU) and last_conv:
            layers[last_conv] = f"features.{i}"
        elif isinstance(m, nn.MaxPool2d):
            layers[f"pool{conv_total if name == 'alexnet' else block}"] = f"features.{i}"
            block, conv_in_block = block + 1, 0
    linear = [i for i, m in enumerate(model.classifier) if isinstance(m, nn.Linear)]
    for k, i in enumerate(linear):
        is_last = k == len(linear) - 1
        layers[f"fc{6 + k}"] = f"classifier.{i if is_last else i + 1}"  # post-ReLU except fc8
    return layers


def _torchvision_model(
    name: str, weights: str | None, download: bool, pretrained: bool, kwargs: dict[str, Any]
) -> nn.Module:
    """A torchvision classifier built with ``kwargs`` (e.g. ``num_classes``), with weights from a file or the
    torch cache."""
    import torchvision

    model = construct(functools.partial(torchvision.models.get_model, name, weights=None), name, kwargs)
    if weights:
        apply_weights(model, weights, name)
    elif pretrained:
        enum = torchvision.models.get_model_weights(name).DEFAULT
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(enum.url))
        if not os.path.isfile(cached) and not download:
            raise FileNotFoundError(
                f"pretrained weights for {name} are not in the local torch cache (expected {cached}). "
                f"Place the file there (from {enum.url}), pass download=True (--download) to fetch it, "
                f"or pretrained=False for random weights."
            )
        apply_weights(model, cached, name, enum.get_state_dict(progress=False, check_hash=True))
    return model


def build_encoder(
    name: str,
    weights: str | None = None,
    *,
    download: bool = False,
    pretrained: bool = True,
    kwargs: dict[str, Any] | None = None,
) -> Encoder:
    """Build a frozen encoder by name.

    - ``alexnet_cifar`` / ``he2019_cifar``: built-in CIFAR nets (``weights``: a state-dict or classifier
      checkpoint file; random weights without one).
    - a torchvision classifier (``alexnet``, ``vgg11``, ``vgg16``, ``resnet18``, ``resnet50`` …): ImageNet
      weights from the local torch cache (``download=True`` to fetch them), or ``weights`` from a file.
    - ``timm:<model_name>`` (``timm:resnet18``, ``timm:convnext_atto``, ``timm:vit_tiny_patch16_224`` …): any
      timm model (``upconv.nets.timm_models``); ``kwargs`` go to ``timm.create_model``.
    - ``package.module.ClassName``: a user's ``nn.Module`` built with ``kwargs``, plus ``weights``.
    """
    kwargs = dict(kwargs or {})
    spec = {"name": name, "weights": weights, "pretrained": pretrained, "kwargs": dict(kwargs)}
    # Random initialisation is seeded, so an encoder without weights is rebuilt identically from its spec
    # (and its decoders' checkpoints still match its weights hash).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _build(name, weights, download, pretrained, kwargs, spec)


def _build(
    name: str, weights: str | None, download: bool, pretrained: bool, kwargs: dict[str, Any], spec: dict[str, Any]
) -> Encoder:
    if name in ARCHITECTURES:
        state = load_state_dict(weights) if weights else None
        if state is not None and "num_classes" not in kwargs:
            # The class count is read off the weights: the last 2-D weight is the classifier's.
            last = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
            if last:
                kwargs["num_classes"] = last[-1].shape[0]
        arch = ARCHITECTURES[name]
        model = construct(arch.build, name, kwargs)
        if state is not None:
            apply_weights(model, weights, name, state)
        return Encoder(
            model, name=name, image_size=arch.image_size, mean=arch.mean, std=arch.std, spec=spec, copy_model=False
        )
    if name.startswith(timm_models.PREFIX):
        return timm_models.build(name, weights, download, pretrained, kwargs, spec)
    if name in TORCHVISION_MODELS:
        model = _torchvision_model(name, weights, download, pretrained, kwargs)
        return Encoder(
            model,
            name=name,
            image_size=(224, 224),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            layers=_torchvision_layers(name, model),
            spec=spec,
            copy_model=False,
        )
    if "." in name:
        module_path, _, cls_name = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_path), cls_name)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot import encoder class '{name}': {e}") from e
        image_size = tuple(kwargs.pop("image_size", (32, 32)))
        mean = kwargs.pop("mean", CIFAR_MEAN)
        std = kwargs.pop("std", CIFAR_STD)
        model = construct(cls, name, kwargs)
        if weights:
            apply_weights(model, weights, name)
        return Encoder(model, name=name, image_size=image_size, mean=mean, std=std, spec=spec, copy_model=False)
    raise ValueError(
        f"unknown encoder '{name}'; choose one of: {', '.join([*ARCHITECTURES, *TORCHVISION_MODELS])}, "
        f"timm:<model_name> for a timm model, or an importable class path such as mypackage.models.MyNet"
    )


def classifier_model(
    name: str, num_classes: int, kwargs: dict[str, Any] | None = None
) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...]]:
    """A freshly initialised classifier to train from scratch, with its input mean and std: a built-in
    architecture, or a timm model (``timm:<model>``, random weights, ``kwargs`` to ``timm.create_model``). Its
    state dict loads back as ``build_encoder(name, weights=file, kwargs=kwargs)`` (timm: with ``num_classes``
    in ``kwargs``)."""
    kwargs = dict(kwargs or {})
    if name in ARCHITECTURES:
        arch = ARCHITECTURES[name]
        return arch.build(num_classes=num_classes, **kwargs), tuple(arch.mean), tuple(arch.std)
    if name.startswith(timm_models.PREFIX):
        mean, std = kwargs.pop("mean", None), kwargs.pop("std", None)
        kwargs.pop("image_size", None)
        model = timm_models.create(
            name[len(timm_models.PREFIX) :], False, False, {**kwargs, "num_classes": num_classes}
        )
        cfg = model.pretrained_cfg
        return model, tuple(mean or cfg["mean"]), tuple(std or cfg["std"])
    raise ValueError(
        f"cannot train '{name}' from scratch: choose a built-in architecture ({', '.join(ARCHITECTURES)}) or "
        f"timm:<model>; give other encoders weights (encoder.weights) or pretrained: true"
    )
