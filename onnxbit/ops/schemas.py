"""ONNX operator schemas of the com.onnxbit custom ops, registered from Python.

With them registered, ``onnx.checker.check_model`` validates TernaryMatMul,
TernaryConv and BFloat16MatMul nodes (inputs, types, attributes) and ``onnx.shape_inference`` infers Y's
shape, instead of rejecting or skipping an unknown op. onnxruntime does not
use these: it builds its own schema from the compiled library.
"""

from __future__ import annotations

import threading

import onnx
from onnx import TensorProto
from onnx.defs import OpSchema

from onnxbit.formats import OP_FORMATS as FORMATS

DOMAIN = "com.onnxbit"
OPSET_VERSION = 1
TERNARY_MATMUL = "TernaryMatMul"
TERNARY_CONV = "TernaryConv"
BF16_MATMUL = "BFloat16MatMul"

_lock = threading.Lock()

_TERNARY_MATMUL_DOC = """\
Y = A @ (W * scales) (+ bias) for a ternary weight W[K, N] in {-1, 0, 1}.

B holds W transposed, N rows of K codes, each row packed in `format` and
starting on a byte boundary: "2bit" (code w + 1, four a byte, least
significant first; ceil(K/4) bytes a row) or "base3" (five base-3 digits
w + 1 a byte; ceil(K/5) bytes a row), or, with a stream format, a 1-D
stream decoded to the base3 rows when the session is created: "rans"
(entropy-coded base3 bytes, csrc/include/onnxbit/rans.h) or "zeroruns" (the
zero run before each nonzero with its sign, .../zero_runs.h) or "sparse"
(per-row delta-coded positions and sign bits, .../sparse.h). scales
is [1] (per tensor), [N] (per output channel) or, with group_size > 0,
[N, ceil(K / group_size)] (per group along K); every scale is finite and > 0.
act_quant = 1 quantizes each row of A to int8 first (BitNet per-token absmax)
and runs an exact integer core. act_quant = 2 does the same with one fixed,
calibrated scale for every row, the float attribute act_scale (finite, > 0):
q = clamp(round_half_even(a * act_scale), -128, 127), Y = int_dot * weight
scale / act_scale (+ bias), a row holding NaN or Inf gives NaN, as in mode 1. crc32c (optional) is the CRC32C of B's bytes
followed by the scales' bytes, checked when the session is created.
"""


def _display_name(ctx) -> str:
    """onnx's name for the node being inferred (older onnx has none)."""
    return ctx.get_display_name() if hasattr(ctx, "get_display_name") else "TernaryMatMul"


def _infer_ternary_matmul(ctx) -> None:
    """Y: float32, A's shape with the last dimension replaced by N."""
    n_attr = ctx.get_attribute("N")
    a_type = ctx.get_input_type(0) if ctx.has_input(0) else None
    y_type = onnx.helper.make_tensor_type_proto(TensorProto.FLOAT, shape=None)
    if n_attr is not None and a_type is not None and a_type.tensor_type.HasField("shape"):
        dims = list(a_type.tensor_type.shape.dim)
        where = _display_name(ctx)
        if not dims:
            raise onnx.shape_inference.InferenceError(
                f"{where}: input A is a scalar; it must have shape [..., K]")
        k_attr = ctx.get_attribute("K")
        last = dims[-1]
        if k_attr is not None and last.HasField("dim_value") and last.dim_value != k_attr.i:
            raise onnx.shape_inference.InferenceError(
                f"{where}: the last dimension of A is {last.dim_value}, attribute K is {k_attr.i}")
        shape = y_type.tensor_type.shape
        for dim in dims[:-1]:
            shape.dim.add().CopyFrom(dim)
        shape.dim.add().dim_value = n_attr.i
    ctx.set_output_type(0, y_type)


