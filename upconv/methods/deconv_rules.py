"""DeconvNet's projection rules, one per kind of operation: given the signal arriving at an operation's output,
the signal each of its inputs receives (see ``upconv.methods.deconvnet`` for the rules and why)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from upconv.methods.deconv_graph import Op, Record


def transpose(op: Op, signal: Tensor, rec: Record, guided: bool) -> list[Tensor]:
    """The signal for each of ``op``'s inputs, given the signal at its output (B, K, *out shape): the rules of
    ``upconv.methods.deconvnet``'s docstring (``guided``: guided backpropagation's ReLU)."""
    B, K = signal.shape[:2]
    shape, m = rec.shapes[op.inputs[0].name], op.module
    if op.kind == "add":
        return [_unbroadcast(signal, rec.shapes[i.name]) for i in op.inputs]
    if op.kind == "cat":
        parts, dim = op.node.args[0], op.node.kwargs.get("dim", op.node.args[1] if len(op.node.args) > 1 else 0)
        pieces = signal.split([rec.shapes[p.name][dim] for p in parts], dim=dim + 1 if dim >= 0 else dim)
        return [sum(x for p, x in zip(parts, pieces) if p is i) for i in op.inputs]
    if op.kind == "relu":
        signal = signal.clamp(min=0)
        return [signal * rec.saved[op.node.name].unsqueeze(1) if guided else signal]
    if op.kind == "maxpool":
        C, H, W = shape[1:]
        s = signal.reshape(B, K, C, -1)  # (B, K, C, h*w)
        idx = rec.saved[op.node.name].reshape(B, 1, C, -1).expand_as(s)  # one set of switches for all K
        return [s.new_zeros(B, K, C, H * W).scatter_add_(3, idx, s).view(B, K, C, H, W)]
    if op.kind == "conv":
        s = signal.flatten(0, 1)  # (B*K, C_out, h, w)
        pad = [
            shape[2 + i]
            - ((s.shape[2 + i] - 1) * m.stride[i] - 2 * m.padding[i] + m.dilation[i] * (m.kernel_size[i] - 1) + 1)
            for i in (0, 1)
        ]
        return [
            F.conv_transpose2d(s, m.weight, None, m.stride, m.padding, pad, m.groups, m.dilation).unflatten(0, (B, K))
        ]  # (B, K, C_in, H, W)
    if op.kind == "linear":
        return [signal @ m.weight]  # (B, K, in_features)
    if op.kind == "bn":
        scale = m.running_var.add(m.eps).rsqrt() * (m.weight if m.weight is not None else 1.0)
        return [signal * scale.view(-1, 1, 1)]
    if op.kind == "avgpool":
        return [_linear_transpose(op, signal, shape)]
    if op.kind == "reshape":
        return [signal.reshape(B, K, *shape[1:])]
    if op.kind in ("permute", "transpose"):
        return [_unpermute(op, signal, len(shape))]
    return [signal]  # identity


def _unbroadcast(signal: Tensor, shape: torch.Size) -> Tensor:
    """The transpose of broadcasting an input of ``shape`` (B, …) to the signal's (B, K, …): sum the
    broadcast dims."""
    B, K = signal.shape[:2]
    target = (B, K, *shape[1:])
    lead = signal.dim() - len(target)
    s = signal.sum(dim=tuple(range(2, 2 + lead))) if lead > 0 else signal
    dims = [d for d in range(2, s.dim()) if target[d] == 1 and s.shape[d] != 1]
    return s.sum(dim=dims, keepdim=True) if dims else s


def _unpermute(op: Op, signal: Tensor, ndim: int) -> Tensor:
    """Undo ``x.permute(dims)`` / ``x.transpose(a, b)`` of the forward (B, …) tensor on the (B, K, …) signal:
    forward dim d ≥ 1 is signal dim d + 1, and the batch dim must stay first."""
    args = [a for a in op.node.args[1:]]
    dims = list(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
    dims = [int(d) % ndim for d in (dims or op.node.kwargs.get("dims", ()))]
    if op.kind == "transpose":
        perm = list(range(ndim))
        perm[dims[0]], perm[dims[1]] = perm[dims[1]], perm[dims[0]]
        dims = perm
    if dims[0] != 0:
        raise ValueError(f"{op.node.name} moves the batch dimension; DeconvNet cannot carry a signal through it")
    inverse = [dims.index(d) for d in range(ndim)]
    return signal.permute(0, 1, *(d + 1 for d in inverse[1:]))


def _linear_transpose(op: Op, signal: Tensor, shape: torch.Size) -> Tensor:
    """An average pool is linear: its transpose is its vector-Jacobian product."""
    B, K = signal.shape[:2]
    with torch.enable_grad():
        x0 = signal.new_zeros(B * K, *shape[1:]).requires_grad_()
        (g,) = torch.autograd.grad(
            op.module(x0) if op.module is not None else _call_avgpool(op, x0), x0, signal.flatten(0, 1)
        )
    return g.unflatten(0, (B, K))


def _call_avgpool(op: Op, x: Tensor) -> Tensor:
    args = (x, *op.node.args[1:])
    return op.node.target(*args, **op.node.kwargs)
