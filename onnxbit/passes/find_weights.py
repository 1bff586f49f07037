"""Find every layer that multiplies by a constant weight (the layer kinds of
onnxbit.layers: MatMul, Gemm).

Weights may be initializers, Constant nodes, or a constant seen through
value-preserving ops (onnxbit.graph.queries.resolve_constant); nodes inside
If / Loop / Scan bodies are searched too (their weights are often
outer-scope initializers). Each match becomes a WeightSite in
ctx.weight_sites; each node that cannot be converted is recorded as skipped
with the reason.
"""

from __future__ import annotations

from onnxbit.graph.queries import NotConstant, RuntimeDependence, iter_graphs
from onnxbit.layers import kind_for
from onnxbit.passes.base import Pass, PassContext, PassResult


class FindWeightsPass(Pass):
    name = "find_weights"
    ensures = frozenset({"weight-sites"})
    contract = (
        "Matches MatMul(A, W) with constant 2-D W, and Gemm(A, B, C) with constant B (transB, alpha and a constant "
        "C broadcastable to [N] folded in; other C kept as an Add). Adds one WeightSite per match to "
        "ctx.weight_sites, in topological order; records every other MatMul/Gemm reading a constant as skipped "
        "with the reason (a product of two run-time values, like attention scores, is not a weight layer). "
        "Does not change the graph."
    )

    def run(self, ctx: PassContext) -> PassResult:
        ctx.weight_sites.clear()
        runtime = RuntimeDependence()
        for graph in iter_graphs(ctx.graph):
            graph.toposort(recurse_subgraphs=False)
            for node in graph.nodes:
                kind = kind_for(node)
                if kind is None:
                    continue
                try:
                    site = kind.match(node, graph, in_subgraph=graph is not ctx.graph)
                except NotConstant as why:
                    if len(node.inputs) >= 2 and runtime(node.inputs[0]) and runtime(node.inputs[1]):
                        continue  # activation x activation (attention scores): not a weight layer
                    ctx.record(node=node.name, op_type=node.op, action="skipped", reason=str(why), pass_name=self.name)
                    continue
                ctx.weight_sites.append(site)
        main_sites = [s for s in ctx.weight_sites if not s.in_subgraph]
        if main_sites:
            main_sites[0].position = main_sites[0].position | {"first"}
            main_sites[-1].position = main_sites[-1].position | {"last"}
        return PassResult(modified=False, summary=f"{len(ctx.weight_sites)} convertible layer(s)")