def _ternary_matmul_schema() -> OpSchema:
    attr = OpSchema.Attribute
    int_type = OpSchema.AttrType.INT
    schema = OpSchema(
        TERNARY_MATMUL, DOMAIN, OPSET_VERSION, _TERNARY_MATMUL_DOC,
        inputs=[
            OpSchema.FormalParameter("A", "T", "activations [..., K]"),
            OpSchema.FormalParameter("B", "TB", "packed ternary W transposed: N rows of K codes"),
            OpSchema.FormalParameter("scales", "T", "[1], [N] or [N, ceil(K / group_size)]"),
            OpSchema.FormalParameter("bias", "T", "[N]",
                                     param_option=OpSchema.FormalParameterOption.Optional),
        ],
        outputs=[OpSchema.FormalParameter("Y", "T", "[..., N]")],
        type_constraints=[
            ("T", ["tensor(float)"], "activations, scales, bias and output are float32"),
            ("TB", ["tensor(uint8)"], "packed ternary codes"),
        ],
        attributes=[
            attr("K", int_type, "inner dimension (logical rows of W)", required=True),
            attr("N", int_type, "output features (logical columns of W)", required=True),
            attr("format", OpSchema.AttrType.STRING,
                 "packing of B: " + " | ".join(FORMATS), required=True),
            attr("group_size", onnx.helper.make_attribute("group_size", 0),
                 "scale group length along K; 0 = not grouped"),
            attr("act_quant", onnx.helper.make_attribute("act_quant", 0),
                 "1 = BitNet per-token int8 activations, 2 = int8 with the static act_scale, "
                 "0 = float32"),
            attr("act_scale", OpSchema.AttrType.FLOAT,
                 "act_quant = 2 only: the fixed activation scale (finite, > 0), "
                 "q = clamp(round_half_even(a * act_scale), -128, 127)", required=False),
            attr("crc32c", int_type, "optional CRC32C of B's bytes followed by the scales' bytes "
                 "(onnxbit.checksum); checked when the session is created", required=False),
        ],
    )
    if hasattr(schema, "set_type_and_shape_inference_function"):
        schema.set_type_and_shape_inference_function(_infer_ternary_matmul)
    return schema


_TERNARY_CONV_DOC = """\
Y = Conv(X, W * scales) (+ bias), ONNX Conv semantics, for a ternary weight W
of logical shape weight_shape = [M, C/group, (kH,) kW] (1-D and 2-D).

B holds W flattened to M rows of K = C/group * kH * kW codes in (c, kh, kw)
order, each row packed in `format` as TernaryMatMul's B (N = M), or with a
stream format (rans, zeroruns, sparse) the 1-D stream of those rows, decoded once
when the session is created. scales is
[1], [M] or [M, ceil(K / group_size)]. act_quant = 1 quantizes each im2col
row (one output position of one group: its C/group channels times the kernel
window, padding as 0) to int8 with its own absmax scale, as TernaryMatMul does
per row of A, and runs an exact integer core. act_quant = 2 uses the static
act_scale for every row instead, as TernaryMatMul's act_quant = 2.
act_quant = 3 quantizes each input pixel once, with one absmax scale s over
all its C channels (s = 127 * (1 / max(absmax, 1e-5)), as a QAT CNN
fake-quantizes activations per pixel before a Conv); an output value sums,
in (kh, kw) tap order in float32, each tap's exact integer dot times 1 / s of
its pixel (padding taps skipped), then times the weight scale, plus bias.
It needs scales [1] or [M]; a pixel holding NaN or Inf makes its windows NaN.

activation (optional) applies Relu, LeakyRelu (activation_alpha, default
0.01), Clip (activation_min, activation_max), HardSigmoid (activation_alpha,
activation_beta, defaults 0.2 and 0.5), HardSwish, HardSwishRelu6
((Y * Clip(Y + 3, 0, 6)) / 6, paddle2onnx's form), Sigmoid or Silu (Y *
Sigmoid(Y); both with the library's own exp, within 3 ulp) to Y, elementwise in
float32, each product and sum rounded on its own (onnxbit/reference/
activation.py); a parameter the activation does not take is an error.
"""


