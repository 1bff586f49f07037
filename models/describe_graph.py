"""Describe the fake-quant / packed-weight subgraphs around every MatMul and Gemm of an ONNX file.

For each MatMul/Gemm it reports three pieces, in graph (topological) order:
  weight chain      the input-independent subgraph that computes the weight operand
                    (absmean ternary fake-quant, or the uint8 unpack chain), down to its
                    initializers and Constant nodes;
  activation chain  the nodes between the tensor that is quantised (the input of the nearest
                    Abs ancestor) and the MatMul's activation operand, i.e. the per-token
                    absmax int8 fake-quant; and how many MatMul/Gemm nodes read its output;
  after             the elementwise Mul/Div/Add nodes that follow the MatMul output while it
                    has a single consumer (weight-scale / activation-scale rescaling, bias).
Identical patterns are grouped and counted; the first instance of each is printed in full
with attribute values, constant values and whether a constant is a Constant node or an
initializer.

Usage:  python models/describe_graph.py models/fixtures/bitnet_online_dynamo.onnx [more.onnx ...]
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

LINEAR_OPS = {"MatMul", "Gemm"}
RESCALE_OPS = {"Mul", "Div", "Add", "Cast"}
# Ops an exported per-token absmax fake-quant is made of; the walk back from a MatMul only
# passes through these, so attention MatMuls are not mistaken for quantised linears.
ACTIVATION_QUANT_OPS = {"Abs", "ReduceMax", "Clip", "Max", "Min", "Reciprocal", "Mul", "Div", "Round", "Cast", "Identity"}
MAX_SHOWN_ELEMENTS = 4


class GraphIndex:
    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.nodes = list(graph.node)
        self.position = {id(node): index for index, node in enumerate(self.nodes)}
        self.producer = {output: node for node in self.nodes for output in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.initializers = {init.name: init for init in graph.initializer}
        self.graph_inputs = {value.name for value in graph.input}
        self._input_dependent: dict[str, bool] = {}

    def depends_on_graph_input(self, name: str) -> bool:
        """True when the tensor changes with the model inputs (is not constant-foldable)."""
        stack = [name]
        pending = []
        while stack:
            current = stack.pop()
            if current in self._input_dependent:
                continue
            if current in self.graph_inputs:
                self._input_dependent[current] = True
                continue
            node = self.producer.get(current)
            if node is None:  # initializer or empty optional input
                self._input_dependent[current] = False
                continue
            unresolved = [i for i in node.input if i and i not in self._input_dependent]
            if unresolved:
                stack.append(current)
                stack.extend(unresolved)
                pending.append(current)
                if len(pending) > 10 * len(self.nodes) + 10:
                    raise RuntimeError("graph has a cycle")
                continue
            self._input_dependent[current] = any(self._input_dependent[i] for i in node.input if i)
        return self._input_dependent[name]

    def ancestors(self, name: str, stop: set[str] | None = None) -> list[onnx.NodeProto]:
        """Producer nodes of `name` and their producers, not walking past tensors in `stop`."""
        seen: dict[int, onnx.NodeProto] = {}
        stack = [name]
        while stack:
            current = stack.pop()
            if stop and current in stop:
                continue
            node = self.producer.get(current)
            if node is None or id(node) in seen:
                continue
            seen[id(node)] = node
            stack.extend(i for i in node.input if i)
        return sorted(seen.values(), key=lambda n: self.position[id(n)])

    def describe_constant(self, name: str) -> str | None:
        """Short text for a constant operand, or None when the tensor is computed."""
        if name in self.initializers:
            array = numpy_helper.to_array(self.initializers[name])
            return f"init[{_array_text(array)}]"
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attribute in node.attribute:
                value = onnx.helper.get_attribute_value(attribute)
                if isinstance(value, onnx.TensorProto):
                    return f"Constant[{_array_text(numpy_helper.to_array(value))}]"
                return f"Constant[{attribute.name}={value}]"
        return None


def _array_text(array: np.ndarray) -> str:
    dtype = array.dtype.name
    if array.size <= MAX_SHOWN_ELEMENTS:
        return f"{dtype} {np.array2string(array, precision=6, separator=',')}"
    text = f"{dtype} shape={list(array.shape)}"
    if array.dtype.kind == "f":
        # An exporter may constant-fold the weight fake-quant: the initializer then holds
        # W_q / s, i.e. only the values {-a, 0, a}.
        distinct = np.unique(array)
        if distinct.size <= 3:
            text += " ternary-valued " + np.array2string(distinct, precision=8, separator=",")
    return text


def _attributes_text(node: onnx.NodeProto) -> str:
    parts = []
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if isinstance(value, onnx.TensorProto):
            continue
        if isinstance(value, bytes):
            value = value.decode()
        parts.append(f"{attribute.name}={value}")
    return ", ".join(parts)


def _node_text(index: GraphIndex, node: onnx.NodeProto, chain_outputs: set[str], source: str | None) -> str:
    operands = []
    for name in node.input:
        if not name:
            operands.append("<none>")
        elif name == source:
            operands.append("x")
        elif name in index.graph_inputs:
            operands.append(f"input:{name}")
        elif name in chain_outputs and name in index.producer:
            operands.append(f"%{index.producer[name].op_type}")
        else:
            constant = index.describe_constant(name)
            if constant is not None:
                operands.append(constant)
            elif name in index.initializers or name in index.graph_inputs:
                operands.append(name)
            else:
                operands.append(_computed_operand_text(index, name))
    attributes = _attributes_text(node)
    return f"{node.op_type}({', '.join(operands)}){' {' + attributes + '}' if attributes else ''}"


def _computed_operand_text(index: GraphIndex, name: str) -> str:
    """One level of provenance for an operand computed outside the chain, e.g. <Mul(init[..], <Div>)>."""
    producer = index.producer.get(name)
    if producer is None:
        return f"<{name}>"
    inner = []
    for operand in producer.input:
        constant = index.describe_constant(operand) if operand else "<none>"
        if constant is not None:
            inner.append(constant)
        else:
            source = index.producer.get(operand)
            inner.append(f"<{source.op_type}>" if source is not None else operand)
    return f"<{producer.op_type}({', '.join(inner)})>"


def weight_chain(index: GraphIndex, weight: str) -> list[onnx.NodeProto]:
    if index.depends_on_graph_input(weight):
        return []
    return [n for n in index.ancestors(weight) if n.op_type != "Constant"]


def activation_chain(index: GraphIndex, activation: str) -> tuple[list[onnx.NodeProto], str | None]:
    """Nodes from the quantised tensor (input of the nearest Abs) to the MatMul operand."""
    frontier = [activation]
    seen = set()
    abs_node = None
    # Breadth-first so the nearest Abs wins; the int8 round trip (Cast, Cast) makes the
    # packed-mode chain eleven levels deep, so allow some slack.
    for _ in range(16):
        following = []
        for name in frontier:
            node = index.producer.get(name)
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type not in ACTIVATION_QUANT_OPS:
                continue
            if node.op_type == "Abs" and index.depends_on_graph_input(node.input[0]):
                abs_node = node
                break
            following.extend(i for i in node.input if i and index.depends_on_graph_input(i))
        if abs_node is not None or not following:
            break
        frontier = following
    if abs_node is None:
        return [], None
    source = abs_node.input[0]
    between = [n for n in index.ancestors(activation, stop={source}) if n.op_type != "Constant"]
    descendants = {source}
    for node in index.nodes:
        if any(i in descendants for i in node.input):
            descendants.update(node.output)
    chain = [n for n in between if any(o in descendants for o in n.output)]
    if not any(n.op_type == "Round" for n in chain) or any(n.op_type not in ACTIVATION_QUANT_OPS for n in chain):
        return [], None
    return chain, source


def rescale_after(index: GraphIndex, output: str) -> list[onnx.NodeProto]:
    following = []
    current = output
    while True:
        users = index.consumers.get(current, [])
        if len(users) != 1 or users[0].op_type not in RESCALE_OPS:
            return following
        following.append(users[0])
        current = users[0].output[0]


def describe(path: Path) -> str:
    model = onnx.load(str(path))
    index = GraphIndex(model)
    op_counts: dict[str, int] = {}
    for node in index.nodes:
        op_counts[node.op_type] = op_counts.get(node.op_type, 0) + 1
    lines = [
        f"== {path.name}: {len(index.nodes)} nodes, opsets "
        + ", ".join(f"{o.domain or 'ai.onnx'}={o.version}" for o in model.opset_import),
        "   op counts: " + ", ".join(f"{op}={count}" for op, count in sorted(op_counts.items())),
    ]
    patterns: "OrderedDict[str, list]" = OrderedDict()
    for node in index.nodes:
        if node.op_type not in LINEAR_OPS:
            continue
        activation, weight = node.input[0], node.input[1]
        if not index.depends_on_graph_input(activation) and index.depends_on_graph_input(weight):
            activation, weight = weight, activation
        weights = weight_chain(index, weight)
        weight_outputs = {o for n in weights for o in n.output}
        weight_desc = [_node_text(index, n, weight_outputs, None) for n in weights]
        if not weights:
            constant = index.describe_constant(weight)
            weight_desc = [f"(operand is {constant or '<computed from inputs>'} directly)"]
        acts, source = activation_chain(index, activation)
        act_outputs = {o for n in acts for o in n.output}
        act_desc = [_node_text(index, n, act_outputs, source) for n in acts]
        readers = [n.name or n.op_type for n in index.consumers.get(activation, []) if n.op_type in LINEAR_OPS]
        after = rescale_after(index, node.output[0])
        after_desc = [_node_text(index, n, {node.output[0]} | {o for a in after for o in a.output}, None) for n in after]
        linear_desc = _node_text(index, node, {activation} | weight_outputs, None)
        signature = "|".join(
            [" ".join(n.op_type for n in weights), " ".join(n.op_type for n in acts), node.op_type,
             " ".join(n.op_type for n in after), str(len(readers))]
        )
        patterns.setdefault(signature, []).append(
            {
                "name": node.name or node.output[0],
                "weights": weight_desc,
                "acts": act_desc,
                "linear": linear_desc,
                "after": after_desc,
                "readers": len(readers),
                "weight_shape": _weight_shape(index, weights, weight),
            }
        )
    for number, (signature, instances) in enumerate(patterns.items(), start=1):
        first = instances[0]
        lines.append(f"-- pattern {number}: {len(instances)} x {signature.split('|')[2]} "
                     f"(first: {first['name']}; weight source {first['weight_shape']})")
        lines.append(f"   weight chain ({len(first['weights'])} nodes):")
        lines.extend(f"      {text}" for text in first["weights"])
        if first["acts"]:
            lines.append(f"   activation chain ({len(first['acts'])} nodes; x = quantised tensor; "
                         f"its output feeds {first['readers']} MatMul/Gemm):")
            lines.extend(f"      {text}" for text in first["acts"])
        else:
            lines.append("   activation chain: none (no Abs-rooted fake-quant before this op)")
        lines.append(f"   linear: {first['linear']}")
        lines.append("   after: " + (" -> ".join(first["after"]) if first["after"] else "(nothing elementwise)"))
        lines.append("   instances: " + ", ".join(i["name"] for i in instances))
    return "\n".join(lines)


def _weight_shape(index: GraphIndex, chain: list[onnx.NodeProto], operand: str) -> str:
    names = [i for n in chain for i in n.input if i in index.initializers] or (
        [operand] if operand in index.initializers else []
    )
    largest = max(names, key=lambda n: int(np.prod(index.initializers[n].dims)), default=None)
    if largest is None:
        return "<computed>"
    init = index.initializers[largest]
    return f"{largest} {onnx.helper.tensor_dtype_to_np_dtype(init.data_type).name}{list(init.dims)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.models:
        if not path.is_file():
            print(f"error: {path} is not a file", file=sys.stderr)
            return 2
        try:
            text = describe(path)
        except DecodeError as error:
            print(f"error: {path} is not an ONNX model: {error}", file=sys.stderr)
            return 2
        print(text)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
