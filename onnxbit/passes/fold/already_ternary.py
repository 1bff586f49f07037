"""Record MatMul weights that are already exactly ternary as they are."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..base import Pass, PassContext, PassResult
from .constant_weight import fold_constant_weights

# Ops that move values around without changing any of them.
_LAYOUT_OPS = {"Constant", "Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten"}


def plain_float_weight(weight: gs.Tensor, nodes: list[gs.Node]) -> str | None:
    """The pattern: an initializer or Constant, maybe seen through layout ops
    and float32 Casts; no arithmetic."""
    for node in nodes:
        if node.op == "Cast":
            if node.attrs.get("to") != 1:  # onnx.TensorProto.FLOAT
                return None
        elif node.op not in _LAYOUT_OPS:
            return None
    if isinstance(weight, gs.Constant):
        return f"initializer {weight.name}" if np.dtype(weight.dtype) == np.float32 else None
    return f"constant {weight.name}"


class AlreadyTernary(Pass):
    name = "fold-already-ternary"
    ensures = frozenset({"weight-proofs"})
    must_precede = frozenset({"activations-folded", "weight-sites"})
    contract = (
        "Matches MatMul/Gemm weights that are plain float32 constants (initializer or Constant, "
        "maybe through Identity/Transpose/Reshape/Cast) whose values are exactly {-s,0,+s} per "
        "tensor or {-s_n,0,+s_n} per output column, and gives the node a constant carrying them as proof "
        "as they are (never re-ternarized; the node reads the same values as a [K,N]-oriented "
        "constant). Float weights that are not exactly ternary are left alone without a record."
    )

    def run(self, ctx: PassContext) -> PassResult:
        found = fold_constant_weights(ctx, self.name, plain_float_weight, record_not_ternary=False)
        return PassResult(found > 0, f"{found} already-ternary weight(s) recorded")
