"""ONNX operator schemas of the com.onnxbit custom ops, registered from Python.

With them registered, ``onnx.checker.check_model`` validates TernaryMatMul
nodes (inputs, types, attributes) and ``onnx.shape_inference`` infers Y's
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

_lock = threading.Lock()

_TERNARY_MATMUL_DOC = """\
Y = A @ (W * scales) (+ bias) for a ternary weight W[K, N] in {-1, 0, 1}.

B holds W transposed, N rows of K codes, each row packed in `format` and
starting on a byte boundary: "2bit" (code w + 1, four a byte, least
significant first; ceil(K/4) bytes a row) or "base3" (five base-3 digits
w + 1 a byte; ceil(K/5) bytes a row), or, with format "rans", a 1-D
entropy-coded stream of the base3 rows (csrc/include/onnxbit/rans.h). scales
is [1] (per tensor), [N] (per output channel) or, with group_size > 0,
[N, ceil(K / group_size)] (per group along K); every scale is finite and > 0.
act_quant = 1 quantizes each row of A to int8 first (BitNet per-token absmax)
and runs an exact integer core. crc32c (optional) is the CRC32C of B's bytes
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
                 "1 = BitNet per-token int8 activations, 0 = float32"),
            attr("crc32c", int_type, "optional CRC32C of B's bytes followed by the scales' bytes "
                 "(onnxbit.checksum); checked when the session is created", required=False),
        ],
    )
    if hasattr(schema, "set_type_and_shape_inference_function"):
        schema.set_type_and_shape_inference_function(_infer_ternary_matmul)
    return schema


def is_registered() -> bool:
    return onnx.defs.has(TERNARY_MATMUL, OPSET_VERSION, DOMAIN)


def register_schemas() -> None:
    """Register the com.onnxbit schemas with onnx (idempotent, thread safe)."""
    with _lock:
        if not is_registered():
            onnx.defs.register_schema(_ternary_matmul_schema())
