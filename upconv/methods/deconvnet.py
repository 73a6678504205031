"""DeconvNet projections (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014)
and guided backpropagation (Springenberg et al., "Striving for Simplicity: The All Convolutional Net", 2015).

A forward pass records the max-pool switches; the selected activations of one layer (all others zeroed) are
then carried back to pixels through the traced graph of operations (``upconv.methods.deconv_graph``), in
reverse topological order, by these rules:

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
- Addition (a residual connection ``relu(f(x) + shortcut(x))``): the signal goes down **both** branches
  unchanged, through the block's convolutions and through the shortcut (identity, or a strided 1×1
  convolution + batch norm when the block downsamples); where a tensor feeds several operations (the input
  of a block feeds both branches) the signals coming back from them are summed. Concatenation: the signal
  is split back into the parts.

These are exactly the transposes autograd applies, except at the ReLU, so a projection equals the input
gradient of the selected activations with every ReLU's backward swapped for the rule above (the tests
check this on plain, batch-norm and residual networks, torchvision's and timm's ResNets included).

Anything else on the path to the input is refused with an error naming the operation. Attention (a product
of two activation-dependent tensors), softmax, layer norm and GELU have no such rule, so transformers and
ConvNeXt-style blocks cannot be projected (the error says why). Projections come back in pixel units: the
signal reaching the network input is multiplied by the encoder's per-channel std, undoing the scale of its
normalisation (no mean is added, since no offset survives the projection). Nothing is attached to the
model: the forward pass and the projection are run step by step from a traced graph, so no hook or
modified module is ever left behind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from upconv.methods.base import Batch, Method
from upconv.methods.deconv_graph import ATTENTION, SUPPORTED, Op, ProjectionGraph, Record, Unsupported
from upconv.methods.deconv_rules import transpose
from upconv.nets.encoder import Encoder


class DeconvNet:
    """Zeiler & Fergus (2014) DeconvNet, or guided backpropagation with ``guided=True``, for an ``Encoder``
    whose graph from the input to the chosen layer has a rule for every operation (module docstring)."""

    def __init__(self, encoder: Encoder, guided: bool = False) -> None:
        self.encoder, self.guided = encoder, guided
        self._graphs: dict[str, ProjectionGraph] = {}

    def graph(self, layer: str) -> ProjectionGraph:
        """The operations from the network input to ``layer``, each with its rule; a clear error if one has none."""
        name = self.encoder.resolve([layer])[0]
        try:
            return self._graph(name)
        except Unsupported as e:
            ok = [n for n in self.supported_layers if self.encoder.layers.index(n) < self.encoder.layers.index(name)]
            attention = any("attention" in type(m).__name__.lower() for m in self.encoder.model.modules())
            raise ValueError(
                f"DeconvNet cannot project from '{name}' of {self.encoder.name}: {e.why} (graph node "
                f"'{e.node.name}'). Supported on the path to the input: {SUPPORTED}. Layers that can be "
                f"projected: {', '.join(ok) or 'none'}."
                + (f" The network also uses attention: {ATTENTION}." if attention else "")
            ) from None

    def _graph(self, name: str) -> ProjectionGraph:
        if name not in self._graphs:
            self._graphs[name] = ProjectionGraph(self.encoder, name)
        return self._graphs[name]

    @property
    def supported_layers(self) -> list[str]:
        """Layers of the encoder whose path to the input has a rule for every operation."""
        ok = []
        for name in self.encoder.layers:
            try:
                self._graph(name)
                ok.append(name)
            except Unsupported:
                pass
        return ok

    def receptive_field(self, layer: str) -> ReceptiveField:
        """The input window each unit of ``layer`` sees (``receptive_field`` below)."""
        return receptive_field(self.graph(layer))

    # ------------------------------------------------------------------ projection
    def _backward(self, signal: Tensor, graph: ProjectionGraph, rec: Record) -> Tensor:
        """Carry ``signal`` (B, K, *layer shape) down to the input: (B, K, C, H, W) in pixel units."""
        signals = {graph.target.name: signal}
        for op in reversed(graph.ops):
            s = None if op.kind in ("input", "const", "meta") else signals.pop(op.node.name, None)
            if s is None:  # the input keeps its signal; a node off the layer's paths receives none
                continue
            for node, back in zip(op.inputs, transpose(op, s, rec, self.guided)):
                signals[node.name] = back if node.name not in signals else signals[node.name] + back
        return signals[graph.input.name] * self.encoder.std.unsqueeze(0)  # (B, K, C, H, W)

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

    def _check(
        self,
        layer: str,
        shape: tuple[int, ...],
        chans: list[int] | None,
        top_k: int | None,
        position: tuple[int, int] | None,
    ) -> None:
        per_group = (shape[1] * shape[2] if len(shape) == 3 else 1) if chans is not None else math.prod(shape)
        if chans is not None and (not chans or not all(0 <= c < shape[0] for c in chans)):
            raise ValueError(
                f"channels must be a non-empty list of indices in 0..{shape[0] - 1} for '{layer}' "
                f"(shape {shape}); got {chans}"
            )
        if top_k is not None and not 1 <= top_k <= per_group:
            raise ValueError(
                f"top_k must be in 1..{per_group} for this selection of '{layer}' (shape {shape}); got {top_k}"
            )
        if position is not None and (
            len(shape) != 3 or not (0 <= position[0] < shape[1] and 0 <= position[1] < shape[2])
        ):
            raise ValueError(
                f"position must be (y, x) inside the {shape[1:] if len(shape) == 3 else 'non-spatial'} "
                f"grid of '{layer}'; got {position}. Omit it for fully connected layers."
            )

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
        graph = self.graph(layer)
        shape = tuple(self.encoder.layer(layer).shape)
        single = isinstance(channels, int)
        chans = None if channels is None else [channels] if single else [int(c) for c in channels]
        self._check(layer, shape, chans, top_k, position)
        with torch.no_grad():
            images = images.to(self.encoder.device)
            rec = graph.forward(self.encoder.normalize(images), self.guided)
            act = rec.output  # (B, *shape)
            if chans is None:
                return self._backward(self._keep(act, 1, top_k, position).unsqueeze(1), graph, rec)[:, 0]
            per, outs = max(1, chunk // images.shape[0]), []
            for i in range(0, len(chans), per):
                idx = torch.tensor(chans[i : i + per], device=act.device)
                sig = act.new_zeros(act.shape[0], len(idx), *shape)  # (B, k, *shape)
                sig[:, torch.arange(len(idx), device=act.device), idx] = self._keep(act[:, idx], 2, top_k, position)
                outs.append(self._backward(sig, graph, rec))
            out = torch.cat(outs, 1)  # (B, K, C, H, W)
            return out[:, 0] if single else out

    def project_signals(self, images: Tensor, layer: str, signals: Callable[[Tensor], Tensor]) -> Tensor:
        """Project signals made from ``layer``'s activations back to pixels through the switches (and, guided,
        the ReLU masks) of ``images``' own forward pass: ``signals`` maps the activations (B, *shape) to
        (B, K, *shape); returns (B, K, C, H, W) in pixel units. The depth evaluation's own floors project a
        constant and another image's activations this way (``DeconvNetMethod.reconstruct_with_floors``)."""
        self.encoder.check_images(images, finite=True)
        graph = self.graph(layer)
        with torch.no_grad():
            rec = graph.forward(self.encoder.normalize(images.to(self.encoder.device)), self.guided)
            return self._backward(signals(rec.output), graph, rec)


