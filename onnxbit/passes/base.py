"""Pass infrastructure: the contract every graph pass follows.

A pass is one module holding one :class:`Pass` subclass. It reads and edits an
onnx-graphsurgeon graph held by a :class:`PassContext`, and says what it did to
each node it looked at in a :class:`LayerRecord` (converted, folded or skipped,
and why). Passes never touch the caller's ModelProto: the pass manager works on
a copy.

Each pass declares the facts it `requires` and `ensures`, and those it
`must_precede` (e.g. the activation fold requires "weight-proofs" from the
weight folds, which must precede "activations-folded"; the packing pass
requires "weight-sites"): the manager checks them before running a
pipeline, so an ordering mistake is an error naming the pass, not a silent
wrong result. A pass returns a
PassResult; the manager keeps them in ctx.results.

QAT folding passes and the weight-packing pass meet in the weight itself: a
folding pass that proves a weight exactly ternary replaces it with a
constant carrying the proof (onnxbit.graph.ternary), so the packing pass
packs exactly those codes and never re-ternarizes them.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import onnx_graphsurgeon as gs

from onnxbit.graph.queries import iter_graphs
from onnxbit.layers.base import WeightSite  # noqa: F401  (re-exported: the sites passes exchange)


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
    flag: str = ""  # why this layer's accuracy is in doubt (low weight SQNR), "" when fine

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, "", {})}


@dataclass
class PassContext:
    graph: gs.Graph
    config: Any = None  # onnxbit.config.QuantConfig when the pipeline has one
    target: Any = "onnxbit"  # an onnxbit.targets.Target; a name is looked up
    records: list[LayerRecord] = field(default_factory=list)
    # Opset imports the rewritten graph needs, domain -> version.
    opsets: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # model-level remarks for the report
    # What each pass that ran returned, in order (pass name, result).
    results: list[tuple[str, "PassResult"]] = field(default_factory=list)
    # Convertible layers found by find_weights, in topological order.
    weight_sites: list[WeightSite] = field(default_factory=list)
    # Called as progress(node_name, layers_done, layers_total) after each layer
    # a pass finishes, to drive a progress bar.
    progress: Callable[[str, int, int], None] | None = None
    _taken_names: set[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from onnxbit.targets import get_target

        self.target = get_target(self.target)

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
            for g in iter_graphs(self.graph):
                self._taken_names.update(g.tensors().keys())
                self._taken_names.update(node.name for node in g.nodes)
        name, i = base, 1
        while name in self._taken_names:
            name, i = f"{base}_{i}", i + 1
        self._taken_names.add(name)
        return name


def rewrite_matches(root: gs.Graph, op: str, pattern: Callable, check: Callable,
                    rewrite: Callable) -> tuple[list[Any], dict[str, str]]:
    """A pass's three functions over every `op` node of every graph and subgraph: pattern(node) gives a
    match or None, check(node, match, graph) what the rewrite needs or why not (a str), and
    rewrite(graph, node, match, checked) applies it. Returns the matches rewritten, and why each node
    matched but kept (node name -> reason)."""
    done: list[Any] = []
    kept: dict[str, str] = {}
    for graph in iter_graphs(root):
        for node in [n for n in graph.nodes if n.op == op]:
            match = pattern(node)
            if match is None:
                continue
            checked = check(node, match, graph)
            if isinstance(checked, str):
                kept[node.name] = checked
                continue
            rewrite(graph, node, match, checked)
            done.append(match)
    return done, kept


@dataclass
class PassResult:
    modified: bool
    summary: str = ""


class PassOrderError(ValueError):
    """A pipeline lists passes in an order their contracts forbid."""


def check_order(passes) -> None:
    """Raise PassOrderError naming the first pass whose `requires` do not hold
    or whose `must_precede` facts already hold at its place in `passes`."""
    facts: set[str] = set()
    for index, p in enumerate(passes):
        missing = p.requires - facts
        if missing:
            raise PassOrderError(f"pass {p.name!r} (position {index}) requires {sorted(missing)}, which no earlier "
                                 "pass ensures")
        late = p.must_precede & facts
        if late:
            raise PassOrderError(f"pass {p.name!r} (position {index}) must run before the passes ensuring "
                                 f"{sorted(late)}")
        facts |= p.ensures


class Pass(abc.ABC):
    """One graph transformation with a stated contract.

    Subclasses set ``name`` and ``contract`` (one paragraph: what it matches,
    what it emits, when it skips), the facts they ``require`` from earlier
    passes and ``ensure`` for later ones, and implement :meth:`run`.
    """

    name: ClassVar[str] = ""
    contract: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()
    ensures: ClassVar[frozenset[str]] = frozenset()
    # Facts that must not hold yet when this pass runs (it has to come before
    # the passes ensuring them: e.g. a fold changes weights, so it must precede
    # find_weights, which ensures "weight-sites").
    must_precede: ClassVar[frozenset[str]] = frozenset()

    @abc.abstractmethod
    def run(self, ctx: PassContext) -> PassResult:
        """Apply the pass to ctx.graph; record every node looked at."""

    def __repr__(self) -> str:
        return f"<pass {self.name}>"