def _infer_ternary_conv(ctx) -> None:
    """Y: float32 [N, M, *out], out from X's spatial sizes and the conv attributes."""
    from onnxbit.reference.ternary_conv import conv_geometry

    y_type = onnx.helper.make_tensor_type_proto(TensorProto.FLOAT, shape=None)
    weight = ctx.get_attribute("weight_shape")
    x_type = ctx.get_input_type(0) if ctx.has_input(0) else None
    if weight is not None and x_type is not None and x_type.tensor_type.HasField("shape"):
        weight_shape = list(weight.ints)
        dims = list(x_type.tensor_type.shape.dim)
        rank = len(weight_shape) - 2
        where = _display_name(ctx)
        if len(dims) != rank + 2:
            raise onnx.shape_inference.InferenceError(
                f"{where}: X has rank {len(dims)}; weight_shape {weight_shape} needs rank {rank + 2}")

        def ints(name, default):
            attr = ctx.get_attribute(name)
            return list(attr.ints) if attr is not None and len(attr.ints) else default

        auto_pad = ctx.get_attribute("auto_pad")
        auto_pad = auto_pad.s.decode() if auto_pad is not None else "NOTSET"
        shape = y_type.tensor_type.shape
        shape.dim.add().CopyFrom(dims[0])
        shape.dim.add().dim_value = weight_shape[0]
        spatial = [d.dim_value if d.HasField("dim_value") else None for d in dims[2:]]
        if None in spatial:
            for _ in spatial:
                shape.dim.add()
        else:
            try:
                geometry = conv_geometry(spatial, weight_shape[2:], ints("strides", [1] * rank),
                                         ints("pads", [0] * 2 * rank), ints("dilations", [1] * rank), auto_pad)
            except ValueError as error:
                raise onnx.shape_inference.InferenceError(f"{where}: {error}") from None
            for length in geometry.out:
                shape.dim.add().dim_value = length
    ctx.set_output_type(0, y_type)


def _ternary_conv_schema() -> OpSchema:
    attr = OpSchema.Attribute
    ints_type = OpSchema.AttrType.INTS
    schema = OpSchema(
        TERNARY_CONV, DOMAIN, OPSET_VERSION, _TERNARY_CONV_DOC,
        inputs=[
            OpSchema.FormalParameter("X", "T", "activations [N, C, (H,) W]"),
            OpSchema.FormalParameter("B", "TB", "packed ternary W: M rows of K codes"),
            OpSchema.FormalParameter("scales", "T", "[1], [M] or [M, ceil(K / group_size)]"),
            OpSchema.FormalParameter("bias", "T", "[M]",
                                     param_option=OpSchema.FormalParameterOption.Optional),
        ],
        outputs=[OpSchema.FormalParameter("Y", "T", "[N, M, (oH,) oW]")],
        type_constraints=[
            ("T", ["tensor(float)"], "activations, scales, bias and output are float32"),
            ("TB", ["tensor(uint8)"], "packed ternary codes"),
        ],
        attributes=[
            attr("weight_shape", ints_type, "logical weight shape [M, C/group, (kH,) kW]", required=True),
            attr("format", OpSchema.AttrType.STRING, "packing of B: " + " | ".join(FORMATS), required=True),
            attr("group_size", onnx.helper.make_attribute("group_size", 0),
                 "scale group length along K; 0 = not grouped"),
            attr("act_quant", onnx.helper.make_attribute("act_quant", 0),
                 "1 = int8 activations per im2col row, 2 = int8 with the static act_scale, "
                 "3 = int8 per input pixel, 0 = float32"),
            attr("act_scale", OpSchema.AttrType.FLOAT,
                 "act_quant = 2 only: the fixed activation scale (finite, > 0)", required=False),
            attr("group", onnx.helper.make_attribute("group", 1), "as Conv"),
            attr("strides", ints_type, "as Conv (default 1s)", required=False),
            attr("pads", ints_type, "as Conv (default 0s)", required=False),
            attr("dilations", ints_type, "as Conv (default 1s)", required=False),
            attr("auto_pad", onnx.helper.make_attribute("auto_pad", "NOTSET"),
                 "as Conv: NOTSET | SAME_UPPER | SAME_LOWER | VALID"),
            attr("crc32c", OpSchema.AttrType.INT, "optional CRC32C of B's bytes followed by the scales' bytes "
                 "(onnxbit.checksum); checked when the session is created", required=False),
            attr("activation", OpSchema.AttrType.STRING,
                 "optional activation of Y: Relu | LeakyRelu | Clip | HardSigmoid | HardSwish | HardSwishRelu6 | "
                 "Sigmoid | Silu",
                 required=False),
            attr("activation_alpha", OpSchema.AttrType.FLOAT, "LeakyRelu's and HardSigmoid's alpha", required=False),
            attr("activation_beta", OpSchema.AttrType.FLOAT, "HardSigmoid's beta", required=False),
            attr("activation_min", OpSchema.AttrType.FLOAT, "Clip's lower bound", required=False),
            attr("activation_max", OpSchema.AttrType.FLOAT, "Clip's upper bound", required=False),
        ],
    )
    if hasattr(schema, "set_type_and_shape_inference_function"):
        schema.set_type_and_shape_inference_function(_infer_ternary_conv)
    return schema


