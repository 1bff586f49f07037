"""Fuse the activation after a TernaryConv into it (its `activation` attribute).

onnxruntime fuses Relu, Clip, HardSigmoid, LeakyRelu and HardSwish into its
own Conv when it loads a float model; a TernaryConv it cannot fuse into, so a
converted model kept them as nodes of their own, each reading and writing the
conv's whole output again. On a PP-LCNet orientation classifier (rapid-
orientation from PyPI, batch 8) converted to ternary, its HardSwish nodes
took 14 of 34 ms a batch, and the converted model ran 1.37x slower than the
original although its convs ran 1.9x faster.

Pattern, check and rewrite as three plain functions: `pattern` finds the
activation reading a TernaryConv's output (one node; HardSigmoid(1/6, 0.5)
and the Mul of the two, as exporters write HardSwish before opset 14;
Sigmoid and the Mul of the two, SiLU; or y * Clip(y + 3, 0, 6) / 6 as Add,
Clip, Mul and Div, paddle2onnx's form),
`check` resolves its parameters or says why it cannot fuse, `rewrite` moves it
into the TernaryConv's attributes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxbit.graph.queries import NotConstant, resolve_constant
from onnxbit.ops.schemas import DOMAIN, TERNARY_CONV

from .base import Pass, PassContext, PassResult, rewrite_matches

ONE_NODE = ("Relu", "LeakyRelu", "Clip", "HardSigmoid", "HardSwish", "Sigmoid")
HARD_SWISH_ALPHA, HARD_SWISH_BETA = np.float32(1.0 / 6.0), np.float32(0.5)


@dataclass
class Match:
    nodes: list[gs.Node]  # the activation's nodes, the last one writing its output
    name: str  # the activation it computes


def pattern(conv: gs.Node) -> Match | None:
    """The activation reading `conv`'s output, if conv is a TernaryConv without one."""
    if conv.op != TERNARY_CONV or conv.domain != DOMAIN or "activation" in conv.attrs or len(conv.outputs) != 1:
        return None
    readers = list(conv.outputs[0].outputs)
    if len(readers) == 1 and readers[0].op in ONE_NODE and readers[0].domain in (None, "", "ai.onnx"):
        return Match(readers, readers[0].op)
    y = conv.outputs[0]
    kinds = {(r.op, r.domain or "") for r in readers}
    # y * gate(y): HardSigmoid as exporters write HardSwish before opset 14, Sigmoid as SiLU (YOLO's activation)
    for gate_op, name in (("HardSigmoid", "HardSwish"), ("Sigmoid", "Silu")):
        if len(readers) == 2 and kinds == {(gate_op, ""), ("Mul", "")}:
            gate = next(r for r in readers if r.op == gate_op)
            mul = next(r for r in readers if r.op == "Mul")
            if _only_reader(gate, mul) and _reads(mul, y, gate.outputs[0]):
                return Match([gate, mul], name)
    if len(readers) == 2 and kinds == {("Add", ""), ("Mul", "")}:  # (y * Clip(y + 3, 0, 6)) / 6
        add = next(r for r in readers if r.op == "Add")
        mul = next(r for r in readers if r.op == "Mul")
        clip = _single_reader(add)
        div = _single_reader(mul)
        if (clip is not None and clip.op == "Clip" and _only_reader(clip, mul) and _reads(mul, y, clip.outputs[0])
                and div is not None and div.op == "Div" and div.inputs[0] is mul.outputs[0]):
            return Match([add, clip, mul, div], "HardSwishRelu6")
    return None


def _single_reader(node: gs.Node) -> gs.Node | None:
    readers = list(node.outputs[0].outputs) if len(node.outputs) == 1 else []
    return readers[0] if len(readers) == 1 and (readers[0].domain or "") == "" else None


def _only_reader(node: gs.Node, reader: gs.Node) -> bool:
    return len(node.outputs) == 1 and list(node.outputs[0].outputs) == [reader]


def _reads(node: gs.Node, a: gs.Tensor, b: gs.Tensor) -> bool:
    """node's two inputs are a and b, in either order (a product is the same either way)."""
    return len(node.inputs) == 2 and {id(t) for t in node.inputs} == {id(a), id(b)}


def _float_scalar(tensor: gs.Tensor) -> float | None:
    try:
        value = resolve_constant(tensor)[0]
    except NotConstant:
        return None
    return float(value.reshape(())) if value.size == 1 and value.dtype == np.float32 else None


