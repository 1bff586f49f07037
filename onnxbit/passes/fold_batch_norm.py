"""Fold inference BatchNormalization into the Conv in front of it.

onnxruntime folds such a BatchNormalization into the Conv's float weight when
it loads the original model (its Conv + BatchNormalization fusion), so the
weight the original really runs is W * g. A converted Conv is a quantized op
onnxruntime cannot fuse into, and the BatchNormalization would stay a node of
its own: on the PP-OCR classifier converted with int8 activations, its 35
BatchNormalizations took 0.9 ms of 10.2 per batch (one thread), the original
taking 9.7 ms in all. Folding first quantizes the weight the original runs and
leaves no node behind.

Pattern, check and rewrite as three plain functions: `pattern` finds the Conv
feeding a BatchNormalization, `problem` says why one cannot fold (or None),
`rewrite` folds it.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxbit.graph.queries import NotConstant, iter_graphs, resolve_constant

from .base import Pass, PassContext, PassResult


def pattern(bn: gs.Node) -> gs.Node | None:
    """The Conv whose output is the BatchNormalization's input, if any."""
    if bn.op != "BatchNormalization" or not bn.inputs or len(bn.inputs[0].inputs) != 1:
        return None
    conv = bn.inputs[0].inputs[0]
    return conv if conv.op == "Conv" else None


def float_value(tensor: gs.Tensor) -> np.ndarray | None:
    """A float32 constant's value (an initializer or a Constant node's output, maybe through layout ops),
    else None: a weight computed at run time, such as a QAT fake-quant chain."""
    try:
        value = resolve_constant(tensor)[0]
    except NotConstant:
        return None
    return value if value.dtype == np.float32 else None


def problem(bn: gs.Node, conv: gs.Node, graph: gs.Graph) -> str | None:
    """Why this BatchNormalization cannot be folded into conv, or None."""
    if len([out for out in bn.outputs if out.name]) != 1 or int(bn.attrs.get("training_mode", 0)):
        return "training-mode BatchNormalization (running statistics as outputs)"
    if len(bn.inputs) != 5 or any(float_value(t) is None for t in bn.inputs[1:]):
        return "scale, bias, mean or variance is not a float32 constant"
    middle = bn.inputs[0]
    if len(middle.outputs) != 1 or middle in graph.outputs:
        return f"the Conv output {middle.name!r} is also used elsewhere"
    weight = float_value(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if weight is None:
        return "the Conv weight is not a float32 constant (a QAT chain, or a graph input)"
    if len(conv.inputs) > 2 and conv.inputs[2].name and float_value(conv.inputs[2]) is None:
        return "the Conv bias is not a float32 constant"
    if any(float_value(t).size != weight.shape[0] for t in bn.inputs[1:]):
        return f"the statistics do not have the Conv's {weight.shape[0]} output channels"
    if exactly_ternary(weight):
        return "the Conv weight is exactly ternary already (folding would give each channel its own scale)"
    return None


def exactly_ternary(weight: np.ndarray) -> bool:
    """{-s, 0, +s} with one s for the whole weight: a per-tensor ternary proof folding would break."""
    magnitudes = np.abs(weight).reshape(-1)
    top = magnitudes.max(initial=0.0)
    return bool(top > 0 and np.all((magnitudes == 0) | (magnitudes == top)))


def rewrite(ctx: PassContext, graph: gs.Graph, bn: gs.Node, conv: gs.Node) -> None:
    """W' = W * g per output channel, B' = (B - mean) * g + beta, g = scale / sqrt(var + epsilon), in
    float32 as onnxruntime's fusion computes them; the Conv then writes the BatchNormalization's output."""
    scale, beta, mean, var = (float_value(t) for t in bn.inputs[1:])
    epsilon = np.float32(bn.attrs.get("epsilon", 1e-5))
    g = (scale / np.sqrt(var + epsilon)).astype(np.float32)
    weight = float_value(conv.inputs[1])
    folded_w = (weight * g.reshape(-1, *([1] * (weight.ndim - 1)))).astype(np.float32)
    has_bias = len(conv.inputs) > 2 and conv.inputs[2].name
    bias = float_value(conv.inputs[2]) if has_bias else np.zeros_like(mean)
    folded_b = ((bias - mean) * g + beta).astype(np.float32)
    new_w = gs.Constant(ctx.fresh_name(f"{conv.inputs[1].name}_bn_folded"), np.ascontiguousarray(folded_w))
    new_b = gs.Constant(ctx.fresh_name(f"{conv.name}_bias_bn_folded"), folded_b)
    conv.inputs[1] = new_w
    if has_bias:
        conv.inputs[2] = new_b
    else:
        while len(conv.inputs) > 2:  # an empty-named optional input
            conv.inputs.pop()
        conv.inputs.append(new_b)
    outputs = list(bn.outputs)
    bn.inputs.clear()
    bn.outputs.clear()
    conv.outputs.clear()
    conv.outputs.extend(outputs)
    graph.nodes.remove(bn)


class FoldBatchNormPass(Pass):
    name = "fold-batch-norm"
    ensures = frozenset({"batch-norms-folded"})
    must_precede = frozenset({"weight-proofs", "weight-sites"})
    contract = (
        "Folds each inference BatchNormalization whose input is the output of a Conv used by nothing else, with "
        "float32 constant weight, bias and statistics, into that Conv (W * g, (B - mean) * g + beta, g = scale / "
        "sqrt(var + epsilon)), in every graph and subgraph, as onnxruntime does for the float model when it loads "
        "it; the weight passes then see the weight the original runs. Others stay as they are; the report "
        "counts both."
    )

    def run(self, ctx: PassContext) -> PassResult:
        folded, kept = 0, {}
        for graph in iter_graphs(ctx.graph):
            for bn in [node for node in graph.nodes if node.op == "BatchNormalization"]:
                conv = pattern(bn)
                if conv is None:
                    continue
                why = problem(bn, conv, graph)
                if why is None:
                    rewrite(ctx, graph, bn, conv)
                    folded += 1
                else:
                    kept[bn.name] = why
        if folded:
            ctx.notes.append(f"{folded} BatchNormalization node(s) folded into the Conv in front of them (as "
                             "onnxruntime does for the original when it loads it): the weights quantized are the "
                             "ones the original runs")
        if kept:
            name, why = next(iter(kept.items()))
            ctx.notes.append(f"{len(kept)} BatchNormalization node(s) after a Conv left as they are, e.g. "
                             f"{name!r}: {why}")
        return PassResult(folded > 0, f"{folded} BatchNormalization(s) folded, {len(kept)} kept")


def fold_batch_norms(model):
    """The model with this pass applied (a float model computing the same): what calibration measures,
    so that its layers, weights and codes are the ones the conversion then quantizes."""
    from onnxbit.passes.manager import PassManager

    folded, _ = PassManager([FoldBatchNormPass()]).run(model)
    return folded
