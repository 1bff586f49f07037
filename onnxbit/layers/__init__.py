"""Layer kinds the converter finds weights in: one module each, one line here."""

from __future__ import annotations

from onnxbit.layers.base import LayerKind, WeightSite
from onnxbit.layers.conv import ConvLayer
from onnxbit.layers.gemm import GemmLayer
from onnxbit.layers.matmul import MatMulLayer

LAYER_KINDS: tuple[LayerKind, ...] = (MatMulLayer(), GemmLayer(), ConvLayer())


def kind_for(node) -> LayerKind | None:
    """The layer kind that handles `node`, or None."""
    return next((kind for kind in LAYER_KINDS if kind.handles(node)), None)


__all__ = ["LAYER_KINDS", "LayerKind", "WeightSite", "kind_for"]
