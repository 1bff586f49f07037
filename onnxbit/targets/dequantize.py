"""DequantizeLinear on an INT2 / INT4 / INT8 initializer (UINT* with zero
points when asymmetric), then MatMul: standard ONNX only (target "onnx").

Ternary and binary codes are stored as INT2 (they are -1, 0, 1). Opsets: INT8
per tensor/channel needs 13, blocked scales and INT4 need 21, INT2 needs 25.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxbit.graph.gs_adapter import proto_constant
from onnxbit.layers.base import WeightSite
from onnxbit.passes.base import PassContext
from onnxbit.passes.rewrite import activation_for, array_constant, per_token_int8, replace_node
from onnxbit.targets.base import LayerInfo, ModelIndex, PackedWeight, bits_per_weight

_SIGNED = {2: onnx.TensorProto.INT2, 4: onnx.TensorProto.INT4, 8: onnx.TensorProto.INT8}
_UNSIGNED = {2: onnx.TensorProto.UINT2, 4: onnx.TensorProto.UINT4, 8: onnx.TensorProto.UINT8}
_MIN_OPSET = {2: 25, 4: 21, 8: 13}
FUSION_NOTE = (
    "DequantizeLinear + MatMul: onnxruntime fuses these into MatMulNBits with int8 activations by default "
    "(2/4-bit weights, and 8-bit in recent versions, 1.32 here); set the session config entry "
    "session.qdq_matmulnbits_accuracy_level=0 for float32 activations"
)


def notes(packed: PackedWeight) -> list[str]:
    """What a user should know about running a layer emitted here."""
    return ([FUSION_NOTE] + list(packed.notes)) if packed.storage.startswith("DequantizeLinear/") else []


BITS_OF_TYPE = {"INT2": 2, "UINT2": 2, "INT4": 4, "UINT4": 4, "INT8": 8, "UINT8": 8}


def required_opset(bits: int, granularity: str) -> int:
    """The ai.onnx opset DequantizeLinear needs for these codes and scales."""
    return max(_MIN_OPSET[bits], 21 if granularity == "group" else 13)


def subbyte_proto(name: str, values: np.ndarray, bits: int, signed: bool) -> onnx.TensorProto:
    """A TensorProto of INT2/INT4/UINT2/UINT4 (packed, first element in the low
    bits, as the ONNX spec stores them) or INT8/UINT8."""
    proto = onnx.TensorProto()
    proto.name = name
    proto.data_type = (_SIGNED if signed else _UNSIGNED)[bits]
    proto.dims.extend(int(d) for d in values.shape)
    flat = values.reshape(-1)
    if bits == 8:
        proto.raw_data = flat.astype(np.int8 if signed else np.uint8).tobytes()
        return proto
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    padded = np.zeros(-(-flat.size // per_byte) * per_byte, dtype=np.uint8)
    padded[:flat.size] = flat.astype(np.int16) & mask  # two's complement in `bits` bits
    grouped = padded.reshape(-1, per_byte)
    out = grouped[:, 0].copy()
    for i in range(1, per_byte):
        out |= grouped[:, i] << np.uint8(bits * i)
    proto.raw_data = out.tobytes()
    return proto


def pack_dequantize(ctx: PassContext, base: str, *, precision: str, codes: np.ndarray, bits: int, signed: bool,
                    scales: np.ndarray, zero_points: np.ndarray | None, granularity: str,
                    group_size: int, act_quant: int = 0) -> PackedWeight:
    """codes [K, N]: int8 when signed, uint8 otherwise; scales/zero points as QuantResult holds them.
    act_quant=1 puts BitNet's per-token int8 activation quantization in front
    of the MatMul, written in standard ops."""
    k, n = codes.shape
    if bits == 2 and granularity != "tensor":
        return _pack_two_bit_unfusable(ctx, base, precision=precision, codes=codes, signed=signed, scales=scales,
                                       zero_points=zero_points, granularity=granularity, group_size=group_size,
                                       act_quant=act_quant)
    attrs: dict = {}
    if granularity == "tensor":
        scale = np.asarray(scales, np.float32).reshape(())
        zero = None if zero_points is None else np.asarray(zero_points).reshape(())
    elif granularity == "channel":
        scale = np.asarray(scales, np.float32).reshape(n)
        zero = None if zero_points is None else np.asarray(zero_points).reshape(n)
        attrs["axis"] = 1
    else:
        scale = np.asarray(scales, np.float32)
        zero = None if zero_points is None else np.asarray(zero_points)
        attrs.update(axis=0, block_size=group_size)
    opset = required_opset(bits, granularity)
    constants = [proto_constant(subbyte_proto(ctx.fresh_name(f"{base}_{'' if signed else 'u'}int{bits}"), codes,
                                              bits, signed)),
                 array_constant(ctx, f"{base}_scale", scale)]
    if zero is not None:
        constants.append(proto_constant(subbyte_proto(ctx.fresh_name(f"{base}_zero_point"), zero, bits, signed)))
    kind = ("INT" if signed else "UINT") + str(bits)
    packed = PackedWeight(precision=precision, storage=f"DequantizeLinear/{kind}", constants=constants,
                          attrs=attrs, k=k, n=n, min_default_opset=opset, act_quant=act_quant)
    return packed


# onnxruntime (seen in 1.32, at its default optimization level) fuses
# DequantizeLinear of 2-bit weights + MatMul into MatMulNBits and then
# computes wrong results whenever the scales are per channel or per block
# (max error 7-31 on the digits MLP's logits; ONNX's reference evaluator and
# onnxruntime with the fusion off agree with each other). Per-tensor 2-bit
# weights are computed right. So 2-bit codes with per-channel scales and no
# zero points are stored as INT2 with scale 1, their scales applied by a Mul
# after the MatMul (the same product, 2 bits per weight); other 2-bit layouts
# (blocks, zero points) go in a 4-bit container, which onnxruntime fuses correctly.
TWO_BIT_CONTAINER_NOTE = (
    "2-bit codes with block scales or zero points are stored as 4-bit on target onnx: onnxruntime (1.32) "
    "miscomputes 2-bit DequantizeLinear + MatMul with per-channel or block scales when it fuses them into "
    "MatMulNBits; --target ort or onnxbit keep 2 bits")


def _pack_two_bit_unfusable(ctx: PassContext, base: str, *, precision: str, codes: np.ndarray, signed: bool,
                            scales: np.ndarray, zero_points: np.ndarray | None, granularity: str, group_size: int,
                            act_quant: int) -> PackedWeight:
    k, n = codes.shape
    if granularity == "channel" and zero_points is None:
        packed = pack_dequantize(ctx, base, precision=precision, codes=codes, bits=2, signed=signed,
                                 scales=np.ones(1, np.float32), zero_points=None, granularity="tensor",
                                 group_size=0, act_quant=act_quant)
        packed.column_scale = array_constant(ctx, f"{base}_column_scale", np.asarray(scales, np.float32).reshape(n))
        return packed
    packed = pack_dequantize(ctx, base, precision=precision, codes=codes, bits=4, signed=signed, scales=scales,
                             zero_points=zero_points, granularity=granularity, group_size=group_size,
                             act_quant=act_quant)
    packed.notes.append(TWO_BIT_CONTAINER_NOTE)
    return packed


def emit_dequantize(ctx: PassContext, site: WeightSite, packed: PackedWeight) -> gs.Node:
    attrs = dict(packed.attrs)
    ctx.require_opset("", packed.min_default_opset)
    weight = gs.Variable(ctx.fresh_name(f"{site.node.name}_dequantized_weight"), dtype=np.float32,
                         shape=[packed.k, packed.n])
    dq = gs.Node("DequantizeLinear", ctx.fresh_name(f"{site.node.name}_dequantize"), attrs=attrs,
                 inputs=list(packed.constants), outputs=[weight])
    site.graph.nodes.append(dq)
    activation = activation_for(ctx, site)
    then = [("Mul", packed.column_scale, {}, "column_scale")] if packed.column_scale is not None else None
    if not packed.act_quant:
        return replace_node(ctx, site, "MatMul", "", [activation, weight], {}, bias_input=None, then=then)
    quantized, scale = per_token_int8(ctx, site, activation)
    return replace_node(ctx, site, "MatMul", "", [quantized, weight], {}, bias_input=None, divide_output_by=scale,
                        then=then)


def recognize(node: onnx.NodeProto, attrs: dict, index: ModelIndex) -> LayerInfo | None:
    """A MatMul/Gemm whose weight input is DequantizeLinear of a constant."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
        return None
    return dequantized_layer(node, index.producer(node.input[1]), index)


def dequantized_layer(node: onnx.NodeProto, dq: onnx.NodeProto | None, index: ModelIndex) -> LayerInfo | None:
    """The LayerInfo of `node` reading weights DequantizeLinear `dq` makes
    from a constant (K x N when the constant is 2-D), or None."""
    if dq is None or dq.op_type != "DequantizeLinear" or not dq.input:
        return None
    q = index.constant_tensor(dq.input[0])
    if q is None:
        return None
    try:
        type_name = onnx.TensorProto.DataType.Name(q.data_type)
    except ValueError:
        type_name = f"type{q.data_type}"
    bits = BITS_OF_TYPE.get(type_name)
    size = index.constant_bytes([i for i in dq.input if i])
    k, n = (int(q.dims[0]), int(q.dims[1])) if len(q.dims) == 2 and node.op_type in ("MatMul", "Gemm") else (None, None)
    count = 1
    for d in q.dims:
        count *= int(d)
    return LayerInfo(node.name, node.op_type, f"int{bits}" if bits else type_name.lower(),
                     f"DequantizeLinear/{type_name}", k, n, size, bits_per_weight(size, count),
                     {"shape": [int(d) for d in q.dims]})
