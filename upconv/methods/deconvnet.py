"""DeconvNet projections (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014)
and guided backpropagation (Springenberg et al., "Striving for Simplicity: The All Convolutional Net", 2015).

A forward pass records the max-pool switches; the selected activations of one layer (all others zeroed) are
then carried back to pixels through the traced chain of operations, in reverse, by these rules:

- max-pool: unpool with the recorded switches. Where pools overlap (AlexNet's 3×3 stride 2) one input
  location can be the switch of several pooled units; their signals are **summed** there. This makes
  unpooling the exact transpose of the pool's selection (and equal to max-pool's gradient);
  ``nn.MaxUnpool2d`` would instead keep one of the writes, chosen arbitrarily.
- ReLU: DeconvNet rectifies the signal coming down, ``relu(s)``; guided backpropagation also zeroes it
  where the forward input was not positive, ``relu(s) * (x > 0)``. This is the only difference.
- Conv2d: ``conv_transpose2d`` with the same weights, stride, padding, dilation and groups; no bias.
- Linear: multiplication by the transposed weight; no bias.
- BatchNorm2d (eval): its per-channel scale ``weight / sqrt(running_var + eps)``; the shift is dropped
  like a bias.
- AvgPool2d / AdaptiveAvgPool2d: their exact transpose (an identity when input and output sizes match).
- Flatten / view / reshape: reshape back. Dropout / Identity: identity (the encoder is in eval mode).

Anything else on the path to the input (residual additions, concatenations, sigmoids …) is refused with an
error naming the operation. Projections come back in pixel units: the signal reaching the network input
is multiplied by the encoder's per-channel std, undoing the scale of its normalisation (no mean is added,
since no offset survives the projection). Nothing is attached to the model: the forward pass and the
projection are run step by step from a traced graph, so no hook or modified module is ever left behind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from upconv.methods.base import Batch, Method
from upconv.nets.encoder import Encoder

_IDENTITY = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
_MODULE_KINDS = ((nn.Conv2d, "conv"), (nn.Linear, "linear"), (nn.ReLU, "relu"), (nn.MaxPool2d, "maxpool"),
                 (nn.BatchNorm2d, "bn"), (nn.AvgPool2d, "avgpool"), (nn.AdaptiveAvgPool2d, "avgpool"),
                 (nn.Flatten, "reshape"), (_IDENTITY, "identity"))
_FUNCTION_KINDS = {torch.flatten: "reshape", torch.reshape: "reshape", F.relu: "relu", torch.relu: "relu",
                   F.avg_pool2d: "avgpool", F.adaptive_avg_pool2d: "avgpool"}
_METHOD_KINDS = {"view": "reshape", "reshape": "reshape", "flatten": "reshape", "relu": "relu"}
SUPPORTED = ("Conv2d (numeric zero padding), Linear, ReLU, MaxPool2d, BatchNorm2d, AvgPool2d, "
             "AdaptiveAvgPool2d, Flatten/view/reshape, Dropout, Identity")


@dataclass
class _Step:
    node: fx.Node
    kind: str
    module: nn.Module | None


class _Unsupported(Exception):
    def __init__(self, node: fx.Node, why: str) -> None:
        super().__init__(why)
        self.node, self.why = node, why


class DeconvNet:
    """Zeiler & Fergus (2014) DeconvNet, or guided backpropagation with ``guided=True``, for an ``Encoder``
    whose path from the input to the chosen layer is a chain of supported operations (module docstring)."""

    def __init__(self, encoder: Encoder, guided: bool = False) -> None:
        self.encoder, self.guided = encoder, guided
        try:
            self._graph = fx.Tracer().trace(encoder.model)
        except Exception as e:
            raise ValueError(f"DeconvNet needs a torch.fx-traceable model; tracing {encoder.name} failed: {e}") from e
        self._steps: dict[str, list[_Step]] = {}

    # ------------------------------------------------------------------ graph walk
    @staticmethod
    def _module_path(node: fx.Node) -> str:
        if node.op == "call_module":
            return str(node.target)
        stack = node.meta.get("nn_module_stack") or {}
        return list(stack.values())[-1][0] if stack else ""

    def steps(self, layer: str) -> list[_Step]:
        """The chain of operations from the network input to ``layer``, in forward order."""
        name = self.encoder.resolve([layer])[0]
        try:
            return self._walk(name)
        except _Unsupported as e:
            ok = [n for n in self.supported_layers if self.encoder.layers.index(n) < self.encoder.layers.index(name)]
            raise ValueError(
                f"DeconvNet cannot project from '{name}' of {self.encoder.name}: {e.why} (graph node "
                f"'{e.node.name}'). Supported on the path to the input: {SUPPORTED}. Layers that can be "
                f"projected: {', '.join(ok) or 'none'}."
            ) from None

    def _walk(self, name: str) -> list[_Step]:
        if name in self._steps:
            return self._steps[name]
        path = self.encoder.layer(name).node
        nodes = [n for n in self._graph.nodes if n.name == path.replace(".", "_")
                 or (p := self._module_path(n)) == path or p.startswith(path + ".")]
        if not nodes:
            raise ValueError(f"layer '{name}' (node '{path}') is not in the traced graph of {self.encoder.name}")
        node, steps = nodes[-1], []
        while node.op != "placeholder":
            inputs = node.all_input_nodes
            if len(inputs) != 1:
                raise _Unsupported(node, f"operation {getattr(node.target, '__name__', node.target)} inside "
                                   f"'{self._module_path(node) or 'the top-level forward'}' combines "
                                   f"{len(inputs)} tensors (e.g. a residual addition)")
            steps.append(self._classify(node))
            node = inputs[0]
        self._steps[name] = steps[::-1]
        return self._steps[name]

    def _classify(self, node: fx.Node) -> _Step:
        module, kind = None, None
        if node.op == "call_module":
            module = self.encoder.model.get_submodule(str(node.target))
            kind = next((k for cls, k in _MODULE_KINDS if isinstance(module, cls)), None)
            what = f"{type(module).__name__} module '{node.target}'"
            if kind == "conv" and (module.padding_mode != "zeros" or isinstance(module.padding, str)):
                kind, what = None, f"{what} with padding={module.padding!r}, padding_mode={module.padding_mode!r}"
            if kind == "bn" and module.running_var is None:
                kind, what = None, f"{what} without running statistics"
        elif node.op == "call_function":
            kind = _FUNCTION_KINDS.get(node.target)
            what = f"function {getattr(node.target, '__name__', node.target)}"
        else:
            kind = _METHOD_KINDS.get(node.target) if node.op == "call_method" else None
            what = f"{node.op} {node.target}"
        if kind is None:
            raise _Unsupported(node, f"{what} has no projection rule")
        return _Step(node, kind, module)

    @property
    def supported_layers(self) -> list[str]:
        """Layers of the encoder whose path to the input has a rule for every operation."""
        ok = []
        for name in self.encoder.layers:
            try:
                self._walk(name)
                ok.append(name)
            except _Unsupported:
                pass
        return ok

    # ------------------------------------------------------------------ forward with switches
    def _apply(self, step: _Step, x: Tensor) -> Tensor:
        node = step.node
        if node.op == "call_module":
            return step.module(x)
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda _: x)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        return getattr(args[0], node.target)(*args[1:], **kwargs)

    def _forward(self, images: Tensor, steps: list[_Step]) -> tuple[Tensor, list[tuple[torch.Size, Tensor | None]]]:
        """Layer activations and, per step, its input shape and what the way back needs (switches, masks)."""
        x, saved = self.encoder.normalize(images), []  # (B, C, H, W)
        for st in steps:
            extra = None
            if st.kind == "maxpool":
                m = st.module
                y, extra = F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                                        return_indices=True)  # switches: (B, C, h, w) flat indices into H*W
            else:
                if st.kind == "relu" and self.guided:
                    extra = x > 0  # taken before the call, in case the ReLU is in-place
                y = self._apply(st, x)
            saved.append((x.shape, extra))
            x = y
        return x, saved

    # ------------------------------------------------------------------ projection
    def _backward(self, signal: Tensor, steps: list[_Step], saved: list) -> Tensor:
        """Carry ``signal`` (B, K, *layer shape) down to the input: (B, K, C, H, W) in pixel units."""
        B, K = signal.shape[:2]
        for st, (shape, extra) in zip(reversed(steps), reversed(saved)):
            m = st.module
            if st.kind == "relu":
                signal = signal.clamp(min=0)
                if self.guided:
                    signal = signal * extra.unsqueeze(1)
            elif st.kind == "maxpool":
                C, H, W = shape[1:]
                s = signal.reshape(B, K, C, -1)  # (B, K, C, h*w)
                idx = extra.reshape(B, 1, C, -1).expand_as(s)  # one set of switches for all K selections
                signal = s.new_zeros(B, K, C, H * W).scatter_add_(3, idx, s).view(B, K, C, H, W)
            elif st.kind == "conv":
                s = signal.flatten(0, 1)  # (B*K, C_out, h, w)
                pad = [shape[2 + i] - ((s.shape[2 + i] - 1) * m.stride[i] - 2 * m.padding[i]
                                       + m.dilation[i] * (m.kernel_size[i] - 1) + 1) for i in (0, 1)]
                signal = F.conv_transpose2d(s, m.weight, None, m.stride, m.padding, pad, m.groups,
                                            m.dilation).unflatten(0, (B, K))  # (B, K, C_in, H, W)
            elif st.kind == "linear":
                signal = signal @ m.weight  # (B, K, in_features)
            elif st.kind == "bn":
                scale = m.running_var.add(m.eps).rsqrt() * (m.weight if m.weight is not None else 1.0)
                signal = signal * scale.view(-1, 1, 1)
            elif st.kind == "avgpool":
                with torch.enable_grad():  # a linear map: its transpose is its vector-Jacobian product
                    x0 = signal.new_zeros(B * K, *shape[1:]).requires_grad_()
                    (g,) = torch.autograd.grad(self._apply(st, x0), x0, signal.flatten(0, 1))
                signal = g.unflatten(0, (B, K))
            elif st.kind == "reshape":
                signal = signal.reshape(B, K, *shape[1:])
        return signal * self.encoder.std.unsqueeze(0)  # (B, K, C, H, W)

    @staticmethod
    def _keep(a: Tensor, groups: int, top_k: int | None, position: tuple[int, int] | None) -> Tensor:
        """Zero all but the selected entries of ``a``; top-k is taken within each of the leading ``groups`` dims.
        A group with no dims left (one channel of a fully connected layer: a single value) is kept whole."""
        if position is not None:
            kept = torch.zeros_like(a)
            kept[..., position[0], position[1]] = a[..., position[0], position[1]]
            a = kept
        if top_k is not None and a.dim() > groups:
            flat = a.flatten(groups)
            vals, idx = flat.topk(top_k, dim=-1)
            a = torch.zeros_like(flat).scatter_(-1, idx, vals).view_as(a)
        return a

    def project(
        self,
        images: Tensor,
        layer: str,
        channels: int | Sequence[int] | None = None,
        top_k: int | None = None,
        position: tuple[int, int] | None = None,
        chunk: int = 1024,
    ) -> Tensor:
        """Project selected activations of ``layer`` for ``images`` (B, C, H, W) in [0, 1] back to pixels.

        - no selection: all activations of the layer → (B, C, H, W);
        - ``position=(y, x)``: all channels at one spatial position; ``top_k``: the k strongest
          activations of the whole layer (among those at ``position`` if given) → (B, C, H, W);
        - ``channels``: each channel separately (an int → (B, C, H, W); a sequence of K → (B, K, C, H, W)),
          optionally only its ``top_k`` strongest activations or the one at ``position``.
        The K selections are batched, at most ``chunk`` images×channels per pass, on the encoder's device.
        """
        self.encoder.check_images(images, finite=True)
        steps = self.steps(layer)
        shape = tuple(self.encoder.layer(layer).shape)
        single = isinstance(channels, int)
        chans = None if channels is None else [channels] if single else [int(c) for c in channels]
        per_group = (shape[1] * shape[2] if len(shape) == 3 else 1) if chans is not None else math.prod(shape)
        if chans is not None and (not chans or not all(0 <= c < shape[0] for c in chans)):
            raise ValueError(f"channels must be a non-empty list of indices in 0..{shape[0] - 1} for '{layer}' "
                             f"(shape {shape}); got {channels}")
        if top_k is not None and not 1 <= top_k <= per_group:
            raise ValueError(f"top_k must be in 1..{per_group} for this selection of '{layer}' (shape {shape}); "
                             f"got {top_k}")
        if position is not None and (len(shape) != 3 or not (0 <= position[0] < shape[1] and 0 <= position[1] < shape[2])):
            raise ValueError(f"position must be (y, x) inside the {shape[1:] if len(shape) == 3 else 'non-spatial'} "
                             f"grid of '{layer}'; got {position}. Omit it for fully connected layers.")
        with torch.no_grad():
            images = images.to(self.encoder.std.device)
            act, saved = self._forward(images, steps)  # (B, *shape)
            if chans is None:
                return self._backward(self._keep(act, 1, top_k, position).unsqueeze(1), steps, saved)[:, 0]
            per, outs = max(1, chunk // images.shape[0]), []
            for i in range(0, len(chans), per):
                idx = torch.tensor(chans[i:i + per], device=act.device)
                sig = act.new_zeros(act.shape[0], len(idx), *shape)  # (B, k, *shape)
                sig[:, torch.arange(len(idx), device=act.device), idx] = self._keep(act[:, idx], 2, top_k, position)
                outs.append(self._backward(sig, steps, saved))
            out = torch.cat(outs, 1)  # (B, K, C, H, W)
            return out[:, 0] if single else out


def to_unit_range(projections: Tensor, images: Tensor | None = None, mapping: str = "affine") -> Tensor:
    """Map projections (B, C, H, W) into [0, 1], one map per image.

    - ``"affine"``: least-squares scale a ≥ 0 and offset b, shared by all pixels and channels of an image,
      fitted to the true ``images``, then clipped to [0, 1]. A DeconvNet projection has no defined scale or
      offset (biases are dropped, ReLUs rectify), so this scores the structure it recovers under the best
      global brightness/contrast; it reads two numbers of the target per image, so PSNR/SSIM are an
      optimistic bound. A negative best scale is set to 0 (the map would invert the projection), leaving
      the image's mean.
    - ``"minmax"``: (p - min) / (max - min) per image; uses nothing of the target.
    """
    p = projections.flatten(1)  # (B, C*H*W)
    if mapping == "minmax":
        lo, hi = p.min(1, keepdim=True).values, p.max(1, keepdim=True).values
        return ((p - lo) / (hi - lo).clamp_min(torch.finfo(p.dtype).tiny)).view_as(projections)
    if mapping != "affine" or images is None:
        raise ValueError(f"mapping must be 'affine' (with the target images) or 'minmax'; got {mapping!r}")
    t = images.to(p).flatten(1)  # (B, C*H*W)
    pc, tc = p - p.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    a = ((pc * tc).sum(1) / (pc * pc).sum(1).clamp_min(torch.finfo(p.dtype).tiny)).clamp(min=0)  # (B,)
    b = t.mean(1) - a * p.mean(1)
    return (a[:, None] * p + b[:, None]).clamp(0, 1).view_as(projections)


class DeconvNetMethod(Method):
    """Depth-evaluation method: project ALL activations of ``layer`` back to pixels (Zeiler & Fergus 2014;
    ``guided=True``: Springenberg et al. 2015) and map the result into [0, 1] with ``to_unit_range``.

    ``name`` is ``"deconvnet"`` (``"guided-backprop"``), with ``"+minmax"`` appended for that mapping; each
    of the four is registered under its name. ``reads_target`` says whether the mapping reads the true
    image (``affine`` does: two numbers per image), and ``caveat`` what that means for its figures.
    """

    def __init__(self, encoder: Encoder, guided: bool = False, mapping: str = "affine") -> None:
        if mapping not in ("affine", "minmax"):
            raise ValueError(f"mapping must be 'affine' or 'minmax'; got {mapping!r}")
        self.encoder, self.deconvnet, self.mapping = encoder, DeconvNet(encoder, guided=guided), mapping
        self.name = ("guided-backprop" if guided else "deconvnet") + ("" if mapping == "affine" else "+minmax")
        self.reads_target = mapping == "affine"
        self.caveat = ("a per-image scale and offset are fitted to the true image (least squares), so its "
                       "PSNR/SSIM are an optimistic bound" if self.reads_target else None)

    def reconstruct(self, batch: Batch, layer: str) -> Tensor:
        images = batch.images  # the projection needs the forward pass's max-pool switches
        proj = self.deconvnet.project(images, layer)  # (B, C, H, W), pixel units
        return to_unit_range(proj, images if self.reads_target else None, self.mapping).to(images.device)
