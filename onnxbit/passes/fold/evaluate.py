"""Evaluate constant subgraphs with onnxruntime itself.

A folded weight must be bit-identical to what the original graph computes in
onnxruntime: a numpy re-implementation of ReduceMean or Div can differ in the
last bit (summation order, reciprocal-vs-divide) and flip a weight sitting on a
rounding boundary. So the nodes computing the wanted tensors from constants
are copied into a small model and run by onnxruntime's own CPU kernels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnxbit.graph.gs_adapter import constant_tensor_proto, export_node, read_constant

# An IR version every onnxruntime able to run the opsets exporters emit accepts.
_IR_VERSION = 8


class NotConstantError(ValueError):
    """The tensor depends on a graph input, or on a node onnxruntime cannot run."""


def constant_subgraph(tensors: Sequence[gs.Tensor]) -> list[gs.Node]:
    """The nodes computing ``tensors`` from initializers and Constant nodes
    only, in topological order. Raises NotConstantError naming the graph input
    (or unsupported node) a tensor depends on."""
    order: list[gs.Node] = []
    state: dict[int, bool] = {}  # id(node) -> finished?

    def visit(tensor: gs.Tensor, wanted: str) -> None:
        if isinstance(tensor, gs.Constant) or (tensor.name == "" and not tensor.inputs):
            return
        if not tensor.inputs:
            raise NotConstantError(f"{wanted!r} depends on the graph input {tensor.name!r}")
        node = tensor.inputs[0]
        done = state.get(id(node))
        if done:
            return
        if done is False:
            raise NotConstantError(f"{wanted!r} is computed by a cycle through {node.name!r}")
        if node.domain not in ("", "ai.onnx", None):
            raise NotConstantError(f"{wanted!r} is computed by the custom op {node.domain}::{node.op}")
        if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
            raise NotConstantError(f"{wanted!r} is computed by the control-flow node {node.name!r}")
        state[id(node)] = False
        for inp in node.inputs:
            visit(inp, wanted)
        state[id(node)] = True
        order.append(node)

    for tensor in tensors:
        visit(tensor, tensor.name)
    return order


# Constants one evaluation session may copy: keeps the serialized subgraph far
# below protobuf's 2 GB limit and bounds the extra memory on large models
# (onnxruntime holds the batch, its intermediates and outputs: a few times this;
# measured on the 3.1 GB BitNet LM: peak 391 MiB at 16 MiB, 576 MiB at 64, same speed).
BATCH_BYTES = 16 * 2**20


def evaluate_constants(graph: gs.Graph, tensors: Sequence[gs.Tensor]) -> list[np.ndarray]:
    """Values of ``tensors`` as onnxruntime computes them; raises
    NotConstantError for the first one that cannot be evaluated."""
    values = {tensor.name: value for tensor, value in iter_evaluated(graph, tensors)}
    for tensor in tensors:
        if isinstance(values[tensor.name], NotConstantError):
            raise values[tensor.name]
    return [values[t.name] for t in tensors]


def iter_evaluated(graph: gs.Graph,
                   tensors: Sequence[gs.Tensor]) -> Iterator[tuple[gs.Tensor, np.ndarray | NotConstantError]]:
    """(tensor, value as onnxruntime computes it, or the error saying why it
    cannot be evaluated) for each distinct tensor, one batch at a time so only
    BATCH_BYTES of results are alive when the caller consumes them as they
    come. A failing batch is retried one tensor at a time, so one bad subgraph
    does not hide the others. Initializers and Constant-node outputs are
    returned as stored."""
    seen: set[str] = set()
    batch: list[gs.Tensor] = []
    batch_bytes = 0
    for tensor in tensors:
        if tensor.name in seen:
            continue
        seen.add(tensor.name)
        if isinstance(tensor, gs.Constant):
            yield tensor, np.asarray(read_constant(tensor))
            continue
        try:
            size = _constant_bytes(constant_subgraph([tensor]))
        except NotConstantError as exc:
            yield tensor, exc
            continue
        if batch and batch_bytes + size > BATCH_BYTES:
            yield from _run_batch(graph, batch)
            batch, batch_bytes = [], 0
        batch.append(tensor)
        batch_bytes += size
    if batch:
        yield from _run_batch(graph, batch)


def _constant_bytes(nodes: list[gs.Node]) -> int:
    seen = {id(t): t for n in nodes for t in n.inputs if isinstance(t, gs.Constant)}
    return sum(int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize for t in seen.values())


def _run_batch(graph: gs.Graph,
               batch: list[gs.Tensor]) -> list[tuple[gs.Tensor, np.ndarray | NotConstantError]]:
    try:
        return list(zip(batch, _run(graph, batch)))
    except NotConstantError as exc:
        if len(batch) == 1:
            return [(batch[0], exc)]
        return [pair for tensor in batch for pair in _run_batch(graph, [tensor])]


def _run(graph: gs.Graph, tensors: list[gs.Tensor]) -> list[np.ndarray]:
    import onnxruntime as ort

    model = _subgraph_model(graph, tensors)
    options = ort.SessionOptions()
    # Run every node with its kernel, exactly as written: the original
    # model's constant folding at session creation runs these same kernels
    # (single-threaded, as here).
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values = session.run([t.name for t in tensors], {})
    except Exception as exc:  # onnxruntime raises its own exception types
        names = ", ".join(t.name for t in tensors)
        raise NotConstantError(f"onnxruntime could not evaluate {names}: {exc}") from exc
    return [np.asarray(v) for v in values]


def _subgraph_model(graph: gs.Graph, tensors: Sequence[gs.Tensor]) -> onnx.ModelProto:
    nodes = constant_subgraph(tensors)
    constants: dict[str, gs.Constant] = {}
    for node in nodes:
        for inp in node.inputs:
            if isinstance(inp, gs.Constant):
                constants[inp.name] = inp
    exported_nodes = [export_node(node) for node in nodes]
    outputs = [onnx.helper.make_empty_tensor_value_info(t.name) for t in tensors]
    opsets = [onnx.helper.make_opsetid("", graph.opset)]
    # Shape inference only needs the constants' types and shapes: give it a
    # copy without their data (cheap on multi-GB weights).
    typing_graph = onnx.helper.make_graph(
        exported_nodes, "onnxbit_constant_subgraph_types",
        inputs=[onnx.helper.make_tensor_value_info(
            c.name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(c.dtype)), list(c.shape))
            for c in constants.values()],
        outputs=outputs)
    typed_outputs = _typed_outputs(onnx.helper.make_model(typing_graph, opset_imports=opsets))
    onnx_graph = onnx.helper.make_graph(
        exported_nodes, "onnxbit_constant_subgraph", inputs=[], outputs=typed_outputs,
        initializer=[constant_tensor_proto(c) for c in constants.values()])
    model = onnx.helper.make_model(onnx_graph, opset_imports=opsets)
    model.ir_version = _IR_VERSION
    return model


def _typed_outputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph outputs need an element type; shape inference supplies it."""
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    typed = []
    for output in model.graph.output:
        vi = known.get(output.name)
        if vi is None or not vi.type.tensor_type.elem_type:
            raise NotConstantError(f"the element type of {output.name!r} cannot be inferred "
                                   "(onnx shape inference rejects the nodes computing it)")
        typed.append(vi)
    return typed
