"""Integer Conv / ConvTranspose weights in standard ONNX (targets "ort" and
"onnx", and "onnxbit" for integer precisions and for layers TernaryConv does
not compute): an INT2 / INT4 / INT8 (UINT* with zero points) initializer
turned into the float weight in the graph, then the node's own op.

The codes are stored as the weight's [M, K] rows (one per output channel, the
layer kind's view); Reshape (and for ConvTranspose a Transpose) turn them
back into the node's weight layout. A plain Conv stores its codes in the
weight's own shape instead, so the float weight needs no reshaping.

The float weight is Cast to float (Sub of the zero point), then Mul by the
scale; K-group scales broadcast over the codes stored as [M, groups,
group_size] (the last group padded with zeros), then Reshape (and Slice)
give the [M, K] rows. onnxruntime folds that constant subgraph once when the
session loads, so the Conv runs on a constant float weight, prepacked, at
fp32 Conv speed, and computes exactly what DequantizeLinear + Conv does on
the dequantized weight ((q - zero) * scale, one rounding). DequantizeLinear
is not folded (onnxruntime keeps QDQ nodes for its quantization passes): it
dequantized the weight on every run and its Conv lost the prepacked weight,
measured with onnxruntime 1.32, 2-vCPU Sapphire Rapids, one thread: 3x3
64@56x56 2.37 ms against fp32 Conv's 1.57 and 1.54 for Cast + Mul (int8;
int4 2.39 / 1.55), 3x3 256@14x14 2.38 / 1.62 / 1.61 (int4 2.98 / 1.62). The
session then holds the float weight, as the original model did; the file
keeps the integer codes. Models converted before this carry DequantizeLinear,
which `recognize` still reads back.

Why not the integer conv ops: measured with onnxruntime 1.32 on a shared
2-core Sapphire Rapids (`onnxbit bench conv`, ResNet/MobileNet layer shapes),
ConvInteger with DynamicQuantizeLinear activations ran 3-10x slower than fp32
Conv, and QLinearConv needs a static output scale that a float model does not
have.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxbit.graph.gs_adapter import proto_constant
from onnxbit.layers.base import WeightSite
from onnxbit.passes.base import PassContext
from onnxbit.passes.rewrite import activation_for, array_constant, replace_node
from onnxbit.targets.base import LayerInfo, ModelIndex, PackedWeight, bits_per_weight
from onnxbit.targets.dequantize import BITS_OF_TYPE, dequantized_layer, required_opset, subbyte_proto


CAST_STORAGE = "Cast+Mul"


def pack_integer_conv(ctx: PassContext, base: str, *, precision: str, conv, codes: np.ndarray, bits: int,
                         signed: bool, scales: np.ndarray, zero_points: np.ndarray | None, granularity: str,
                         group_size: int) -> PackedWeight:
    """codes [K, N] as the layer kind's view; scales / zero points as QuantResult holds them."""
    rows = np.ascontiguousarray(np.asarray(codes).T)  # [M, K]
    return _pack_cast_conv(ctx, base, precision=precision, conv=conv, rows=rows, bits=bits, signed=signed,
                           scales=scales, zero_points=zero_points, granularity=granularity, group_size=group_size)


