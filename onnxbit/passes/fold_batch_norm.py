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
feeding a BatchNormalization, `check` resolves the constants it needs or says
why one cannot fold, `rewrite` folds it with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxbit.graph.queries import NotConstant, resolve_constant

from .base import Pass, PassContext, PassResult, rewrite_matches
from .fold.exact_ternary import NotTernaryError, split_exact_ternary


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


@dataclass
class Operands:
    """The constants a fold reads, each resolved once."""

    weight: np.ndarray
    bias: np.ndarray | None
    scale: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray


def check(bn: gs.Node, conv: gs.Node, graph: gs.Graph) -> Operands | str:
    """The operands of this fold, or why this BatchNormalization cannot be folded into conv."""
    if len([out for out in bn.outputs if out.name]) != 1 or int(bn.attrs.get("training_mode", 0)):
        return "training-mode BatchNormalization (running statistics as outputs)"
    statistics = [float_value(t) for t in bn.inputs[1:]] if len(bn.inputs) == 5 else [None]
    if any(value is None for value in statistics):
        return "scale, bias, mean or variance is not a float32 constant"
    middle = bn.inputs[0]
    if len(middle.outputs) != 1 or middle in graph.outputs:
        return f"the Conv output {middle.name!r} is also used elsewhere"
    weight = float_value(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if weight is None:
        return "the Conv weight is not a float32 constant (a QAT chain, or a graph input)"
    has_bias = len(conv.inputs) > 2 and conv.inputs[2].name
    bias = float_value(conv.inputs[2]) if has_bias else None
    if has_bias and bias is None:
        return "the Conv bias is not a float32 constant"
    if any(value.size != weight.shape[0] for value in statistics):
        return f"the statistics do not have the Conv's {weight.shape[0]} output channels"
    if per_tensor_ternary(weight):
        return "the Conv weight is exactly ternary already (folding would give each channel its own scale)"
    return Operands(weight, bias, *(value.reshape(-1) for value in statistics))


def per_tensor_ternary(weight: np.ndarray) -> bool:
    """{-s, 0, +s} with one s > 0 for the whole weight (split_exact_ternary's per-tensor case): a
    proof folding would break."""
    if not weight.any():
        return False
    try:
        return not split_exact_ternary(weight.reshape(weight.shape[0], -1).T).per_channel
    except NotTernaryError:
        return False


def rewrite(ctx: PassContext, graph: gs.Graph, bn: gs.Node, conv: gs.Node, operands: Operands) -> None:
    """W' = W * g per output channel, B' = (B - mean) * g + beta, g = scale / sqrt(var + epsilon), in
    float32 as onnxruntime's fusion computes them; the Conv then writes the BatchNormalization's output."""
    o = operands
    epsilon = np.float32(bn.attrs.get("epsilon", 1e-5))
    g = (o.scale / np.sqrt(o.var + epsilon)).astype(np.float32)
    folded_w = (o.weight * g.reshape(-1, *([1] * (o.weight.ndim - 1)))).astype(np.float32)
    bias = o.bias if o.bias is not None else np.zeros_like(o.mean)
    folded_b = ((bias - o.mean) * g + o.beta).astype(np.float32)
    new_w = gs.Constant(ctx.fresh_name(f"{conv.inputs[1].name}_bn_folded"), np.ascontiguousarray(folded_w))
    new_b = gs.Constant(ctx.fresh_name(f"{conv.name}_bias_bn_folded"), folded_b)
    conv.inputs[1] = new_w
    if o.bias is not None:
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
        done, kept = rewrite_matches(ctx.graph, "BatchNormalization", pattern, check,
                                     lambda graph, bn, conv, operands: rewrite(ctx, graph, bn, conv, operands))
        folded = len(done)
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
