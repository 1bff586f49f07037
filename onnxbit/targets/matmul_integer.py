"""int8 weights with dynamically quantized int8 activations in standard ONNX
ops: DynamicQuantizeLinear(A) -> MatMulInteger(A_q, W_q, A_zero[, W_zero])
-> Cast -> times (A_scale * W_scale). What onnxruntime's own dynamic
quantization emits; any target can use it.

Why this op for int8 weights (measured as interleaved medians in
one process, onnxruntime 1.32, 1 thread, Intel Sapphire Rapids; the ratio is
fp32 MatMul time / this time):

| K x N, M rows | DynQuant+MatMulInteger | DQ(int8)+MatMul | MatMulNBits 8-bit acc 0 | acc 4 |
| --- | --- | --- | --- | --- |
| 384x1536, M=1 | 1.8x | 1.6x | 0.11x | 1.5x |
| 384x1536, M=128 | 2.7x | 0.88x | 0.55x | 1.0x |
| 4096x4096, M=1 | 3.7-6.5x | 2.5-4.4x | 0.06x | 3.1-5.5x |
| 4096x4096, M=128 | 3.8-4.4x | 1.2x | 0.34x | 1.5-1.8x |

MatMulNBits with 8 bits and float activations (accuracy_level 0), which
targets onnxbit and ort emitted before, is a slow path: 3 to 20 times slower
than the float model. Activations are quantized per tensor (uint8, as
DynamicQuantizeLinear does), so this op is chosen only when the layer's
settings allow int8 activations; otherwise DequantizeLinear + MatMul.

With activations "static" (a calibrated scale per layer, act_scale) the
dynamic quantizer becomes QuantizeLinear(A, 1 / act_scale, uint8 zero point
128) and the rescale a single constant, (1 / act_scale) * W_scale: no pass
over the activations to find their range. uint8 with zero point 128 is the
symmetric int8 grid (q + 128, q in [-128, 127], zero point 0) written the way
onnxruntime's fast kernels take it: int8 x int8 MatMulInteger measured 30x
slower than uint8 x int8 (K = N = 4096, M = 1: 46.7 ms against 1.5 ms; M =
128: 351 ms against 23 ms). QuantizeLinear divides by its scale where
TernaryMatMul act_quant=2 multiplies by act_scale, so the two can differ by
one step on rare values.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxbit.layers.base import WeightSite
from onnxbit.passes.base import PassContext
from onnxbit.passes.rewrite import activation_for, array_constant, replace_node
from onnxbit.targets.base import LayerInfo, ModelIndex, PackedWeight, bits_per_weight

OPSET = 10  # DynamicQuantizeLinear and MatMulInteger
STATIC_ZERO_POINT = 128  # uint8 activations centred at 128: the int8 grid [-128, 127]


def supports(settings) -> bool:
    """int8 weights with one scale per tensor or per output column."""
    return settings.precision == "int8" and settings.granularity in ("tensor", "channel")


def pack_matmul_integer(ctx: PassContext, base: str, *, codes: np.ndarray, scales: np.ndarray,
                        zero_points: np.ndarray | None, granularity: str,
                        act_scale: float | None = None) -> PackedWeight:
    """codes: int8 [K, N] (symmetric) or uint8 with zero_points; scales [1] | [N].
    act_scale: the static activation scale (None: dynamic quantization)."""
    k, n = codes.shape
    shape = () if granularity == "tensor" else (n,)
    signed = zero_points is None
    scales = np.asarray(scales, np.float32).reshape(shape)
    if act_scale is not None:
        # The activations' step (1 / act_scale) folded into the weight scale once.
        scales = (np.float32(1.0) / np.float32(act_scale) * scales).astype(np.float32)
    constants = [array_constant(ctx, f"{base}_{'' if signed else 'u'}int8",
                                np.ascontiguousarray(codes, dtype=np.int8 if signed else np.uint8)),
                 array_constant(ctx, f"{base}_scale", scales)]
    if not signed:
        constants.append(array_constant(ctx, f"{base}_zero_point", np.asarray(zero_points, np.uint8).reshape(shape)))
    kind = "INT8" if signed else "UINT8"
    attrs = {} if act_scale is None else {"act_scale": float(np.float32(act_scale))}
    return PackedWeight(precision="int8", storage=f"MatMulInteger/{kind}", constants=constants, attrs=attrs,
                        k=k, n=n, min_default_opset=OPSET)


def emit_matmul_integer(ctx: PassContext, site: WeightSite, packed: PackedWeight) -> gs.Node:
    ctx.require_opset("", packed.min_default_opset)
    layer = site.node.name

    def tensor(suffix: str, dtype) -> gs.Variable:
        return gs.Variable(ctx.fresh_name(f"{site.output.name}_{suffix}"), dtype=dtype)

    activation = activation_for(ctx, site)
    if "act_scale" in packed.attrs:
        return _emit_static(ctx, site, packed, activation, tensor)
    a_q, a_scale, a_zero = tensor("A_q", np.uint8), tensor("A_scale", np.float32), tensor("A_zero", np.uint8)
    site.graph.nodes.append(gs.Node("DynamicQuantizeLinear", ctx.fresh_name(f"{layer}_quantize_A"),
                                    inputs=[activation], outputs=[a_q, a_scale, a_zero]))
    weight, scale, *zero = packed.constants
    scales = tensor("scale", np.float32)
    site.graph.nodes.append(gs.Node("Mul", ctx.fresh_name(f"{layer}_scales"), inputs=[a_scale, scale],
                                    outputs=[scales]))
    # MatMulInteger takes the layer's name (reports and inspect find it by it);
    # its int32 product is cast and scaled before any bias.
    return replace_node(ctx, site, "MatMulInteger", "", [a_q, weight, a_zero, *zero], {}, bias_input=None,
                        output_dtype=np.int32, then=[("Cast", None, {"to": onnx.TensorProto.FLOAT}, "to_float"),
                              ("Mul", scales, {}, "rescale")])


def _emit_static(ctx: PassContext, site: WeightSite, packed: PackedWeight, activation, tensor) -> gs.Node:
    """QuantizeLinear with the calibrated scale, MatMulInteger, one rescale."""
    layer = site.node.name
    step = array_constant(ctx, f"{layer}_A_step", np.array(np.float32(1.0) / np.float32(packed.attrs["act_scale"])))
    zero = array_constant(ctx, f"{layer}_A_zero", np.array(STATIC_ZERO_POINT, np.uint8))
    a_q = tensor("A_q", np.uint8)
    site.graph.nodes.append(gs.Node("QuantizeLinear", ctx.fresh_name(f"{layer}_quantize_A"),
                                    inputs=[activation, step, zero], outputs=[a_q]))
    weight, scale, *weight_zero = packed.constants
    return replace_node(ctx, site, "MatMulInteger", "", [a_q, weight, zero, *weight_zero], {}, bias_input=None,
                        output_dtype=np.int32, then=[("Cast", None, {"to": onnx.TensorProto.FLOAT}, "to_float"),
                              ("Mul", scale, {}, "rescale")])


def recognize(node: onnx.NodeProto, attrs: dict, index: ModelIndex) -> LayerInfo | None:
    if node.domain not in ("", "ai.onnx") or node.op_type != "MatMulInteger" or len(node.input) < 2:
        return None
    weight = index.constant_tensor(node.input[1])
    if weight is None or len(weight.dims) != 2:
        return None
    k, n = int(weight.dims[0]), int(weight.dims[1])
    size = index.constant_bytes([node.input[1]] + ([node.input[3]] if len(node.input) > 3 and node.input[3] else [])
                                + _weight_scale(node, index))
    kind = "INT8" if weight.data_type == onnx.TensorProto.INT8 else "UINT8"
    producer = index.producer(node.input[0])
    static = producer is not None and producer.op_type == "QuantizeLinear"
    return LayerInfo(node.name, node.op_type, "int8", f"MatMulInteger/{kind}", k, n, size,
                     bits_per_weight(size, k * n),
                     {"activations": "int8 (static scale)" if static else "int8 (dynamic, per tensor)"})


def _weight_scale(node: onnx.NodeProto, index: ModelIndex) -> list[str]:
    """The weight scale's name: the constant multiplied with the activation
    scale (DynamicQuantizeLinear's second output) in front of the rescale."""
    a_scale = index.producer(node.input[0])
    if a_scale is None or a_scale.op_type != "DynamicQuantizeLinear" or len(a_scale.output) < 2:
        return []
    for consumer in index.consumers(a_scale.output[1]):
        if consumer.op_type == "Mul":
            return [i for i in consumer.input if i != a_scale.output[1] and index.constant_tensor(i) is not None]
    return []
