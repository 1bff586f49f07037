"""What a weight layer is to the converter: a node kind that multiplies an
activation by a constant weight, where that weight sits, and its logical
[K, N] view (y = x @ W over the last axis of x).

A LayerKind's match() turns one node into a WeightSite or raises
NotConstant with the reason; the emit side (onnxbit.targets) rewrites the
site. Adding a layer kind is one new module here plus one line in
onnxbit/layers/__init__.py.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from onnxbit.graph.ternary import TernaryProof

if TYPE_CHECKING:  # onnxbit.layers.conv imports this module
    from onnxbit.layers.conv import ConvSpec


@dataclass
class WeightSite:
    """A node whose weight is a constant [K, N] matrix, found by find_weights
    and consumed by pack_weights.

    weight: the effective float32 [K, N] matrix the node multiplies by (Gemm's
    transB and alpha already applied), possibly a transposed view of a [N, K]
    constant (so packing W^T rows needs no copy); loaded on demand by
    load_weight. weight_key names the constant and the transforms that
    produced it, so a weight shared by several nodes is packed once.
    proof: the ternary proof the weight constant carries (a QAT fold's), or None.
    bias: float32 [N] to fold into the new op (Gemm's beta * C, or the
    constant of an Add right after a MatMul, whose output is then `output`), or None.
    extra_add: a tensor the new op's output must still be added to, times
    extra_add_scale (Gemm's C and beta when C is not a constant [N] vector).
    """

    kind: "LayerKind"
    node: gs.Node
    graph: gs.Graph
    activation: gs.Tensor
    output: gs.Tensor
    load_weight: Callable[[], np.ndarray]
    shape: tuple[int, int]
    weight_key: str
    weight_name: str
    source_bytes: int
    proof: TernaryProof | None = None
    bias: np.ndarray | None = None
    extra_add: gs.Tensor | None = None
    extra_add_scale: float = 1.0
    fused_add: gs.Node | None = None  # an Add of a constant bias after a MatMul, absorbed into `bias`
    transpose_activation: bool = False  # Gemm transA = 1
    position: frozenset[str] = frozenset()  # {"first"}, {"last"} among the main graph's sites
    in_subgraph: bool = False
    conv: "ConvSpec | None" = None  # Conv/ConvTranspose: how to rebuild the node around a new weight
    _weight: np.ndarray | None = field(default=None, repr=False)

    @property
    def weight(self) -> np.ndarray:
        """The float32 [K, N] weight, read when first asked for and kept until
        :meth:`release` (the packing pass releases each layer's weight once
        packed, so a big model is never held in memory whole)."""
        if self._weight is None:
            self._weight = self.load_weight()
        return self._weight

    def release(self) -> None:
        self._weight = None

    @property
    def k(self) -> int:
        return int(self.shape[0])

    @property
    def n(self) -> int:
        return int(self.shape[1])


class LayerKind(abc.ABC):
    """One kind of weight layer (MatMul, Gemm, ...)."""

    op_types: ClassVar[tuple[str, ...]] = ()

    def handles(self, node: gs.Node) -> bool:
        return node.op in self.op_types and node.domain in ("", "ai.onnx", None)

    @abc.abstractmethod
    def match(self, node: gs.Node, graph: gs.Graph, in_subgraph: bool) -> WeightSite:
        """The node's WeightSite; raises NotConstant saying why it has none."""


FLOAT_DTYPES = (np.float32, np.float16, np.float64)


def constant_weight(node: gs.Node) -> tuple[gs.Tensor, gs.Tensor, np.ndarray, str]:
    """(activation, weight tensor, weight value, weight key) of a node that
    reads x as input 0 and a constant float weight as input 1; raises
    NotConstant naming what is wrong."""
    from onnxbit.graph.queries import NotConstant, is_constant, resolve_constant

    if len(node.inputs) < 2 or len(node.outputs) != 1:
        raise NotConstant(f"{node.op} node '{node.name}' has {len(node.inputs)} inputs / {len(node.outputs)} outputs")
    activation, weight_tensor = node.inputs[0], node.inputs[1]
    try:
        weight, key = resolve_constant(weight_tensor)
    except NotConstant as why:
        if is_constant(activation):
            raise NotConstant(f"{why}; the constant is the left operand (W @ x), and only x @ W maps to the "
                              "low-bit ops") from None
        raise
    if isinstance(activation, gs.Constant):
        raise NotConstant("both operands are constants (constant folding, not weight packing, applies)")
    if weight.dtype.type not in FLOAT_DTYPES:
        raise NotConstant(f"weight '{weight_tensor.name}' has dtype {weight.dtype}; only float weights are quantized")
    if activation.dtype is not None and np.dtype(activation.dtype) != np.float32:
        raise NotConstant(f"activation '{activation.name}' is {np.dtype(activation.dtype)}; the low-bit ops take "
                          "float32")
    return activation, weight_tensor, weight, key


def source_nbytes(tensor: gs.Tensor, fallback: np.ndarray) -> int:
    """Bytes the weight's source constant occupies in the original model."""
    t = tensor
    while not isinstance(t, gs.Constant) and t.inputs and t.inputs[0].op != "Constant" and t.inputs[0].inputs:
        t = t.inputs[0].inputs[0]
    if isinstance(t, gs.Constant):
        return int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize
    return int(fallback.nbytes)
