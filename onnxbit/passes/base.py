"""Pass infrastructure: the contract every graph pass follows.

A pass is one module holding one :class:`Pass` subclass. It reads and edits an
onnx-graphsurgeon graph held by a :class:`PassContext`, and says what it did to
each node it looked at in a :class:`LayerRecord` (converted, folded or skipped,
and why). Passes never touch the caller's ModelProto: the pass manager works on
a copy.

QAT folding passes and the weight-packing pass meet in
:attr:`PassContext.ternary_weights`: a folding pass that proves a MatMul's
weight is exactly ternary records the codes and scales there (and whether the
activation chain in front of it was folded into ``act_quant``), so the packing
pass packs exactly those codes and never re-ternarizes them.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import onnx_graphsurgeon as gs


@dataclass
class LayerRecord:
    """What happened to one node, for the report and the summary table."""

    node: str
    op_type: str
    action: str  # "converted" | "folded" | "skipped"
    reason: str = ""
    pass_name: str = ""
    precision: str = ""  # "ternary", "binary", "int2", "int4", "int8", "fp32"
    storage: str = ""  # "2bit", "base3", "MatMulNBits", "DequantizeLinear", ...
    bits_per_weight: float | None = None  # counting scales and zero points
    bytes_before: int | None = None
    bytes_after: int | None = None
    weight_error: dict[str, float] = field(default_factory=dict)  # mse, sqnr_db, cosine

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, "", {})}


@dataclass
class TernaryWeight:
    """An exactly ternary MatMul weight proven by a folding pass.

    codes: int8 [K, N] in {-1, 0, 1}; scales: float32 [1] or [N]; the weight the
    original graph used is codes * scales (per output column).
    act_quant: 1 when the BitNet per-token int8 activation chain feeding this
    MatMul was removed and must be applied by the op.
    """

    codes: np.ndarray
    scales: np.ndarray
    act_quant: int = 0
    source: str = ""  # which chain proved it, for the report


@dataclass
class WeightSite:
    """A MatMul/Gemm whose weight is a constant [K, N] matrix, found by
    find_weights and consumed by pack_weights.

    weight: the effective float32 [K, N] matrix the node multiplies by (Gemm's
    transB and alpha already applied), possibly a transposed view of a [N, K]
    constant (so packing W^T rows needs no copy); loaded on demand by
    load_weight. weight_key names the constant and the
    transforms that produced it, so a weight shared by several nodes is packed
    once. bias: float32 [N] to fold into the new op (Gemm's beta * C, or the
    constant of an Add right after a MatMul, whose output is then `output`), or None.
    extra_add: a tensor the new op's output must still be added to, times
    extra_add_scale (Gemm's C and beta when C is not a constant [N] vector).
    """

    node: gs.Node
    graph: gs.Graph
    activation: gs.Tensor
    output: gs.Tensor
    load_weight: Callable[[], np.ndarray]
    shape: tuple[int, int]
    weight_key: str
    weight_name: str
    source_bytes: int
    bias: np.ndarray | None = None
    extra_add: gs.Tensor | None = None
    extra_add_scale: float = 1.0
    fused_add: gs.Node | None = None  # an Add of a constant bias after a MatMul, absorbed into `bias`
    transpose_activation: bool = False  # Gemm transA = 1
    position: frozenset[str] = frozenset()  # {"first"}, {"last"} among the main graph's sites
    in_subgraph: bool = False
    _weight: np.ndarray | None = field(default=None, repr=False)

    @property
    def weight(self) -> np.ndarray:
        """The float32 [K, N] weight, read when first asked for and kept
        until :meth:`release` (the packing pass releases each layer's weight
        once packed, so a big model is never held in memory whole)."""
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


@dataclass
class PassContext:
    graph: gs.Graph
    config: Any = None  # onnxbit.config.QuantConfig when the pipeline has one
    target: str = "onnxbit"  # "onnxbit" | "ort" | "onnx"
    records: list[LayerRecord] = field(default_factory=list)
    # MatMul (or Gemm with alpha 1, transA 0) node name -> weight proven ternary
    # by a QAT folding pass; codes in the [K, N] orientation of A @ W.
    ternary_weights: dict[str, TernaryWeight] = field(default_factory=dict)
    # Opset imports the rewritten graph needs, domain -> version.
    opsets: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # model-level remarks for the report
    # Convertible layers found by find_weights, in topological order.
    weight_sites: list[WeightSite] = field(default_factory=list)
    # Called as progress(node_name, layers_done, layers_total) after each layer
    # a pass finishes, to drive a progress bar.
    progress: Callable[[str, int, int], None] | None = None
    _taken_names: set[str] | None = field(default=None, repr=False)

    def record(self, **kwargs: Any) -> LayerRecord:
        rec = LayerRecord(**kwargs)
        self.records.append(rec)
        return rec

    def require_opset(self, domain: str, version: int) -> None:
        self.opsets[domain] = max(version, self.opsets.get(domain, 0))

    def fresh_name(self, base: str) -> str:
        """A tensor/node name not used anywhere in the graph or its subgraphs."""
        if self._taken_names is None:
            self._taken_names = set()
            stack = [self.graph]
            while stack:
                g = stack.pop()
                self._taken_names.update(g.tensors().keys())
                for node in g.nodes:
                    self._taken_names.add(node.name)
                    stack.extend(v for v in node.attrs.values() if isinstance(v, gs.Graph))
        name, i = base, 1
        while name in self._taken_names:
            name, i = f"{base}_{i}", i + 1
        self._taken_names.add(name)
        return name


@dataclass
class PassResult:
    modified: bool
    summary: str = ""


class Pass(abc.ABC):
    """One graph transformation with a stated contract.

    Subclasses set ``name`` and ``contract`` (one paragraph: what it matches,
    what it emits, when it skips) and implement :meth:`run`.
    """

    name: ClassVar[str] = ""
    contract: ClassVar[str] = ""

    @abc.abstractmethod
    def run(self, ctx: PassContext) -> PassResult:
        """Apply the pass to ctx.graph; record every node looked at."""

    def __repr__(self) -> str:
        return f"<pass {self.name}>"
