"""Where a layer sits in its network, computed from the model itself so that any model can be compared with any
other: relative depth and the feature geometry.

**Relative depth** of a layer = multiply-adds of the forward pass from the input up to that layer's output ÷
multiply-adds of the whole forward pass (to the last layer of the table). It is counted by running the
encoder's feature extractor truncated at the layer under ``torch.utils.flop_counter.FlopCounterMode``, which
counts the matrix products and convolutions (attention's too); element-wise operations, pooling and
normalisation count nothing, so a pooling layer has the depth of the convolution before it. It lies in (0, 1]
and never decreases along the layer table. Unlike a layer's index it does not depend on how finely a model's
table is cut, and a ViT block and a ResNet stage of equal cost sit at equal depth.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from upconv.nets.encoder import Encoder


def forward_flops(encoder: Encoder, layer: str) -> int:
    """FLOPs (2 × multiply-adds) of one image's forward pass up to ``layer``."""
    x = torch.zeros(1, encoder.channels, *encoder.image_size, device=encoder.device)  # (1, C, H, W)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(x, [layer])
    return int(counter.get_total_flops())


def _flops_at_module_outputs(encoder: Encoder) -> dict[str, int]:
    """FLOPs executed by the time each tapped module returns, from ONE forward pass of the whole model (a
    forward hook reads the running count); layers whose graph node is not a module are left out, and so is
    everything when the model's own forward does not run as it is (then each layer is counted alone)."""
    modules = dict(encoder.model.named_modules())
    taps = {i.name: modules[i.node] for i in encoder.layer_table if i.node in modules}
    seen: dict[str, int] = {}
    x = torch.zeros(1, encoder.channels, *encoder.image_size, device=encoder.device)  # (1, C, H, W)
    with FlopCounterMode(display=False) as counter:

        def record(name: str) -> Any:
            def hook(*_: Any) -> None:  # returns None: the module's output is left as it is
                seen.setdefault(name, int(counter.get_total_flops()))

            return hook

        handles = [m.register_forward_hook(record(n)) for n, m in taps.items()]
        try:
            with torch.no_grad():
                encoder.model(x)  # the model itself: its modules (not a traced copy's) carry the hooks
        except Exception:  # a model that only runs through its extractor: count layer by layer
            seen.clear()
        finally:
            for h in handles:
                h.remove()
    return seen


def relative_depths(encoder: Encoder) -> dict[str, float]:
    """Every layer of the table -> its relative depth (module docstring). Layers that are modules are read off
    one forward pass; any other (a function node) by a pass truncated at it."""
    seen = _flops_at_module_outputs(encoder)
    flops = {name: seen[name] if name in seen else forward_flops(encoder, name) for name in encoder.layers}
    total = max(max(flops.values()), 1)
    return {name: f / total for name, f in flops.items()}


def geometry(encoder: Encoder, layer: str) -> dict[str, float | int | str]:
    """Feature numbers per image, spatial resolution (h×w, or 1×1 for a vector) and the compression ratio
    (feature numbers ÷ image numbers: below 1 the layer holds fewer numbers than the image)."""
    shape = encoder.layer(layer).shape
    n = 1
    for s in shape:
        n *= s
    pixels = encoder.channels * encoder.image_size[0] * encoder.image_size[1]
    h, w = (shape[1], shape[2]) if len(shape) == 3 else (1, 1)
    return {
        "features": n,
        "channels": shape[0],
        "resolution": f"{h}×{w}",
        "spatial": h * w,
        "compression": n / pixels,
    }


def spread(depths: dict[str, float], k: int) -> list[str]:
    """``k`` layers spread evenly over relative depth: for each of k targets evenly spaced from the shallowest
    layer's depth to 1, the nearest layer not yet taken (ties: the shallower), returned in network order."""
    names = list(depths)
    if k >= len(names):
        return names
    lo = depths[names[0]]
    targets = [lo + (1 - lo) * i / (k - 1) for i in range(k)] if k > 1 else [1.0]
    chosen: list[str] = []
    for t in targets:
        free = [n for n in names if n not in chosen]
        chosen.append(min(free, key=lambda n: (abs(depths[n] - t), names.index(n))))
    return [n for n in names if n in chosen]


def nearest(depths: dict[str, float], target: float) -> str:
    """The layer whose relative depth is nearest ``target`` (ties: the deeper, which has seen the whole input
    that far)."""
    names = list(depths)
    return min(names, key=lambda n: (abs(depths[n] - target), -names.index(n)))
