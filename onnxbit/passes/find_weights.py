"""Find every layer that multiplies by a constant weight (the layer kinds of
onnxbit.layers: MatMul, Gemm, Conv, ConvTranspose), and list every other node
that carries weights, so that no weight goes unmentioned in the report.

Weights may be initializers, Constant nodes, or a constant seen through
value-preserving ops (onnxbit.graph.queries.resolve_constant); nodes inside
If / Loop / Scan bodies are searched too (their weights are often
outer-scope initializers). Each match becomes a WeightSite in
ctx.weight_sites; each node that cannot be converted is recorded as skipped
with the reason.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxbit.graph.queries import NotConstant, RuntimeDependence, iter_graphs, resolve_constant
from onnxbit.layers import kind_for
from onnxbit.passes.base import Pass, PassContext, PassResult


class FindWeightsPass(Pass):
    name = "find_weights"
    ensures = frozenset({"weight-sites"})
    contract = (
        "Matches MatMul(A, W) with constant 2-D W, and Gemm(A, B, C) with constant B (transB, alpha and a constant "
        "C broadcastable to [N] folded in; other C kept as an Add). Adds one WeightSite per match to "
        "ctx.weight_sites, in topological order; records every other MatMul/Gemm/Conv reading a constant as "
        "skipped with the reason, a product of two run-time values (attention scores) as 'listed', and nodes with "
        "weights no layer kind converts (LSTM/GRU/RNN, embedding Gathers, attention contrib ops) as skipped. "
        "Does not change the graph."
    )

    def run(self, ctx: PassContext) -> PassResult:
        ctx.weight_sites.clear()
        runtime = RuntimeDependence()
        for graph in iter_graphs(ctx.graph):
            graph.toposort(recurse_subgraphs=False)
            for node in graph.nodes:
                kind = kind_for(node)
                if kind is None:
                    reason = unconverted_weights(node)
                    if reason:
                        ctx.record(node=node.name, op_type=node.op, action="skipped", reason=reason,
                                   pass_name=self.name,
                                   precision="integer" if quantized_weight_inputs(node.domain, node.op) else "fp32")
                    continue
                try:
                    site = kind.match(node, graph, in_subgraph=graph is not ctx.graph)
                except NotConstant as why:
                    if node.op in ("MatMul", "Gemm") and len(node.inputs) >= 2 and runtime(node.inputs[0]) \
                            and runtime(node.inputs[1]):
                        ctx.record(node=node.name, op_type=node.op, action="listed", reason=ACTIVATIONS_REASON,
                                   pass_name=self.name)
                        continue
                    ctx.record(node=node.name, op_type=node.op, action="skipped", reason=str(why), pass_name=self.name)
                    continue
                ctx.weight_sites.append(site)
        main_sites = [s for s in ctx.weight_sites if not s.in_subgraph]
        if main_sites:
            main_sites[0].position = main_sites[0].position | {"first"}
            main_sites[-1].position = main_sites[-1].position | {"last"}
        return PassResult(modified=False, summary=f"{len(ctx.weight_sites)} convertible layer(s)")


ACTIVATIONS_REASON = "both inputs are activations (e.g. attention scores): not a weight layer"
# Weight inputs of ops that carry weights no layer kind converts.
_RECURRENT = {"LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2)}
# onnxruntime contrib ops that hold projection weights.
ATTENTION_CONTRIB_OPS = ("Attention", "MultiHeadAttention", "QAttention", "PackedAttention", "DecoderAttention",
                      "GroupQueryAttention", "SparseAttention", "EmbedLayerNormalization")
# Ops of already quantized models and their weight inputs, (domain, op) -> indices.
QUANTIZED_WEIGHT_OPS = {("", "ConvInteger"): (1,), ("", "MatMulInteger"): (1,), ("", "QLinearConv"): (3,),
                        ("", "QLinearMatMul"): (3,), ("com.microsoft", "MatMulNBits"): (1,),
                        ("com.microsoft", "DynamicQuantizeMatMul"): (1,), ("com.microsoft", "MatMulIntegerToFloat"): (1,),
                        ("com.microsoft", "QGemm"): (3,)}
QUANTIZED_REASON = "weights already quantized (an integer op); left as they are"
# Smallest table a Gather reads for it to count as an embedding.
_MIN_EMBEDDING_ELEMENTS = 256


def _constant_elements(tensor: gs.Tensor) -> tuple[int, int] | None:
    """(rank, elements) of a constant input, or None."""
    if not tensor.name:
        return None
    if isinstance(tensor, gs.Constant):  # the shape alone: an embedding table is not loaded
        return len(tensor.shape), int(np.prod(tensor.shape))
    try:
        value, _ = resolve_constant(tensor)
    except (NotConstant, KeyError, ValueError):
        return None
    return value.ndim, int(np.prod(value.shape))


def quantized_weight_inputs(domain: str | None, op: str) -> tuple[int, ...]:
    """The weight inputs of an integer op of an already quantized model (() for other ops)."""
    return QUANTIZED_WEIGHT_OPS.get(("" if domain in (None, "ai.onnx") else domain, op), ())


def unconverted_weights(node: gs.Node) -> str:
    """Why a node that carries weights is left as it is ("" for nodes without weights)."""
    quantized = quantized_weight_inputs(node.domain, node.op)
    if quantized:
        if any(i < len(node.inputs) and (c := _constant_elements(node.inputs[i])) is not None and c[0] >= 2
               for i in quantized):
            return f"{node.op}: {QUANTIZED_REASON}"
        return ""
    if node.op in _RECURRENT and node.domain in ("", "ai.onnx", None):
        weights = [_constant_elements(node.inputs[i]) for i in _RECURRENT[node.op] if i < len(node.inputs)]
        if any(w is not None for w in weights):
            return f"{node.op} weights: no low-bit recurrent op (kept float)"
        return ""
    if node.op == "Gather" and node.domain in ("", "ai.onnx", None) and node.inputs:
        table = _constant_elements(node.inputs[0])
        if table is not None and table[0] >= 2 and table[1] >= _MIN_EMBEDDING_ELEMENTS:
            return "embedding table (Gather): a lookup, not a product; kept float"
        return ""
    if node.op in ATTENTION_CONTRIB_OPS and node.domain == "com.microsoft":
        if any((c := _constant_elements(t)) is not None and c[0] >= 2 for t in node.inputs[1:]):
            return f"{node.op} (com.microsoft) projection weights: fused attention op, not converted"
    return ""