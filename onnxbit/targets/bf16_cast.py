"""bfloat16 storage of a float layer for any runtime (targets "ort" and "onnx"): the
weight's bfloat16 bits as a BFLOAT16 initializer and a Cast to float feeding the
unchanged node. Cast is exact, so the layer computes what the original computes, bit
for bit, from half the bytes on disk; onnxruntime constant-folds the Cast when it
creates the session (measured: 1536 x 32000 MatMul 12.4 vs 12.0 ms, outputs equal),
so it then runs at the original's speed. With graph optimizations disabled the Cast
would run on every call; the report's note says so."""

from __future__ import annotations

import ml_dtypes  # numpy's bfloat16 dtype, which onnx reads and writes bfloat16 tensors with
import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxbit.graph.gs_adapter import float32_chunks
from onnxbit.graph.queries import VALUE_PRESERVING_OPS, NotConstant, resolve_constant
from onnxbit.layers.base import WeightSite
from onnxbit.passes.base import PassContext
from onnxbit.reference.bf16_matmul import bf16_bits_of_chunks, bf16_bits_or_none
from onnxbit.targets.base import LayerInfo, ModelIndex, PackedWeight, bits_per_weight

STORAGE = "Cast/BFLOAT16"
MIN_OPSET = 13  # Cast from bfloat16
NOTE = ("float layers whose weights are bfloat16 numbers are stored as bfloat16 + Cast (lossless, half the bytes); "
        "onnxruntime folds the Cast once when it creates the session, so they run as the original's (with graph "
        "optimizations disabled the Cast would run on every call)")


WEIGHT_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")  # ops reading their weight as input 1


def read_by_weight_inputs_only(tensor: gs.Tensor) -> bool:
    """Every node that reads the constant behind `tensor` (through the value-preserving ops
    exporters put in front of weights) is a MatMul, Gemm, Conv or ConvTranspose reading it
    as its weight: a table an embedding Gather reads too (tied weights) would stay in
    float32 beside the bfloat16 copy and grow the file."""
    root = tensor
    while root.inputs and root.inputs[0].op in VALUE_PRESERVING_OPS and root.inputs[0].inputs:
        root = root.inputs[0].inputs[0]
    pending = [root]
    while pending:
        current = pending.pop()
        for node in current.outputs:
            if node.op in VALUE_PRESERVING_OPS and node.inputs and node.inputs[0] is current:
                pending.extend(node.outputs)
            elif node.op not in WEIGHT_OPS or len(node.inputs) < 2 or node.inputs[1] is not current:
                return False
    return True


def bf16_constant(ctx: PassContext, base: str, bits: np.ndarray) -> gs.Constant:
    """A BFLOAT16 constant of uint16 bfloat16 bits."""
    return gs.Constant(ctx.fresh_name(f"{base}_bf16"), bits.view(ml_dtypes.bfloat16))


def stored_bits(tensor: gs.Tensor) -> np.ndarray | None:
    """The bfloat16 bits of the float32 constant a node reads through `tensor` (in its
    shape), or None when it is not constant or not all bfloat16 numbers. A borrowed
    weight is scanned straight from its payload a chunk at a time: a 0.7B LLM's head and
    embedding (197 MB each) never exist as float32 copies in the conversion."""
    chunks = float32_chunks(tensor)
    if chunks is not None:
        return bf16_bits_of_chunks(chunks, tuple(int(d) for d in tensor.shape))
    try:
        values, _ = resolve_constant(tensor)
    except NotConstant:
        return None
    return bf16_bits_or_none(values)


# The weight error of a layer whose stored weight holds the original's values.
LOSSLESS_ERROR = {"mse": 0.0, "sqnr_db": float("inf"), "cosine": 1.0}


def lossless(packed: PackedWeight, note: str) -> PackedWeight:
    packed.weight_error = dict(LOSSLESS_ERROR)
    packed.notes.append(note)
    return packed


def pack_bf16_cast(ctx: PassContext, base: str, site: WeightSite) -> PackedWeight | None:
    """The weight tensor the node reads (a MatMul's, Gemm's or Conv's), as bfloat16, when
    all its values are bfloat16 numbers."""
    if ctx.graph.opset < MIN_OPSET or not read_by_weight_inputs_only(site.node.inputs[1]):
        return None
    bits = stored_bits(site.node.inputs[1])
    if bits is None:
        return None
    packed = PackedWeight(precision="bf16", storage=STORAGE, constants=[bf16_constant(ctx, base, bits)], attrs={},
                          k=site.k, n=site.n)
    if NOTE not in ctx.notes:
        ctx.notes.append(NOTE)
    return lossless(packed, "its weight holds only bfloat16 values: stored as bfloat16 + Cast (lossless, half the "
                            "bytes)")


def emit_bf16_cast(ctx: PassContext, site: WeightSite, packed: PackedWeight) -> gs.Node:
    """The node reads its weight through Cast(to=float) of the bfloat16 constant; nothing else changes."""
    weight = gs.Variable(ctx.fresh_name(f"{packed.constants[0].name}_float"), dtype=np.float32,
                         shape=list(packed.constants[0].shape))
    cast = gs.Node("Cast", ctx.fresh_name(f"{site.node.name}_weight_cast"), attrs={"to": 1},
                   inputs=[packed.constants[0]], outputs=[weight])
    site.graph.nodes.append(cast)
    site.node.inputs[1] = weight
    return site.node


def recognize(node: onnx.NodeProto, attrs: dict, index: ModelIndex) -> LayerInfo | None:
    """A MatMul/Gemm/Conv/ConvTranspose whose weight is Cast(to=float) of a bfloat16 constant."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in WEIGHT_OPS or len(node.input) < 2:
        return None
    cast = index.producer(node.input[1])
    if cast is None or cast.op_type != "Cast" or not cast.input:
        return None
    if any(a.name == "to" and a.i != onnx.TensorProto.FLOAT for a in cast.attribute):
        return None
    weight = index.constant_tensor(cast.input[0])
    if weight is None or weight.data_type != onnx.TensorProto.BFLOAT16:
        return None
    dims = [int(d) for d in weight.dims]
    count = int(np.prod(dims)) if dims else 1
    size = index.constant_bytes([cast.input[0]])
    if node.op_type in ("MatMul", "Gemm") and len(dims) == 2:
        trans_b = node.op_type == "Gemm" and attrs.get("transB", 0) == 1
        k, n = (dims[1], dims[0]) if trans_b else (dims[0], dims[1])
        return LayerInfo(node.name, node.op_type, "bf16", STORAGE, k, n, size, bits_per_weight(size, count))
    return LayerInfo(node.name, node.op_type, "bf16", STORAGE, None, None, size, bits_per_weight(size, count),
                     {"shape": dims})