def _pack_cast_conv(ctx: PassContext, base: str, *, precision: str, conv, rows: np.ndarray, bits: int, signed: bool,
                    scales: np.ndarray, zero_points: np.ndarray | None, granularity: str,
                    group_size: int) -> PackedWeight:
    """Codes for Cast (- zero point) * scale, the scale and zero point shaped to broadcast over them:
    per tensor / channel the Conv weight's own shape (plain Conv) or [M, K] rows; K-groups [M, groups,
    group_size] (the last group padded with zeros, sliced off after the Mul)."""
    m, k = conv.rows_shape
    attrs: dict = {}
    if granularity == "group":
        groups = -(-k // group_size)
        stored = np.zeros((m, groups * group_size), rows.dtype)
        stored[:, :k] = rows
        stored = stored.reshape(m, groups, group_size)
        scales = np.asarray(scales, np.float32).T  # [M, groups]
        zero_points = None if zero_points is None else np.asarray(zero_points).T
        shape = (m, groups, 1)
        attrs["k"] = k
    else:
        stored = rows.reshape(conv.weight_shape) if conv.op == "Conv" else rows
        shape = () if granularity == "tensor" else (m,) + (1,) * (stored.ndim - 1)
    constants = [proto_constant(subbyte_proto(ctx.fresh_name(f"{base}_{'' if signed else 'u'}int{bits}"), stored, bits,
                                              signed)),
                 array_constant(ctx, f"{base}_scale", np.asarray(scales, np.float32).reshape(shape))]
    if zero_points is not None:  # in the codes' own type, Cast like them
        zero = np.asarray(zero_points).reshape(shape)
        constants.append(proto_constant(subbyte_proto(ctx.fresh_name(f"{base}_zero_point"), zero, bits, signed)))
    kind = ("INT" if signed else "UINT") + str(bits)
    return PackedWeight(precision=precision, storage=f"{CAST_STORAGE}/{kind}", constants=constants, attrs=attrs,
                        k=k, n=m, min_default_opset=cast_opset(bits))


def cast_opset(bits: int) -> int:
    """The ai.onnx opset Cast needs for these codes (INT4 21, INT2 25)."""
    return required_opset(bits, "channel")


def _float_weight(ctx: PassContext, site: WeightSite, packed: PackedWeight,
                  stored_shape: list[int]) -> tuple[gs.Variable, list[int]]:
    """The float weight and its shape: Cast (- zero point) * scale in the stored layout, K-group codes
    then back to [M, K] rows."""
    name = site.node.name
    out = gs.Variable(ctx.fresh_name(f"{name}_dequantized_weight"), dtype=np.float32, shape=stored_shape)
    codes, scale, *zero = packed.constants
    current = gs.Variable(ctx.fresh_name(f"{name}_weight_codes"), dtype=np.float32, shape=stored_shape)
    site.graph.nodes.append(gs.Node("Cast", ctx.fresh_name(f"{name}_weight_cast"), attrs={"to": onnx.TensorProto.FLOAT},
                                    inputs=[codes], outputs=[current]))
    if zero:
        zero_float = gs.Variable(ctx.fresh_name(f"{name}_weight_zero_point"), dtype=np.float32)
        site.graph.nodes.append(gs.Node("Cast", ctx.fresh_name(f"{name}_weight_zero_cast"),
                                        attrs={"to": onnx.TensorProto.FLOAT}, inputs=[zero[0]], outputs=[zero_float]))
        centered = gs.Variable(ctx.fresh_name(f"{name}_weight_centered"), dtype=np.float32, shape=stored_shape)
        site.graph.nodes.append(gs.Node("Sub", ctx.fresh_name(f"{name}_weight_zero"), inputs=[current, zero_float],
                                        outputs=[centered]))
        current = centered
    site.graph.nodes.append(gs.Node("Mul", ctx.fresh_name(f"{name}_weight_scale"), inputs=[current, scale],
                                    outputs=[out]))
    if "k" not in packed.attrs:
        return out, stored_shape
    m, groups, group_size = stored_shape
    k = int(packed.attrs["k"])
    rows = gs.Variable(ctx.fresh_name(f"{name}_weight_rows"), dtype=np.float32, shape=[m, groups * group_size])
    shape = array_constant(ctx, f"{name}_weight_rows_shape", np.asarray([m, groups * group_size], np.int64))
    site.graph.nodes.append(gs.Node("Reshape", ctx.fresh_name(f"{name}_weight_rows"), inputs=[out, shape],
                                    outputs=[rows]))
    if groups * group_size == k:
        return rows, [m, k]
    cut = gs.Variable(ctx.fresh_name(f"{name}_weight_cut"), dtype=np.float32, shape=[m, k])
    bounds = [array_constant(ctx, f"{name}_weight_{what}", np.asarray(v, np.int64))
              for what, v in (("starts", [0]), ("ends", [k]), ("axes", [1]))]
    site.graph.nodes.append(gs.Node("Slice", ctx.fresh_name(f"{name}_weight_cut"), inputs=[rows, *bounds],
                                    outputs=[cut]))
    return cut, [m, k]


def emit_integer_conv(ctx: PassContext, site: WeightSite, packed: PackedWeight) -> gs.Node:
    conv = site.conv
    ctx.require_opset("", packed.min_default_opset)
    current, shape = _float_weight(ctx, site, packed, list(packed.constants[0].shape))
    if tuple(shape) != tuple(conv.weight_shape):
        for step, value in conv.layout_from_rows():
            out = gs.Variable(ctx.fresh_name(f"{site.node.name}_weight_{step}"), dtype=np.float32)
            if step == "reshape":
                shape = array_constant(ctx, f"{site.node.name}_weight_shape", np.asarray(value, np.int64))
                node = gs.Node("Reshape", ctx.fresh_name(f"{site.node.name}_weight_reshape"), inputs=[current, shape],
                               outputs=[out])
            else:
                node = gs.Node("Transpose", ctx.fresh_name(f"{site.node.name}_weight_transpose"),
                               attrs={"perm": list(value)}, inputs=[current], outputs=[out])
            site.graph.nodes.append(node)
            current = out
    return replace_node(ctx, site, conv.op, "", [activation_for(ctx, site), current], dict(conv.attrs),
                        bias_input=2)


def recognize(node: onnx.NodeProto, attrs: dict, index: ModelIndex) -> LayerInfo | None:
    """A Conv/ConvTranspose whose weight is DequantizeLinear of a constant, or
    Cast of an integer constant (minus a constant) times a constant, possibly
    through Reshape/Transpose."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2:
        return None
    producer = index.producer(node.input[1])
    while producer is not None and producer.op_type in ("Reshape", "Transpose", "Slice") and producer.input:
        producer = index.producer(producer.input[0])
    return dequantized_layer(node, producer, index) or _cast_layer(node, producer, index)


def _constant_through_cast(name: str, index: ModelIndex) -> str | None:
    """name, or the input of the Cast making it, when that is a constant."""
    if index.constant_tensor(name) is not None:
        return name
    cast = index.producer(name)
    if cast is not None and cast.op_type == "Cast" and cast.input and index.constant_tensor(cast.input[0]) is not None:
        return cast.input[0]
    return None


def _cast_layer(node: onnx.NodeProto, mul: onnx.NodeProto | None, index: ModelIndex) -> LayerInfo | None:
    if mul is None or mul.op_type != "Mul" or len(mul.input) != 2:
        return None
    for codes_side, scale in ((0, mul.input[1]), (1, mul.input[0])):
        if index.constant_tensor(scale) is None:
            continue
        source = index.producer(mul.input[codes_side])
        constants = [scale]
        if source is not None and source.op_type == "Sub" and len(source.input) == 2:
            zero = _constant_through_cast(source.input[1], index)
            if zero is None:
                continue
            constants.append(zero)
            source = index.producer(source.input[0])
        if source is None or source.op_type != "Cast" or not source.input:
            continue
        q = index.constant_tensor(source.input[0])
        if q is None:
            continue
        try:
            type_name = onnx.TensorProto.DataType.Name(q.data_type)
        except ValueError:
            continue
        bits = BITS_OF_TYPE.get(type_name)
        if bits is None:
            continue
        size = index.constant_bytes([source.input[0], *constants])
        count = 1
        for d in q.dims:
            count *= int(d)
        return LayerInfo(node.name, node.op_type, f"int{bits}", f"{CAST_STORAGE}/{type_name}", None, None, size,
                         bits_per_weight(size, count), {"shape": [int(d) for d in q.dims]})
    return None