def to_unit_range(projections: Tensor, images: Tensor | None = None, mapping: str = "affine") -> Tensor:
    """Map projections (B, C, H, W) into [0, 1], one map per image.

    - ``"affine"``: least-squares scale a ≥ 0 and offset b, shared by all pixels and channels of an image,
      fitted to the true ``images``, then clipped to [0, 1]. A DeconvNet projection has no defined scale or
      offset (biases are dropped, ReLUs rectify), so this scores the structure it recovers under the best
      global brightness/contrast; it reads two numbers of the target per image, so PSNR/SSIM are an
      optimistic bound. A negative best scale is set to 0 (the map would invert the projection), leaving
      the image's mean.
    - ``"minmax"``: (p - min) / (max - min) per image; reads no pixel of the target (the projection itself
      still replays the target's own switches, see ``DeconvNetMethod``).
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


SWITCHES = (
    "the projection replays the true image's own forward pass (its max-pool switches{masks}), so even a signal "
    "that carries nothing of the features draws the image's structure"
)
# What a DeconvNet projection scores from the same image when the layer's features carry nothing of it: its own
# no-information floors, beside which its rows are judged (the mean-image floors are no reference for it).
CONSTANT, SHUFFLED, FITTED = "constant signal", "shuffled signal", "fitted constant"


class DeconvNetMethod(Method):
    """Depth-evaluation method: project ALL activations of ``layer`` back to pixels (Zeiler & Fergus 2014;
    ``guided=True``: Springenberg et al. 2015) and map the result into [0, 1] with ``to_unit_range``.

    ``name`` is ``"deconvnet"`` (``"guided-backprop"``), with ``"+minmax"`` appended for that mapping; each
    of the four is registered under its name. Every variant reads the true image beyond its features: the
    projection replays the image's own max-pool switches (guided: and ReLU masks), and ``affine`` also fits a
    scale and offset to it; so ``reads_target`` is set and its own floors (``reconstruct_with_floors``) are
    what its rows must clear.
    """

    def __init__(self, encoder: Encoder, guided: bool = False, mapping: str = "affine") -> None:
        if mapping not in ("affine", "minmax"):
            raise ValueError(f"mapping must be 'affine' or 'minmax'; got {mapping!r}")
        self.encoder, self.deconvnet, self.mapping = encoder, DeconvNet(encoder, guided=guided), mapping
        self.name = ("guided-backprop" if guided else "deconvnet") + ("" if mapping == "affine" else "+minmax")
        self.reads_target = True
        switches = SWITCHES.format(masks=" and ReLU masks" if guided else "")
        self.caveat = (
            f"a per-image scale and offset are fitted to the true image (least squares) and {switches}"
            if mapping == "affine"
            else f"min-max scaled, reading no pixel of the true image, but {switches}"
        ) + "; its PSNR/SSIM are an optimistic bound, judged against its own floors"
        self.floor_kinds = (CONSTANT, SHUFFLED) + ((FITTED,) if mapping == "affine" else ())

    def _to_unit(self, projections: Tensor, images: Tensor) -> Tensor:
        return to_unit_range(projections, images if self.mapping == "affine" else None, self.mapping).to(images.device)

    def reconstruct(self, batch: Batch, layer: str) -> Tensor:
        images = batch.images  # the projection needs the forward pass's max-pool switches
        return self._to_unit(self.deconvnet.project(images, layer), images)  # (B, C, H, W)

    def reconstruct_with_floors(self, batch: Batch, layer: str) -> tuple[Tensor, dict[str, Tensor]]:
        """The reconstruction and, from the same forward pass, its own floors: the projection of a constant
        signal (all ones) and of another image's activations (the batch rolled by one), both through this
        image's switches, and for ``affine`` the fitted constant (a flat image at the image's mean, what the fit
        gives a projection that explains nothing). A batch of one image has no other image: its shuffled signal
        is its own."""
        images = batch.images

        def signals(act: Tensor) -> Tensor:  # (B, *shape) -> (B, 3, *shape)
            return torch.stack([act, torch.ones_like(act), act.roll(1, 0)], 1)

        proj = self.deconvnet.project_signals(images, layer, signals)  # (B, 3, C, H, W)
        recon, constant, shuffled = (self._to_unit(proj[:, k], images) for k in range(3))
        floors = {CONSTANT: constant, SHUFFLED: shuffled}
        if self.mapping == "affine":
            floors[FITTED] = images.mean((1, 2, 3), keepdim=True).expand_as(images).clone()  # (B, C, H, W)
        return recon, floors


# ---------------------------------------------------------------------- receptive fields
# Which input window a unit sees, walked over the operations of a ``ProjectionGraph`` (DeconvNet figures crop it
# beside each projection).
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
