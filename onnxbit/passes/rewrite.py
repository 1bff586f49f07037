"""Graph edits shared by the emit modules: put a new op where a MatMul/Gemm
was, with its activation transposed (Gemm transA), its bias added and Gemm's
non-foldable C added back, so the node's output tensor keeps its consumers."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxbit.passes.base import PassContext, WeightSite


def array_constant(ctx: PassContext, base: str, values: np.ndarray) -> gs.Constant:
    return gs.Constant(ctx.fresh_name(base), np.ascontiguousarray(values))


def _node(ctx: PassContext, site: WeightSite, layer: str, op: str, inputs, outputs, suffix: str, **attrs) -> gs.Node:
    node = gs.Node(op, ctx.fresh_name(f"{layer}_{suffix}"), attrs=attrs, inputs=inputs, outputs=outputs)
    site.graph.nodes.append(node)
    return node


def _intermediate(ctx: PassContext, site: WeightSite, suffix: str, dtype=np.float32) -> gs.Variable:
    return gs.Variable(ctx.fresh_name(f"{site.output.name}_{suffix}"), dtype=dtype)


def per_token_int8(ctx: PassContext, site: WeightSite, x: gs.Tensor, axis: int = -1) -> tuple[gs.Tensor, gs.Tensor]:
    """BitNet's per-token activation quantization in standard ops:
    s = 127 * (1 / max(max|x| over the last axis, 1e-5)); q = clip(round(x * s), -128, 127),
    (axis 1: a Conv input's per-pixel form, TernaryConv act_quant=3),
    rounded step by step as PyTorch and the TernaryMatMul op do.
    Returns (q as float32, s); the matmul result divided by s is the op's output."""
    layer = site.node.name

    def step(op: str, inputs: list, suffix: str, **attrs) -> gs.Variable:
        out = _intermediate(ctx, site, f"act_{suffix}")
        _node(ctx, site, layer, op, inputs, [out], f"act_{suffix}", **attrs)
        return out

    def const(suffix: str, value) -> gs.Constant:
        return array_constant(ctx, f"{layer}_act_{suffix}", np.asarray(value))

    magnitude = step("Abs", [x], "abs")
    if ctx.graph.opset >= 18:  # ReduceMax takes axes as an input from opset 18 on
        amax = step("ReduceMax", [magnitude, const("axes", np.array([axis], np.int64))], "absmax", keepdims=1)
    else:
        amax = step("ReduceMax", [magnitude], "absmax", axes=[axis], keepdims=1)
    reciprocal = step("Reciprocal", [step("Max", [amax, const("eps", np.float32(1e-5))], "clamped")], "reciprocal")
    scale = step("Mul", [reciprocal, const("numerator", np.float32(127.0))], "scale")
    rounded = step("Round", [step("Mul", [x, scale], "scaled")], "round")
    q = step("Clip", [rounded, const("low", np.float32(-128.0)), const("high", np.float32(127.0))], "int8")
    return q, scale


def activation_for(ctx: PassContext, site: WeightSite) -> gs.Tensor:
    """The [..., K] activation the new op reads (Gemm transA=1 gets a Transpose)."""
    if not site.transpose_activation:
        return site.activation
    out = _intermediate(ctx, site, "A_T")
    _node(ctx, site, site.node.name, "Transpose", [site.activation], [out], "transpose_A", perm=[1, 0])
    return out


def emit_op(ctx: PassContext, site: WeightSite, packed, op: str, domain: str, opset: int, *,
            bias_input: int | None) -> gs.Node:
    """Replace site.node by `op` reading the activation then packed's constants."""
    ctx.require_opset(domain, opset)
    inputs = [activation_for(ctx, site), *packed.constants]
    return replace_node(ctx, site, op, domain, inputs, dict(packed.attrs), bias_input=bias_input)


def replace_node(ctx: PassContext, site: WeightSite, op: str, domain: str, inputs: list[gs.Tensor],
                 attrs: dict, *, bias_input: int | None, divide_output_by: gs.Tensor | None = None,
                 then: list[tuple[str, gs.Tensor | None, dict, str]] | None = None,
                 output_dtype=np.float32) -> gs.Node:
    """Replace site.node by `op`, reading `inputs` (activation first).

    bias_input: index at which the op takes a bias; None means the op has no
    bias input and a bias becomes an Add node. Optional inputs between the
    given ones and the bias are passed as empty names. divide_output_by: a
    tensor the op's output is divided by before any bias is added. then:
    more steps on the op's output before the bias, each (op, second input
    or None, attributes, name suffix), e.g. a Cast and a Mul by a scale.
    output_dtype: the op's own output type (int32 for MatMulInteger).
    """
    layer = site.node.name
    inputs = list(inputs)
    steps = list(then or [])
    if divide_output_by is not None:
        steps.append(("Div", divide_output_by, {}, "rescale"))
    if steps and bias_input is not None and site.bias is not None:
        raise ValueError("a fused bias cannot follow an output division")
    add_bias_after = site.bias is not None and bias_input is None
    if site.bias is not None and bias_input is not None:
        while len(inputs) < bias_input:
            inputs.append(gs.Variable.empty())
        inputs.append(array_constant(ctx, f"{layer}_bias", site.bias.astype(np.float32)))
    final = site.output
    tail = add_bias_after or site.extra_add is not None
    op_out = _intermediate(ctx, site, "matmul", output_dtype) if tail or steps else final
    step_outputs = [_intermediate(ctx, site, f"step{i}" if step[0] != "Div" else "rescaled")
                    if tail or i < len(steps) - 1 else final for i, step in enumerate(steps)]
    # Detach the original node so cleanup drops it and its dead weight chain;
    # the new op takes over its name, so reports and users can find the layer.
    site.node.name = ctx.fresh_name(f"{layer}_replaced")
    site.node.inputs.clear()
    site.node.outputs.clear()
    if site.fused_add is not None:  # its bias is now the op's (or the Add below)
        site.fused_add.inputs.clear()
        site.fused_add.outputs.clear()
    new = gs.Node(op, layer, attrs=attrs, inputs=inputs, outputs=[op_out], domain=domain or None)
    site.graph.nodes.append(new)
    current = op_out
    for (step_op, operand, step_attrs, suffix), out in zip(steps, step_outputs):
        _node(ctx, site, layer, step_op, [current] + ([operand] if operand is not None else []), [out], suffix,
              **step_attrs)
        current = out
    if add_bias_after:
        nxt = final if site.extra_add is None else _intermediate(ctx, site, "biased")
        bias = array_constant(ctx, f"{layer}_bias", site.bias.astype(np.float32))
        _node(ctx, site, layer, "Add", [current, bias], [nxt], "bias")
        current = nxt
    if site.extra_add is not None:
        extra = site.extra_add
        if site.extra_add_scale != 1.0:
            scaled = _intermediate(ctx, site, "C_times_beta")
            beta = array_constant(ctx, f"{layer}_beta", np.array(site.extra_add_scale, np.float32))
            _node(ctx, site, layer, "Mul", [extra, beta], [scaled], "beta")
            extra = scaled
        _node(ctx, site, layer, "Add", [current, extra], [final], "add_C")
    return new


def requantize_float_layer(ctx: PassContext, site: WeightSite) -> None:
    """Keep site.node in float but restore the per-token int8 activation
    quantization a QAT fold removed from in front of it: A -> q, y -> y / s
    (a Conv's per-pixel act_quant=3: X -> q / s, its scale varying over the pixels)."""
    if site.proof is not None and site.proof.act_quant == 3:
        quantized, scale = per_token_int8(ctx, site, site.activation, axis=1)
        dequantized = _intermediate(ctx, site, "act_dequantized")
        _node(ctx, site, site.node.name, "Div", [quantized, scale], [dequantized], "act_dequantize")
        site.node.inputs[0] = dequantized
        return
    quantized, scale = per_token_int8(ctx, site, site.activation)
    site.node.inputs[0] = quantized
    product = _intermediate(ctx, site, "unscaled")
    final = site.node.outputs[0]
    site.node.outputs[0] = product
    _node(ctx, site, site.node.name, "Div", [product, scale], [final], "rescale")
