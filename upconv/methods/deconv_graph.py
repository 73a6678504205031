"""The part of an encoder's traced graph that a DeconvNet projection walks: every operation between the
network input and one layer, in topological order, each classified by the rule that carries a signal back
through it (``upconv.methods.deconvnet``), plus the forward pass that records what the way back needs
(max-pool switches, ReLU masks, shapes); ``upconv.methods.deconvnet.receptive_field`` walks it for a layer's field.

The graph is a DAG, not a chain: a residual addition has two inputs and a tensor that feeds a block and its
shortcut has two consumers. Nodes that do not depend on the input (constants, parameters read with
``get_attr``) are evaluated but carry no signal.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from upconv.nets.encoder import Encoder

_IDENTITY = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
_MODULE_KINDS = (
    (nn.Conv2d, "conv"),
    (nn.Linear, "linear"),
    (nn.ReLU, "relu"),
    (nn.MaxPool2d, "maxpool"),
    (nn.BatchNorm2d, "bn"),
    (nn.AvgPool2d, "avgpool"),
    (nn.AdaptiveAvgPool2d, "avgpool"),
    (nn.Flatten, "reshape"),
    (_IDENTITY, "identity"),
)
_FUNCTION_KINDS = {
    torch.flatten: "reshape",
    torch.reshape: "reshape",
    F.relu: "relu",
    torch.relu: "relu",
    F.avg_pool2d: "avgpool",
    F.adaptive_avg_pool2d: "avgpool",
    operator.add: "add",
    operator.iadd: "add",
    torch.add: "add",
    torch.cat: "cat",
    getattr: "meta",
    torch.permute: "permute",
    torch.transpose: "transpose",
}
_METHOD_KINDS = {
    "view": "reshape",
    "reshape": "reshape",
    "flatten": "reshape",
    "relu": "relu",
    "relu_": "relu",
    "add": "add",
    "add_": "add",
    "size": "meta",
    "dim": "meta",
    "permute": "permute",
    "transpose": "transpose",
    "contiguous": "identity",
}
SUPPORTED = (
    "Conv2d (numeric zero padding), Linear, ReLU, MaxPool2d, BatchNorm2d, AvgPool2d, "
    "AdaptiveAvgPool2d, Flatten/view/reshape/permute/transpose, Dropout, Identity, additions (residual connections) "
    "and concatenations"
)
ATTENTION = (
    "attention multiplies two input-dependent tensors (queries × keys, then the softmax weights × "
    "values); Zeiler & Fergus' rules (switches, rectification, transposed filters) are defined for "
    "operations linear in the signal or gated by a fixed switch, and a product of two activations is neither"
)
# Operations of transformers and modern CNNs with no DeconvNet rule, and why there can be none.
_WHY_NOT = {
    "scaled_dot_product_attention": ATTENTION,
    "softmax": "a softmax normalises each activation by all others, so there is no fixed switch or linear map to "
    "send a signal back through",
    "layer_norm": "layer normalisation divides by a statistic of the activations themselves (not a fixed "
    "running variance, as batch norm at test time does)",
    "gelu": "GELU is not piecewise linear, so DeconvNet's rectification rule does not apply",
    "matmul": "a product of two input-dependent tensors has no DeconvNet rule",
}


@dataclass
class Op:
    """One graph node on the way from the input to the layer. ``kind`` names its projection rule ("const" for
    nodes that do not depend on the input, "meta" for shape queries); ``inputs`` are the nodes that carry its
    signal (those that depend on the input and are tensors)."""

    node: fx.Node
    kind: str
    module: nn.Module | None = None
    inputs: list[fx.Node] = field(default_factory=list)


class Unsupported(Exception):
    """An operation on the path has no projection rule (``why`` says which and, where known, why none can exist)."""

    def __init__(self, node: fx.Node, why: str) -> None:
        super().__init__(why)
        self.node, self.why = node, why


@dataclass
class Record:
    """What the forward pass leaves for the way back: per signal-carrying node its output shape, and per node
    that needs it its max-pool switches (flat indices into H·W) or, for guided backprop, its ReLU mask."""

    shapes: dict[str, torch.Size]
    saved: dict[str, Tensor]
    output: Tensor


def _target_name(node: fx.Node) -> str:
    return getattr(node.target, "__name__", str(node.target))


def _module_path(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


class ProjectionGraph:
    """The ops from the input to ``layer`` of ``encoder`` (topological order), built from the encoder's own FX
    feature extractor, so the traced graph is the one its features come from."""

    def __init__(self, encoder: Encoder, layer: str) -> None:
        self.encoder, self.layer = encoder, encoder.resolve([layer])[0]
        self.module = encoder.graph(self.layer)
        out = next(n for n in self.module.graph.nodes if n.op == "output")
        self.target = next(iter(out.args[0].values()))  # the layer's node
        self.ops = self._ops()
        self.input = next(op.node for op in self.ops if op.node.op == "placeholder")
        if encoder.adapted(self.layer):
            raise Unsupported(self.target, "its features are tokens re-arranged into a grid after the network")

    def _ops(self) -> list[Op]:
        needed, stack = set(), [self.target]
        while stack:  # every ancestor of the layer's node
            n = stack.pop()
            if n not in needed:
                needed.add(n)
                stack.extend(n.all_input_nodes)
        ops, dependent = [], set()
        for n in self.module.graph.nodes:  # graph order is topological
            if n not in needed:
                continue
            ins = [i for i in n.all_input_nodes if i in dependent]
            if n.op == "placeholder":
                op = Op(n, "input")
            elif not ins:
                op = Op(n, "const")  # does not depend on the input: evaluated, carries no signal
            else:
                op = self._classify(n, ins)
            if op.kind not in ("const", "meta"):
                dependent.add(n)  # a shape query ("meta") carries no signal either
            ops.append(op)
        return ops

    def _classify(self, node: fx.Node, inputs: list[fx.Node]) -> Op:
        module, kind = None, None
        if node.op == "call_module":
            module = self.module.get_submodule(str(node.target))
            kind = next((k for cls, k in _MODULE_KINDS if isinstance(module, cls)), None)
            what = f"{type(module).__name__} module '{node.target}'"
            if kind == "conv" and (module.padding_mode != "zeros" or isinstance(module.padding, str)):
                kind, what = None, f"{what} with padding={module.padding!r}, padding_mode={module.padding_mode!r}"
            if kind == "bn" and module.running_var is None:
                kind, what = None, f"{what} without running statistics"
        elif node.op == "call_function":
            kind = _FUNCTION_KINDS.get(node.target)
            what = f"function {_target_name(node)}"
        else:
            kind = _METHOD_KINDS.get(str(node.target)) if node.op == "call_method" else None
            what = f"{node.op} {node.target}"
        if kind in ("relu", "reshape", "identity", "avgpool", "conv", "linear", "bn", "maxpool") and len(inputs) > 1:
            kind, what = None, f"{what} applied to {len(inputs)} input-dependent tensors"
        if kind is None:
            name = (type(module).__name__ if module is not None else _target_name(node)).lower()
            why = next((w for key, w in _WHY_NOT.items() if key.replace("_", "") in name.replace("_", "")), None)
            where = _module_path(node)
            raise Unsupported(
                node,
                f"{what}{f' inside {where!r}' if where and where != node.target else ''} "
                f"has no projection rule" + (f": {why}" if why else ""),
            )
        return Op(node, kind, module, inputs)

    # ------------------------------------------------------------------ forward with switches
    def forward(self, x: Tensor, guided: bool) -> Record:
        """Run the graph on normalised input ``x`` (B, C, H, W), recording shapes, switches and masks."""
        env: dict[fx.Node, Any] = {}
        rec = Record({}, {}, x)
        for op in self.ops:
            n = op.node
            if n.op == "placeholder":
                env[n] = x
            elif n.op == "get_attr":
                env[n] = _fetch(self.module, str(n.target))
            elif op.kind == "maxpool":
                m, (inp,) = op.module, op.inputs
                env[n], rec.saved[n.name] = F.max_pool2d(
                    env[inp], m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True
                )
            else:
                if op.kind == "relu" and guided:
                    rec.saved[n.name] = env[op.inputs[0]] > 0
                env[n] = _call(self.module, n, env)
            if isinstance(env[n], Tensor):
                rec.shapes[n.name] = env[n].shape
        rec.output = env[self.target]
        return rec


def _fetch(module: nn.Module, target: str) -> Any:
    obj: Any = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _call(module: fx.GraphModule, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
    args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: env[a])
    if node.op == "call_module":
        return module.get_submodule(str(node.target))(*args, **kwargs)
    if node.op == "call_function":
        target = operator.add if node.target is operator.iadd else node.target  # never overwrite a kept tensor
        kwargs = {k: (False if k == "inplace" else v) for k, v in kwargs.items()}
        return target(*args, **kwargs)
    kwargs = {k: (False if k == "inplace" else v) for k, v in kwargs.items()}
    method = {"add_": "add", "relu_": "relu"}.get(str(node.target), str(node.target))
    return getattr(args[0], method)(*args[1:], **kwargs)