def check(conv: gs.Node, match: Match, graph: gs.Graph) -> dict[str, object] | str:
    """The TernaryConv attributes that say the activation, or why it cannot be fused."""
    y = conv.outputs[0]
    if y in graph.outputs:
        return f"the conv output {y.name!r} is also a graph output"
    if any(node not in graph.nodes for node in match.nodes):
        return "the activation is inside a subgraph"
    if any(len(node.outputs) != 1 for node in match.nodes):
        return "the activation has more than one output"
    node = match.nodes[0]
    attrs: dict[str, object] = {"activation": match.name}
    if match.name == "HardSwishRelu6":
        add, clip, _, div = match.nodes
        shift = next((_float_scalar(t) for t in add.inputs if t is not y), None)
        bounds = _clip_bounds(clip)
        if shift != 3.0 or bounds != (0.0, 6.0) or _float_scalar(div.inputs[1]) != 6.0:
            return "y * Clip(y + a, lo, hi) / d is HardSwish only with a = 3, lo = 0, hi = 6, d = 6 (constants)"
        return attrs
    if match.name == "Silu":
        return attrs
    if len(match.nodes) == 2:  # HardSigmoid + Mul: HardSwish only with ONNX's constants
        alpha = np.float32(node.attrs.get("alpha", 0.2))
        beta = np.float32(node.attrs.get("beta", 0.5))
        if alpha != HARD_SWISH_ALPHA or beta != HARD_SWISH_BETA:
            return f"x * HardSigmoid(x) with alpha={float(alpha):g}, beta={float(beta):g} is not HardSwish"
        return attrs
    if match.name == "LeakyRelu":
        attrs["activation_alpha"] = float(node.attrs.get("alpha", 0.01))
    elif match.name == "HardSigmoid":
        attrs["activation_alpha"] = float(node.attrs.get("alpha", 0.2))
        attrs["activation_beta"] = float(node.attrs.get("beta", 0.5))
    elif match.name == "Clip":
        bounds = _clip_bounds(node)
        if isinstance(bounds, str):
            return bounds
        if not bounds[0] <= bounds[1]:
            return f"Clip's min {bounds[0]:g} is above its max {bounds[1]:g}"
        attrs["activation_min"], attrs["activation_max"] = bounds
    return attrs


def _clip_bounds(clip: gs.Node) -> tuple[float, float] | str:
    """A Clip's (min, max) from its opset-6 attributes or constant inputs (absent: unbounded), or why not."""
    bounds = []
    for index, key in ((1, "min"), (2, "max")):
        if key in clip.attrs:  # opset < 11
            bounds.append(float(clip.attrs[key]))
        elif len(clip.inputs) > index and clip.inputs[index].name:
            value = _float_scalar(clip.inputs[index])
            if value is None:
                return f"Clip's {key} is not a float32 constant scalar"
            bounds.append(value)
        else:
            bounds.append(float("-inf") if key == "min" else float("inf"))
    return bounds[0], bounds[1]


def rewrite(graph: gs.Graph, conv: gs.Node, match: Match, attrs: dict[str, object]) -> None:
    """The TernaryConv takes the attributes and writes the activation's output; the activation goes."""
    conv.attrs.update(attrs)
    outputs = list(match.nodes[-1].outputs)
    for node in match.nodes:
        node.inputs.clear()
        node.outputs.clear()
        graph.nodes.remove(node)
    conv.outputs.clear()
    conv.outputs.extend(outputs)


class FuseActivationPass(Pass):
    name = "fuse_activation"
    requires = frozenset({"weights-packed"})
    contract = (
        "Moves a Relu, LeakyRelu, Clip (constant bounds), HardSigmoid, HardSwish or Sigmoid (or HardSigmoid(1/6, "
        "0.5) or Sigmoid and the Mul of its input and output, HardSwish and Silu, or y * Clip(y + 3, 0, 6) / 6 as "
        "four nodes, which becomes "
        "HardSwishRelu6, the same arithmetic) that is the only reader of a TernaryConv's output into that "
        "TernaryConv's activation attributes, in every graph and subgraph, as onnxruntime fuses them into its "
        "own Conv; the output keeps its name. Others stay, the report says why."
    )

    def run(self, ctx: PassContext) -> PassResult:
        done, kept = rewrite_matches(ctx.graph, TERNARY_CONV, pattern, check, rewrite)
        fused = Counter(match.name for match in done)
        if fused:
            counts = ", ".join(f"{name} x{count}" for name, count in sorted(fused.items()))
            ctx.notes.append(f"{sum(fused.values())} activation node(s) fused into the TernaryConv before them "
                             f"({counts}), as onnxruntime fuses them into its own Conv")
        if kept:
            name, why = next(iter(kept.items()))
            ctx.notes.append(f"{len(kept)} activation(s) after a TernaryConv left as nodes, e.g. after {name!r}: "
                             f"{why}")
        return PassResult(bool(fused), f"{sum(fused.values())} activation(s) fused, {len(kept)} kept")
