"""Store embedding tables whose values are bfloat16 numbers as bfloat16.

A model exported from a bf16 checkpoint (every released BitNet model) holds its token
embedding as a float32 table whose values all have zero low halves; it is the largest
tensor such a model keeps after conversion (197 MB of a 0.7B BitNet's 531). Stored as
bfloat16, with each Gather's output cast back to float32 (exact), the table takes half
the bytes on disk and in memory, and the lookup gives the same floats: every runtime
gathers bfloat16 rows and casts them (opset 13 and later).

Pattern, check and rewrite as three plain functions: `pattern` finds a Gather reading a
constant table, `check` says whether the table can be stored so or why not, `rewrite`
stores it and casts each reader's output.
"""

from __future__ import annotations

import ml_dtypes  # numpy's bfloat16 dtype, which onnx reads and writes bfloat16 tensors with
import numpy as np
import onnx_graphsurgeon as gs

from onnxbit.graph.queries import iter_graphs
from onnxbit.targets.bf16_cast import LOSSLESS_ERROR, bf16_constant, stored_bits

from .base import Pass, PassContext, PassResult

MIN_OPSET = 13  # Gather and Cast take bfloat16
MIN_ELEMENTS = 256  # as find_weights counts an embedding table


def pattern(node: gs.Node) -> gs.Constant | None:
    """The constant table a Gather reads, if any."""
    if node.op != "Gather" or node.domain not in ("", "ai.onnx", None) or not node.inputs:
        return None
    table = node.inputs[0]
    return table if isinstance(table, gs.Constant) else None


def check(table: gs.Constant, readers: list[tuple[gs.Node, int]]) -> str | np.ndarray:
    """The table's bfloat16 bits, or why it stays as it is."""
    if table.dtype != np.float32 or len(table.shape) < 2 or int(np.prod(table.shape)) < MIN_ELEMENTS:
        return "not a float32 table"
    if any(node.op != "Gather" or index != 0 for node, index in readers):
        return "the table is also read by other nodes (e.g. a tied output layer)"
    bits = stored_bits(table)
    return "its values are not all bfloat16 numbers" if bits is None else bits


def rewrite(ctx: PassContext, table: gs.Constant, bits: np.ndarray, readers: list[tuple[gs.Node, int]],
            graph_of: dict[int, gs.Graph]) -> None:
    """Every reader gathers from the bfloat16 table and casts its output to float32."""
    stored = bf16_constant(ctx, table.name, bits)
    for node, _ in readers:
        output = node.outputs[0]
        rows = gs.Variable(ctx.fresh_name(f"{output.name}_bf16"), dtype=ml_dtypes.bfloat16, shape=output.shape)
        node.inputs[0] = stored
        node.outputs[0] = rows
        cast = gs.Node("Cast", ctx.fresh_name(f"{node.name}_to_float"), attrs={"to": 1}, inputs=[rows],
                       outputs=[output])
        graph_of[id(node)].nodes.append(cast)


class StoreBf16TablesPass(Pass):
    name = "store_bf16_tables"
    requires = frozenset({"weight-sites"})
    contract = (
        "For each constant float32 table (>= 2-D, >= 256 values) that only Gathers read, as their data, and whose "
        "values are all bfloat16 numbers: stores it as bfloat16 and casts each Gather's output to float32 (exact, "
        "same floats). Marks those Gathers' records converted (bf16); leaves every other table as it is. Needs "
        "ai.onnx opset 13; config float_storage 'fp32' turns it off."
    )

    def run(self, ctx: PassContext) -> PassResult:
        if ctx.config is not None and getattr(ctx.config, "float_storage", "bf16") == "fp32":
            return PassResult(modified=False, summary="float_storage fp32: tables stay float32")
        if ctx.graph.opset < MIN_OPSET:
            return PassResult(modified=False, summary=f"opset {ctx.graph.opset} < {MIN_OPSET}: tables stay float32")
        readers: dict[str, list[tuple[gs.Node, int]]] = {}
        graph_of: dict[int, gs.Graph] = {}
        tables: dict[str, gs.Constant] = {}
        for graph in iter_graphs(ctx.graph):
            for node in graph.nodes:
                graph_of[id(node)] = graph
                for index, tensor in enumerate(node.inputs):
                    if isinstance(tensor, gs.Constant) and tensor.name:
                        readers.setdefault(tensor.name, []).append((node, index))
                table = pattern(node)
                if table is not None and table.name:
                    tables[table.name] = table
        stored = 0
        for name, table in tables.items():
            found = check(table, readers[name])
            if isinstance(found, str):
                continue
            before = int(np.prod(table.shape)) * 4
            rewrite(ctx, table, found, readers[name], graph_of)
            gathers = {node.name for node, _ in readers[name]}
            for record in ctx.records:
                if record.node in gathers and record.op_type == "Gather" and record.action == "skipped":
                    record.action, record.precision, record.storage = "converted", "bf16", "Gather/BFLOAT16"
                    record.reason = ("embedding table of bfloat16 values: stored as bfloat16, rows cast to float32 "
                                     "(lossless, half the bytes)")
                    record.bits_per_weight = 16.0
                    record.bytes_before, record.bytes_after = before, before // 2
                    record.weight_error = dict(LOSSLESS_ERROR)
                    before = 0  # a table several Gathers read is counted once
            stored += 1
        return PassResult(modified=stored > 0, summary=f"{stored} table(s) stored as bfloat16")
