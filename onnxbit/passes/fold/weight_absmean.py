"""Fold BitNet's absmean weight quantizer into a constant ternary weight."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..base import Pass, PassContext, PassResult
from .constant_weight import fold_constant_weights
from .matching import producer, skip_transparent

_MEAN_OPS = ("ReduceMean", "ReduceSum", "ReduceL1")


def absmean_chain(weight: gs.Tensor, nodes: list[gs.Node]) -> str | None:
    """The pattern: a constant subgraph that rounds (Round) something scaled
    by a mean of absolute values (ReduceMean/ReduceSum of Abs, or ReduceL1).
    Node order, Reciprocal-vs-Div, Cast/Identity and a trailing Transpose do
    not matter: the values are evaluated, not re-derived."""
    if not any(n.op == "Round" for n in nodes):
        return None
    for node in nodes:
        if node.op == "ReduceL1":
            break
        if node.op in _MEAN_OPS:
            source = producer(skip_transparent(node.inputs[0]))
            if source is not None and source.op == "Abs":
                break
    else:
        return None
    roots = sorted({t.name for n in nodes for t in n.inputs
                    if isinstance(t, gs.Constant) and int(np.prod(t.shape)) > 1})
    return f"absmean weight chain on {', '.join(roots) or 'a constant'} ({len(nodes)} nodes)"


class WeightAbsmeanFold(Pass):
    name = "fold-weight-absmean"
    ensures = frozenset({"weight-proofs"})
    must_precede = frozenset({"activations-folded", "weight-sites"})
    contract = (
        "Matches MatMul/Gemm weights computed from constants by BitNet's absmean quantizer "
        "(|w| mean, clamp, reciprocal, scale, Round, Clip(-1,1), rescale; any spelling, with "
        "Cast/Identity/Transpose). Evaluates the chain once with onnxruntime, proves the result "
        "is exactly {-v,0,+v} (per tensor or per output column), replaces it with the constant "
        "codes*scale, as a constant that carries the codes as proof. Skips, with the reason, "
        "chains whose values are not exactly ternary or that onnxruntime cannot evaluate."
    )

    def run(self, ctx: PassContext) -> PassResult:
        folded = fold_constant_weights(ctx, self.name, absmean_chain)
        return PassResult(folded > 0, f"{folded} absmean weight chain(s) folded")