_BF16_MATMUL_DOC = """\
Y = A @ float32(B) (+ bias): ONNX MatMul with its weight stored as bfloat16.

B is bfloat16 [K, N]. Each output is computed in float32 from the exact float32
values of B, as one fused multiply-add chain over K in order (acc = 0; acc =
fma(a[m, k], b[k, n], acc)), then + bias[n]. For float weights that are
bfloat16 numbers (a bf16 checkpoint exported to float32) this is the original
layer with half its weight bytes.
"""


def _infer_bf16_matmul(ctx) -> None:
    """Y: float32, A's shape with the last dimension replaced by B's second one."""
    y_type = onnx.helper.make_tensor_type_proto(TensorProto.FLOAT, shape=None)
    a_type = ctx.get_input_type(0) if ctx.has_input(0) else None
    b_type = ctx.get_input_type(1) if ctx.has_input(1) else None
    if (a_type is not None and b_type is not None and a_type.tensor_type.HasField("shape")
            and b_type.tensor_type.HasField("shape")):
        dims, b_dims = list(a_type.tensor_type.shape.dim), list(b_type.tensor_type.shape.dim)
        where = _display_name(ctx)
        if len(b_dims) != 2:
            raise onnx.shape_inference.InferenceError(f"{where}: B must be 2-D [K, N], got rank {len(b_dims)}")
        if not dims:
            raise onnx.shape_inference.InferenceError(f"{where}: input A is a scalar; it must have shape [..., K]")
        last, k = dims[-1], b_dims[0]
        if last.HasField("dim_value") and k.HasField("dim_value") and last.dim_value != k.dim_value:
            raise onnx.shape_inference.InferenceError(
                f"{where}: the last dimension of A is {last.dim_value}, B has K = {k.dim_value} rows")
        shape = y_type.tensor_type.shape
        for dim in dims[:-1]:
            shape.dim.add().CopyFrom(dim)
        shape.dim.add().CopyFrom(b_dims[1])
    ctx.set_output_type(0, y_type)


def _bf16_matmul_schema() -> OpSchema:
    schema = OpSchema(
        BF16_MATMUL, DOMAIN, OPSET_VERSION, _BF16_MATMUL_DOC,
        inputs=[
            OpSchema.FormalParameter("A", "T", "activations [..., K]"),
            OpSchema.FormalParameter("B", "TB", "weight [K, N]"),
            OpSchema.FormalParameter("bias", "T", "[N]", param_option=OpSchema.FormalParameterOption.Optional),
        ],
        outputs=[OpSchema.FormalParameter("Y", "T", "[..., N]")],
        type_constraints=[
            ("T", ["tensor(float)"], "activations, bias and output are float32"),
            ("TB", ["tensor(bfloat16)"], "the weight"),
        ],
    )
    if hasattr(schema, "set_type_and_shape_inference_function"):
        schema.set_type_and_shape_inference_function(_infer_bf16_matmul)
    return schema


_SCHEMAS = ((TERNARY_MATMUL, _ternary_matmul_schema), (TERNARY_CONV, _ternary_conv_schema),
            (BF16_MATMUL, _bf16_matmul_schema))


def is_registered() -> bool:
    return all(onnx.defs.has(name, OPSET_VERSION, DOMAIN) for name, _ in _SCHEMAS)


def register_schemas() -> None:
    """Register the com.onnxbit schemas with onnx (idempotent, thread safe)."""
    with _lock:
        for name, make in _SCHEMAS:
            if not onnx.defs.has(name, OPSET_VERSION, DOMAIN):
                onnx.defs.register_schema(make())
