"""DequantizeLinear on an INT2 / INT4 / INT8 weight, then the node's own Conv
or ConvTranspose: standard ONNX (targets "ort" and "onnx", and "onnxbit" for
integer precisions and for layers TernaryConv does not compute).

The codes are stored as the weight's [M, K] rows (one per output channel, the
layer kind's view), so per-channel scales dequantize along axis 0 and K-group
scales in blocks along axis 1, the same layouts as for MatMul; Reshape (and
for ConvTranspose a Transpose) turn the rows back into the node's weight
layout. A plain Conv with per-tensor or per-channel scales stores its codes
in the weight's own shape instead, so the float weight needs no reshaping.

Why not the integer conv ops: measured with onnxruntime 1.32 on a shared
2-core Sapphire Rapids (`onnxbit bench conv`, ResNet/MobileNet layer shapes),
ConvInteger with DynamicQuantizeLinear activations ran 3-10x slower than fp32
Conv, and QLinearConv needs a static output scale that a float model does not
have. DequantizeLinear + Conv runs onnxruntime's fp32 Conv; onnxruntime
dequantizes the weight on every run (0.3-1x fp32 speed) unless the session
sets session.disable_quant_qdq=1, which lets it fold the constant weight once
(then fp32 speed): the report says so (CONV_QDQ_NOTE).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxbit.graph.gs_adapter import proto_constant
from onnxbit.layers.base import WeightSite
from onnxbit.passes.base import PassContext
from onnxbit.passes.rewrite import activation_for, array_constant, replace_node
from onnxbit.targets.base import LayerInfo, ModelIndex, PackedWeight
from onnxbit.targets.dequantize import dequantized_layer, required_opset, subbyte_proto


CONV_QDQ_NOTE = (
    "Conv layers stored as DequantizeLinear + Conv: onnxruntime dequantizes their weights on every run unless the "
    "session sets the config entry session.disable_quant_qdq=1, which folds them once at load time (fp32 Conv "
    "speed); on target 'onnx', that entry also stops the DequantizeLinear + MatMul fusion into MatMulNBits")


def pack_dequantize_conv(ctx: PassContext, base: str, *, precision: str, conv, codes: np.ndarray, bits: int,
                         signed: bool, scales: np.ndarray, zero_points: np.ndarray | None, granularity: str,
                         group_size: int) -> PackedWeight:
    """codes [K, N] as the layer kind's view; scales / zero points as QuantResult holds them."""
    m, k = conv.rows_shape
    rows = np.ascontiguousarray(np.asarray(codes).T)  # [M, K]
    attrs: dict = {}
    zero = None
    if granularity == "tensor":
        scale = np.asarray(scales, np.float32).reshape(())
        zero = None if zero_points is None else np.asarray(zero_points).reshape(())
    elif granularity == "channel":
        scale = np.asarray(scales, np.float32).reshape(m)
        zero = None if zero_points is None else np.asarray(zero_points).reshape(m)
        attrs["axis"] = 0
    else:
        scale = np.ascontiguousarray(np.asarray(scales, np.float32).T)  # [M, groups]
        zero = None if zero_points is None else np.ascontiguousarray(np.asarray(zero_points).T)
        attrs.update(axis=1, block_size=group_size)
    if conv.op == "Conv" and granularity != "group":
        rows = rows.reshape(conv.weight_shape)  # already the node's layout: no Reshape needed
    constants = [proto_constant(subbyte_proto(ctx.fresh_name(f"{base}_{'' if signed else 'u'}int{bits}"), rows, bits,
                                              signed)),
                 array_constant(ctx, f"{base}_scale", scale)]
    if zero is not None:
        constants.append(proto_constant(subbyte_proto(ctx.fresh_name(f"{base}_zero_point"), zero, bits, signed)))
    kind = ("INT" if signed else "UINT") + str(bits)
    return PackedWeight(precision=precision, storage=f"DequantizeLinear/{kind}", constants=constants, attrs=attrs,
                        k=k, n=m, min_default_opset=required_opset(bits, granularity))


def emit_dequantize_conv(ctx: PassContext, site: WeightSite, packed: PackedWeight) -> gs.Node:
    conv = site.conv
    ctx.require_opset("", packed.min_default_opset)
    stored_shape = list(packed.constants[0].shape)
    current = gs.Variable(ctx.fresh_name(f"{site.node.name}_dequantized_weight"), dtype=np.float32,
                          shape=stored_shape)
    site.graph.nodes.append(gs.Node("DequantizeLinear", ctx.fresh_name(f"{site.node.name}_dequantize"),
                                    attrs=dict(packed.attrs), inputs=list(packed.constants), outputs=[current]))
    if tuple(stored_shape) != tuple(conv.weight_shape):
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
    """A Conv/ConvTranspose whose weight is DequantizeLinear of a constant,
    possibly through Reshape/Transpose."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2:
        return None
    producer = index.producer(node.input[1])
    while producer is not None and producer.op_type in ("Reshape", "Transpose") and producer.input:
        producer = index.producer(producer.input[0])
    return dequantized_layer(node, producer, index)
