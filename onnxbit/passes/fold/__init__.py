"""Exact folding of the fake-quant chains BitNet QAT exporters leave in graphs.

Weight passes run first (each proves a MatMul weight exactly ternary and
gives the node a weight constant carrying the proof); the activation pass
runs last because it only folds the activation quantizer in front of MatMuls
with a proven weight. Each pass declares that order (requires / ensures /
must_precede) and the pass manager checks it.
"""

from __future__ import annotations

from ..base import Pass
from .activation_absmax import ActivationAbsmaxFold
from .already_ternary import AlreadyTernary
from .packed_unpack import PackedUnpackFold
from .weight_absmean import WeightAbsmeanFold

__all__ = ["ActivationAbsmaxFold", "AlreadyTernary", "PackedUnpackFold", "WeightAbsmeanFold",
           "qat_passes"]


def qat_passes() -> list[Pass]:
    """The folding passes, in the order they must run (before weight packing)."""
    return [WeightAbsmeanFold(), PackedUnpackFold(), AlreadyTernary(), ActivationAbsmaxFold()]
