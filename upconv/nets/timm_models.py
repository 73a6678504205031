"""timm encoders (``timm:<model_name>``): any model of the ``timm`` library, with its layer table read from
timm's own feature metadata.

- Layers: the modules named in the model's ``feature_info`` (timm's stage names: ``act1, layer1 … layer4``
  for ResNets, ``stages_0 …`` for ConvNeXt's ``stages.0 …``, ``blocks_0 … blocks_11`` for a ViT's
  ``blocks.0 …``; the dotted module name is accepted too), then ``logits`` (the head's output). Features come from
  timm's FX feature extractor, which knows the model's untraceable helpers.
- Token layers of a ViT, (N, D) per image with N = prefix tokens + h·w patches, are exposed as a (D, h, w)
  grid: the class/register tokens are dropped and the patch tokens laid out in their image positions, so
  UpconvNet decoders and the depth evaluation take them like any convolutional feature map. Channels-last
  stage outputs (Swin-style (h, w, D)) are permuted to (D, h, w).
- Weights: ``pretrained=False`` gives seeded random weights; ``weights=<file>`` loads a state dict
  (``.pth``/``.pt``/``.bin`` or ``.safetensors``); ``pretrained=True`` loads timm's default weights only
  if they are already in the local Hugging Face or torch cache, and fetches them only with ``download=True``.

``timm`` is optional: it is imported when a ``timm:`` encoder is built, with a clear error if missing.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from torch import Tensor, nn

from upconv.nets.encoder import Encoder
from upconv.nets.weights import apply_weights, construct

PREFIX = "timm:"
LOGITS = "logits"


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ValueError(
            "timm encoders need the timm package: pip install timm (or pip install 'upconv[timm]')"
        ) from None
    return timm


def tokens_to_grid(x: Tensor, prefix: int, grid: tuple[int, int]) -> Tensor:
    """(B, prefix + h·w, D) tokens → (B, D, h, w): drop the prefix (class/register) tokens and place each
    patch token at its patch position (timm's patch order is row-major, like ``flatten(2)``)."""
    B, N, D = x.shape
    h, w = grid
    if prefix + h * w != N:
        raise ValueError(f"expected {prefix} prefix tokens + {h}×{w} patches = {prefix + h * w} tokens; got {N}")
    return x[:, prefix:].transpose(1, 2).reshape(B, D, h, w)  # (B, D, h, w)


def channels_first(x: Tensor) -> Tensor:
    """(B, h, w, D) → (B, D, h, w)."""
    return x.permute(0, 3, 1, 2)


def _adapter(model: nn.Module, shape: tuple[int, ...], channels: int) -> Any | None:
    """How to bring one stage's per-image ``shape`` to (D, h, w); None if it already is."""
    if len(shape) == 2 and shape[1] == channels and hasattr(model, "patch_embed"):
        grid = tuple(int(g) for g in model.patch_embed.grid_size)
        return functools.partial(tokens_to_grid, prefix=int(getattr(model, "num_prefix_tokens", 0)), grid=grid)
    if len(shape) == 3 and shape[0] != channels and shape[2] == channels:
        return channels_first
    return None


def _cached_weights(cfg: Any) -> str | None:
    """The local file of timm's default weights for ``cfg`` (Hugging Face hub cache, then torch hub), or None."""
    repo = getattr(cfg, "hf_hub_id", None)
    if repo:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            names = [getattr(cfg, "hf_hub_filename", None), "model.safetensors", "pytorch_model.bin"]
            for filename in filter(None, names):
                path = try_to_load_from_cache(repo, filename)
                if isinstance(path, str) and os.path.isfile(path):
                    return path
    url = getattr(cfg, "url", None)
    if url:
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
        if os.path.isfile(path):
            return path
    return None


def create(arch: str, pretrained: bool, download: bool, kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model(arch, **kwargs)`` with timm's default weights only from the local cache unless
    ``download``; a clear error for an unknown name or missing weights."""
    timm, name = _timm(), PREFIX + arch
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:12]
        raise ValueError(
            f"timm has no model '{arch}'"
            + (f"; similar names: {', '.join(close)}" if close else "")
            + ". List them with timm.list_models('*pattern*')."
        )
    if not pretrained:
        return construct(functools.partial(timm.create_model, arch, pretrained=False), name, kwargs)
    cfg = timm.models.get_pretrained_cfg(arch)
    cached = _cached_weights(cfg) if cfg is not None else None
    if cached is not None:
        overlay = {"file": cached}
        return construct(
            functools.partial(timm.create_model, arch, pretrained=True, pretrained_cfg_overlay=overlay), name, kwargs
        )
    if download:
        return construct(functools.partial(timm.create_model, arch, pretrained=True), name, kwargs)
    raise FileNotFoundError(
        f"timm's pretrained weights for {arch} are not in the local cache. Pass download=True (--download) to "
        f"fetch them, a weights file (--encoder_weights), or pretrained=False (--pretrained false) for random weights."
    )


def layer_table(model: nn.Module) -> dict[str, str]:
    """Friendly name → graph node: timm's feature stages (``stages.0`` is called ``stages_0``, as a layer name
    is also a module name in the decoders' ModuleDict; either spelling is accepted), then ``logits`` (the last
    node of the graph)."""
    from timm.models import get_graph_node_names

    _, nodes = get_graph_node_names(model)
    stages = [info["module"] for info in getattr(model, "feature_info", [])]
    table = {m.replace(".", "_"): m for m in stages}
    table[LOGITS] = nodes[-1]
    return table


def adapter(model: nn.Module) -> Any:
    """``(layer, raw per-image shape) -> reshape or None`` for the Encoder's probe: timm's feature stages whose
    output is tokens or channels-last are brought to (D, h, w)."""
    channels = {info["module"].replace(".", "_"): info["num_chs"] for info in getattr(model, "feature_info", [])}
    return lambda name, shape: _adapter(model, shape, channels[name]) if name in channels else None


def build(
    name: str, weights: str | None, download: bool, pretrained: bool, kwargs: dict[str, Any], spec: dict[str, Any]
) -> Encoder:
    """The frozen ``Encoder`` for ``timm:<arch>`` (module docstring). ``kwargs`` go to ``timm.create_model``
    except ``image_size``, ``mean`` and ``std``, which override the model's pretrained configuration."""
    create_feature_extractor = _timm().models.create_feature_extractor  # a missing timm is one clear line

    arch = name[len(PREFIX) :]
    kwargs = dict(kwargs)
    size, mean, std = kwargs.pop("image_size", None), kwargs.pop("mean", None), kwargs.pop("std", None)
    model = create(arch, pretrained and not weights, download, kwargs)
    if weights:
        apply_weights(model, weights, name)
    cfg = model.pretrained_cfg
    size = size or kwargs.get("img_size") or cfg["input_size"][1:]
    size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    table = layer_table(model)
    return Encoder(
        model.eval(),
        name=name,
        image_size=size,
        mean=mean or cfg["mean"],
        std=std or cfg["std"],
        layers=table,
        spec=spec,
        copy_model=False,
        extractor=create_feature_extractor,
        adapter=adapter(model),
    )
