"""com.onnxbit::BFloat16MatMul (target "onnxbit") for float layers whose weights
are all bfloat16 numbers: a bf16 checkpoint exported to a float32 model (every
released BitNet model; its output layer stays float). The weight is stored in
its bfloat16 bits, losslessly, and multiplied as the same float32 values: half
the bytes on disk and, what sets an LLM's decode speed, half the bytes read.

Measured with the op against onnxruntime's fp32 MatMul on the same weights
(1536 x 32000, a 0.7B BitNet's head; one thread / two threads, Xeon with AVX-512):
M=1 1.7x / 1.6-2.4x faster (both memory bound), M=8 1.6x / 2.3x, M=128 0.87x / 1.0x
(compute bound: MLAS packs both operands, this kernel only the weight); the
conversion's note gives the BERT-sized figures (SPEED_NOTE)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxbit.layers.base import WeightSite
from onnxbit.passes.base import PassContext
from onnxbit.passes.rewrite import emit_op
from onnxbit.reference.bf16_matmul import bf16_bits_or_none
from onnxbit.targets.bf16_cast import bf16_constant, lossless, read_by_weight_inputs_only, stored_bits
from onnxbit.targets.base import LayerInfo, ModelIndex, PackedWeight, bits_per_weight

DOMAIN = "com.onnxbit"
OPSET = 1
OP = "BFloat16MatMul"
STORAGE = f"{OP}/bf16"
# BFloat16MatMul where reading the weight bounds the layer: its float32 weight is at least
# this big (an LLM's output head: 1536 x 32000 is 188 MiB). Smaller weights stay in cache,
# the layer is bound by compute, where MLAS is faster (magika's 64 KiB and 428 KiB Dense
# layers ran 1.02-1.10x slower as the op, 1.01x slower to 1.08x faster as bfloat16 + Cast):
# they get the base class's bfloat16 + Cast.
MIN_WEIGHT_BYTES = 16 << 20
SPEED_NOTE = ("float layers of 16 MiB or more whose weights are bfloat16 numbers run as BFloat16MatMul: 1.5-2.4x faster "
              "than fp32 MatMul at one row (LLM decode) but 0.88-1.01x at 16-128 rows at one thread, down to 0.65x at "
              "two; for batch or long-prompt work set \"float_storage\": \"bf16-cast\" (the same file size, the "
              "original's speed)")


def runs_as_op(site: WeightSite) -> bool:
    """A MatMul/Gemm whose float32 weight is big enough for the op to pay (MIN_WEIGHT_BYTES)."""
    return site.conv is None and site.k * site.n * 4 >= MIN_WEIGHT_BYTES


def weight_bits(site: WeightSite) -> np.ndarray | None:
    """The bfloat16 bits of a MatMul/Gemm layer's (runs_as_op) effective [K, N] weight, or
    None: a table a Gather reads too (bf16_cast.read_by_weight_inputs_only), or values that are
    not all bfloat16 numbers. A MatMul reads its weight as the op stores it, so that is
    scanned without a float32 copy; a Gemm's (transB, alpha) is computed first."""
    if not read_by_weight_inputs_only(site.node.inputs[1]):
        return None
    if site.node.op == "MatMul":
        return stored_bits(site.node.inputs[1])
    return bf16_bits_or_none(site.weight)


def pack_bf16_matmul(ctx: PassContext, base: str, bits: np.ndarray) -> PackedWeight:
    """bits: the bfloat16 bits of the layer's [K, N] weight."""
    k, n = bits.shape
    packed = PackedWeight(precision="bf16", storage=STORAGE, constants=[bf16_constant(ctx, base, bits)], attrs={},
                          k=k, n=n)
    if SPEED_NOTE not in ctx.notes:
        ctx.notes.append(SPEED_NOTE)
    return lossless(packed, "its weight holds only bfloat16 values: stored as bfloat16 (lossless, half the bytes) "
                            "and run by BFloat16MatMul")


def emit_bf16_matmul(ctx: PassContext, site: WeightSite, packed: PackedWeight) -> gs.Node:
    return emit_op(ctx, site, packed, OP, DOMAIN, OPSET, bias_input=2)


def recognize(node: onnx.NodeProto, attrs: dict, index: ModelIndex) -> LayerInfo | None:
    if node.domain != DOMAIN or node.op_type != OP:
        return None
    weight = index.constant_tensor(node.input[1]) if len(node.input) > 1 else None
    k, n = (int(weight.dims[0]), int(weight.dims[1])) if weight is not None and len(weight.dims) == 2 else (None, None)
    size = index.constant_bytes(node.input[1:2])
    return LayerInfo(node.name, node.op_type, "bf16", STORAGE, k, n, size,
                     bits_per_weight(size, k * n if k and n else None))
