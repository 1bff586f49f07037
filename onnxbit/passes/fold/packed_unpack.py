"""Fold packed-integer weight unpacking (transformers' offline BitLinear) into
ternary codes, with no float round trip."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..base import Pass, PassContext, PassResult
from .constant_weight import fold_constant_weights


def packed_unpack_chain(weight: gs.Tensor, nodes: list[gs.Node]) -> str | None:
    """The pattern: a constant subgraph that reads an integer (uint8/int8/
    int32) initializer and converts integers to float with a Cast, with no
    Round (a Round means a float quantizer: the absmean pass's business).
    Field extraction may be BitwiseAnd/BitShift, Div/Mod after a Cast, or
    already constant-folded by the exporter into per-field initializers that
    ScatterND/Concat reassemble; the evaluated values are what is checked."""
    if any(n.op == "Round" for n in nodes):
        return None
    if not any(n.op == "Cast" and _is_float_type(n.attrs.get("to")) for n in nodes):
        return None
    integer = {t.name: np.dtype(t.dtype) for n in nodes for t in n.inputs
               if isinstance(t, gs.Constant) and int(np.prod(t.shape)) > 1
               and np.issubdtype(np.dtype(t.dtype), np.integer)}
    if not integer:
        return None
    # Name the packed data, not index tensors (ScatterND/Gather indices are int64).
    packed = sorted(name for name, dtype in integer.items() if dtype.itemsize == 1) or sorted(integer)
    shown = ", ".join(packed[:3]) + (f" and {len(packed) - 3} more" if len(packed) > 3 else "")
    return f"packed weight unpack chain on {shown} ({len(nodes)} nodes)"


def _is_float_type(onnx_type: int | None) -> bool:
    return onnx_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                         onnx.TensorProto.BFLOAT16)


class PackedUnpackFold(Pass):
    name = "fold-packed-unpack"
    ensures = frozenset({"weight-proofs"})
    must_precede = frozenset({"activations-folded", "weight-sites"})
    contract = (
        "Matches MatMul/Gemm weights computed from packed integer initializers and a Cast to "
        "float, with no Round (BitwiseAnd/BitShift or Div/Mod field extraction, or fields the "
        "exporter already folded, reassembled by Concat/ScatterND; then Sub(1), maybe Transpose). "
        "Evaluates the integer chain once with onnxruntime (exact), proves the result exactly "
        "ternary, replaces it with the constant codes*scale and records the codes. The "
        "activation quantizer in front and the division by input_scale*weight_scale after the "
        "MatMul are folded by fold-activation-absmax, which runs later. Skips, with the reason, "
        "chains whose values are not exactly ternary."
    )

    def run(self, ctx: PassContext) -> PassResult:
        folded = fold_constant_weights(ctx, self.name, packed_unpack_chain)
        return PassResult(folded > 0, f"{folded} packed weight(s) unpacked into ternary codes")
