"""The receptive field of a layer's units, walked over the operations of a ``ProjectionGraph``: which input
window a unit sees (DeconvNet figures crop it beside each projection)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from upconv.methods.deconv_graph import Op, ProjectionGraph


@dataclass(frozen=True)
class ReceptiveField:
    """Input window of a unit: unit (y, x) sees rows ``y*stride[0] - offset[0]`` … ``+ size[0] - 1``
    (likewise columns); rows outside the image are zero padding."""

    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]

    def window(self, y: int, x: int, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the size×size window (capped at the image size), shifted inside
        the image, that holds every in-image pixel of unit (y, x)'s receptive field."""
        box = []
        for i, pos in enumerate((y, x)):
            t = min(self.size[i], image_size[i])
            box.append((min(max(pos * self.stride[i] - self.offset[i], 0), image_size[i] - t), t))
        return box[0][0], box[1][0], box[0][1], box[1][1]


def receptive_field(graph: ProjectionGraph) -> ReceptiveField:
    """Walk kernel size k, stride s, padding p and dilation d from the input up to the layer:
    size += d(k-1)·jump, offset += p·jump, jump *= s. ReLU, batch norm, dropout and size-preserving
    reshapes/adaptive pools leave it unchanged; where branches meet (a residual addition, a concatenation) a
    unit sees the union of its inputs' fields (largest size and offset); after a linear layer, a flatten or a
    resizing adaptive pool a unit sees the whole image (size = image size, stride 0, offset 0)."""
    enc = graph.encoder
    with torch.no_grad():
        probe = torch.zeros(1, enc.channels, *enc.image_size, dtype=enc.std.dtype, device=enc.std.device)
        shapes = graph.forward(probe, guided=False).shapes
    whole = ReceptiveField(enc.image_size, (0, 0), (0, 0))
    fields: dict[str, ReceptiveField] = {}
    for op in graph.ops:
        if op.kind == "input":
            fields[op.node.name] = ReceptiveField((1, 1), (1, 1), (0, 0))
        elif op.kind not in ("const", "meta"):
            ins = [fields[i.name] for i in op.inputs]
            fields[op.node.name] = _grow(op, ins, shapes[op.inputs[0].name], shapes[op.node.name], whole)
    return fields[graph.target.name]


def pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    """A module's int-or-pair setting (kernel size, stride, padding, dilation) as (height, width)."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _grow(
    op: Op, ins: list[ReceptiveField], shape_in: torch.Size, shape_out: torch.Size, whole: ReceptiveField
) -> ReceptiveField:
    if any(f.stride == (0, 0) for f in ins):  # a unit that already sees the whole image
        return whole
    if len(ins) > 1:
        return ReceptiveField(
            tuple(max(f.size[i] for f in ins) for i in (0, 1)),
            ins[0].stride,
            tuple(max(f.offset[i] for f in ins) for i in (0, 1)),
        )
    f, m = ins[0], op.module
    if op.kind in ("conv", "maxpool") or isinstance(m, nn.AvgPool2d):
        k, s, p, d = (pair(v) for v in (m.kernel_size, m.stride, m.padding, getattr(m, "dilation", 1)))
        return ReceptiveField(
            tuple(f.size[i] + d[i] * (k[i] - 1) * f.stride[i] for i in (0, 1)),
            tuple(f.stride[i] * s[i] for i in (0, 1)),
            tuple(f.offset[i] + p[i] * f.stride[i] for i in (0, 1)),
        )
    if op.kind == "linear" or (op.kind in ("avgpool", "reshape") and shape_in != shape_out):
        return whole
    return f
