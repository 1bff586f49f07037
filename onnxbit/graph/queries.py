"""Graph queries every pass, fold and report is written with: walking
subgraphs, producers and consumers, and what constant a tensor holds.

Two levels: onnx-graphsurgeon graphs (what the passes edit) and ONNX protos
(what inspect, model checks and file handling read without importing).

Constant resolution sees through the value-preserving ops exporters put
between a weight and its MatMul: Constant nodes, Identity, float-to-float
Cast, Transpose, Reshape, Flatten, Squeeze and Unsqueeze. The result carries a
key naming the source and the ops applied, so a weight read twice through the
same ops is recognized as one weight.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxbit.graph.gs_adapter import read_constant
from onnxbit.graph.ternary import TernaryProof

# Ops a constant may be read through without changing its values.
VALUE_PRESERVING_OPS = ("Identity", "Cast", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze")


class NotConstant(Exception):
    """The tensor is not a compile-time constant; the message says why."""


# -- onnx-graphsurgeon graphs --------------------------------------------------

def subgraphs_of(node: gs.Node) -> list[gs.Graph]:
    """The If/Loop/Scan bodies a node holds."""
    found = []
    for value in node.attrs.values():
        if isinstance(value, gs.Graph):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, gs.Graph))
    return found


def iter_graphs(graph: gs.Graph) -> Iterator[gs.Graph]:
    """The graph, then every subgraph inside it, depth first, in node order."""
    yield graph
    for node in graph.nodes:
        for sub in subgraphs_of(node):
            yield from iter_graphs(sub)


def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node writing ``tensor``, or None for graph inputs and constants."""
    return tensor.inputs[0] if tensor.inputs else None


def consumers(tensor: gs.Tensor) -> list[gs.Node]:
    return list(tensor.outputs)


def constant_node_value(node: gs.Node) -> np.ndarray:
    """The value of a Constant node (dense forms only)."""
    attrs = node.attrs
    if "value" in attrs:
        return np.asarray(read_constant(attrs["value"]))
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(list(attrs[key]) if key.endswith("s") else attrs[key], dtype=dtype)
    raise NotConstant(f"Constant node '{node.name}' holds {sorted(attrs)} (only dense values are read)")


def resolve_constant(tensor: gs.Tensor, ops: tuple[str, ...] = VALUE_PRESERVING_OPS,
                     float_casts_only: bool = True) -> tuple[np.ndarray, str]:
    """The value of `tensor` when it is computed from constants only by
    `ops`, plus a key naming the source and the ops applied.
    float_casts_only: a Cast counts only between float types (a weight read
    as integers is not a float weight); False follows any Cast."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(read_constant(tensor)), tensor.name
    node = producer(tensor)
    if node is None:
        raise NotConstant(f"'{tensor.name}' is a graph input, not a constant")
    op = node.op
    if op == "Constant":
        return constant_node_value(node), f"{node.name or tensor.name}"
    if op not in ops:
        raise NotConstant(f"'{tensor.name}' comes from {op} node '{node.name}', not from a constant through "
                          f"{'/'.join(ops)}")
    data, key = resolve_constant(node.inputs[0], ops, float_casts_only)
    if op == "Identity":
        return data, key
    if op == "Cast":
        to = onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"])
        floats = np.issubdtype(to, np.floating) and np.issubdtype(data.dtype, np.floating)
        if float_casts_only and not floats:
            raise NotConstant(f"Cast node '{node.name}' converts {data.dtype} to {to}, not between float types")
        return data.astype(to), f"{key}|cast:{np.dtype(to).name}"
    if op == "Transpose":
        perm = node.attrs.get("perm")
        perm = list(perm) if perm is not None else list(reversed(range(data.ndim)))
        return np.transpose(data, perm), f"{key}|transpose:{perm}"
    if op == "Flatten":
        axis = int(node.attrs.get("axis", 1)) % max(data.ndim, 1) if data.ndim else 0
        dims = [int(np.prod(data.shape[:axis], dtype=np.int64)), int(np.prod(data.shape[axis:], dtype=np.int64))]
        return data.reshape(dims), f"{key}|reshape:{dims}"
    # Reshape / Squeeze / Unsqueeze: the shape or axes come from an input or an attribute.
    if len(node.inputs) > 1 and node.inputs[1].name:
        operand, _ = resolve_constant(node.inputs[1], ops, float_casts_only)
    elif "axes" in node.attrs:
        operand = np.asarray(node.attrs["axes"])
    else:
        operand = None
    if op == "Reshape":
        dims = [int(d) for d in operand]
        if not node.attrs.get("allowzero", 0):
            dims = [data.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        return data.reshape(dims), f"{key}|reshape:{dims}"
    if op == "Squeeze":
        axes = tuple(int(a) for a in operand) if operand is not None else None
        return np.squeeze(data, axis=axes), f"{key}|squeeze:{axes}"
    axes = sorted(int(a) % (data.ndim + len(operand)) for a in operand)
    return np.expand_dims(data, axis=tuple(axes)), f"{key}|unsqueeze:{axes}"


def is_constant(tensor: gs.Tensor) -> bool:
    try:
        resolve_constant(tensor)
    except NotConstant:
        return False
    return True


class RuntimeDependence:
    """Whether a tensor's value depends on anything but constants (a graph
    input, a subgraph's outer-scope variable, a random or control-flow op).
    Memoized over one pass, so the cost is linear in the graph."""

    def __init__(self) -> None:
        self._memo: dict[int, bool] = {}

    def __call__(self, tensor: gs.Tensor) -> bool:
        stack = [tensor]
        while stack:
            t = stack[-1]
            if id(t) in self._memo:
                stack.pop()
                continue
            if isinstance(t, gs.Constant):
                self._memo[id(t)] = False
                stack.pop()
                continue
            if not t.inputs:
                self._memo[id(t)] = bool(t.name)  # an empty name is an omitted optional input
                stack.pop()
                continue
            node = t.inputs[0]
            if node.op == "Constant":
                self._memo[id(t)] = False
                stack.pop()
                continue
            if not node.inputs or subgraphs_of(node):
                self._memo[id(t)] = True  # RandomNormal-like sources and If/Loop/Scan outputs
                stack.pop()
                continue
            pending = [i for i in node.inputs if id(i) not in self._memo]
            if pending:
                stack.extend(pending)
                continue
            self._memo[id(t)] = any(self._memo[id(i)] for i in node.inputs)
            stack.pop()
        return self._memo[id(tensor)]


# -- ONNX protos -------------------------------------------------------------------

def proto_subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def proto_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph, then every subgraph inside it, depth first, in node order."""
    yield graph
    for node in graph.node:
        for sub in proto_subgraphs(node):
            yield from proto_graphs(sub)


def proto_tensors(graph: onnx.GraphProto, main_initializers: bool = True) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph holds: initializers and tensor attributes (Constant
    values), in subgraphs too. main_initializers=False leaves out the
    top graph's initializers."""
    for g in proto_graphs(graph):
        if main_initializers or g is not graph:
            yield from g.initializer
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors


def ternary_proofs(graph: gs.Graph) -> dict[str, "TernaryProof"]:
    """Node name -> the ternary proof its weight carries, for every
    MatMul/Gemm (subgraphs included) whose weight input has one. A view for
    reports and tests: the proof itself lives on the weight constant."""
    from onnxbit.graph.gs_adapter import proof_of

    found = {}
    for g in iter_graphs(graph):
        for node in g.nodes:
            if node.op in ("MatMul", "Gemm") and len(node.inputs) >= 2:
                proof = proof_of(node.inputs[1])
                if proof is not None:
                    found[node.name] = proof
    return found
