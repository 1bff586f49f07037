"""What a model holds: its weight layers (float, TernaryMatMul, MatMulNBits,
DequantizeLinear + MatMul, weights computed in the graph by QAT chains, and
the weight-carrying nodes onnxbit does not convert: Conv, recurrent layers,
embedding Gathers), activation x activation MatMuls, formats, bits per weight
and sizes, and which ops need the onnxbit library at run time.

Models are validated first (onnxbit.model_check): sizes and bits per weight
are computed from tensor sizes that were checked against the data."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from onnxbit.graph.queries import proto_graphs
from onnxbit.model_check import check_model, element_count, expected_nbytes, read_model
from onnxbit.report import human_bytes
from onnxbit.targets import LayerInfo, recognizers
from onnxbit.passes.find_weights import ATTENTION_CONTRIB_OPS, QUANTIZED_REASON, quantized_weight_inputs
from onnxbit.targets.base import bits_per_weight, int_attribute

LIBRARY_DOMAIN = "com.onnxbit"
_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
NOT_CONVERTED = "not converted by onnxbit yet"
FLOAT_CONV = "float weights, not converted (onnxbit quantize converts Conv/ConvTranspose)"
NO_LOW_BIT_OP = "kept float by onnxbit (no low-bit op for this node)"
ACTIVATIONS = "activation x activation"
# Ops that keep a tensor's shape (elementwise against scalars or same-shape
# tensors, as in QAT weight chains): a weight's K x N is followed through them.
_SHAPE_KEEPING = {"Identity", "Cast", "Div", "Mul", "Add", "Sub", "Clip", "Round", "Abs", "Neg", "Sign", "Relu",
                  "Sqrt", "Reciprocal", "Floor", "Ceil", "Where", "Min", "Max"}
_NODE_WEIGHT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2),
                       "Gather": (0,)}


@dataclass
class ModelSummary:
    source: str
    ir_version: int
    opsets: dict[str, int]
    layers: list[LayerInfo]
    node_count: int
    initializer_bytes: int
    library_ops: list[str]  # com.onnxbit ops the model uses
    custom_ops: list[str]  # other non-standard domain::op pairs
    constant_bytes: int = 0  # tensors held by Constant nodes

    @property
    def needs_onnxbit_library(self) -> bool:
        return bool(self.library_ops)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["needs_onnxbit_library"] = self.needs_onnxbit_library
        return out

    def render(self, console=None) -> None:
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        table = Table(title=f"{self.source}: weight layers")
        columns = [("layer", "left"), ("op", "left"), ("precision", "left"), ("storage", "left"),
                   ("K x N", "right"), ("bits/w", "right"), ("size", "right")]
        with_notes = any(layer.note for layer in self.layers)
        if with_notes:
            columns.append(("note", "left"))
        for column, justify in columns:
            table.add_column(column, justify=justify, overflow="fold")
        for layer in self.layers:
            if layer.k is not None and layer.n is not None:
                shape = f"{layer.k} x {layer.n}"
            else:
                shape = " x ".join(str(d) for d in layer.details.get("shape", []))
            bpw = "" if layer.bits_per_weight is None else f"{layer.bits_per_weight:.2f}"
            size = human_bytes(layer.bytes) if layer.bytes else ""
            row = [layer.node, layer.op_type, layer.precision, layer.storage, shape, bpw, size]
            table.add_row(*row, *([layer.note] if with_notes else []))
        console.print(table)
        opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in sorted(self.opsets.items()))
        console.print(f"IR {self.ir_version}; opsets: {opsets}; {self.node_count} nodes; "
                      f"initializers {human_bytes(self.initializer_bytes)}; "
                      f"Constant tensors {human_bytes(self.constant_bytes)}", soft_wrap=True)
        if self.library_ops:
            console.print(f"needs the onnxbit library (onnxbit.runtime.InferenceSession): "
                          f"{', '.join(self.library_ops)}", soft_wrap=True)
        else:
            console.print("runs on stock onnxruntime (no onnxbit ops)", soft_wrap=True)
        if self.custom_ops:
            console.print(f"other custom ops: {', '.join(self.custom_ops)}", soft_wrap=True)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute
            if a.type not in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)}


def _data_bytes(t: onnx.TensorProto) -> int:
    """Bytes of a (validated) tensor's data, from its dims and type."""
    size = expected_nbytes(t)
    if size is None:  # strings
        return sum(len(s) for s in t.string_data)
    return size


def _type_name(t: onnx.TensorProto) -> str:
    try:
        return onnx.TensorProto.DataType.Name(t.data_type)
    except ValueError:
        return f"type{t.data_type}"


@dataclass
class _Weight:
    """A constant tensor in the model and where it is stored."""

    tensor: onnx.TensorProto
    storage: str  # "initializer" or "Constant"
    name: str  # the value's name (a Constant's output)


class _Model:
    """Lookup tables over every graph of a model."""

    def __init__(self, model: onnx.ModelProto):
        self.tensors: dict[str, _Weight] = {}
        self.producers: dict[str, onnx.NodeProto] = {}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.initializer_bytes = 0
        self.constant_total_bytes = 0
        # name -> names of the constant tensors it is computed from (None: an activation)
        self.sources: dict[str, frozenset[str] | None] = {}
        for graph in proto_graphs(model.graph):
            for t in graph.initializer:
                self.tensors[t.name] = _Weight(t, "initializer", t.name)
                self.sources[t.name] = frozenset([t.name])
                self.initializer_bytes += _data_bytes(t)
            for v in graph.input:
                self.sources.setdefault(v.name, None)
        for graph in proto_graphs(model.graph):
            for node in graph.node:
                self.nodes.append(node)
                for out in node.output:
                    self.producers[out] = node
                for name in node.input:
                    self.readers.setdefault(name, []).append(node)
                self._constant_sources(node)

    def _constant_sources(self, node: onnx.NodeProto) -> None:
        outputs = [o for o in node.output if o]
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and outputs:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                self.tensors[outputs[0]] = _Weight(value, "Constant", outputs[0])
                self.constant_total_bytes += _data_bytes(value)
                self.sources[outputs[0]] = frozenset([outputs[0]])
            else:
                self.sources[outputs[0]] = frozenset()
            return
        inputs = [i for i in node.input if i]
        has_subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
        derived: frozenset[str] | None = frozenset()
        if not inputs or has_subgraph:
            derived = None  # random generators, control flow: not treated as constant
        else:
            for name in inputs:
                src = self.sources.get(name)
                if src is None:
                    derived = None
                    break
                derived = derived | src
        for out in outputs:
            self.sources[out] = derived

    def constant(self, name: str) -> _Weight | None:
        return self.tensors.get(name)

    # The ModelIndex protocol the targets' recognize() functions read.
    def constant_bytes(self, names) -> int:
        return sum(_data_bytes(w.tensor) for n in names if (w := self.constant(n)) is not None)

    def constant_tensor(self, name: str) -> onnx.TensorProto | None:
        weight = self.constant(name)
        return weight.tensor if weight is not None else None

    def producer(self, name: str) -> onnx.NodeProto | None:
        return self.producers.get(name)

    def consumers(self, name: str) -> list[onnx.NodeProto]:
        return self.readers.get(name, [])

    def computed_from(self, name: str) -> frozenset[str] | None:
        """Constant tensors `name` is computed from, None when it depends on an
        activation (graph input)."""
        if not name:
            return None
        return self.sources.get(name)

    def traced_dims(self, name: str) -> list[int] | None:
        """Dims of a weight computed by shape-keeping ops and Transposes from one
        constant tensor (QAT weight chains), or None."""
        perm_dims: list[int] | None = None
        steps: list[list[int] | None] = []  # Transpose perms, outermost first
        for _ in range(64):
            weight = self.constant(name)
            if weight is not None:
                perm_dims = [int(d) for d in weight.tensor.dims]
                break
            node = self.producers.get(name)
            if node is None:
                return None
            if node.op_type == "Transpose":
                steps.append(_attrs(node).get("perm"))
            elif node.op_type not in _SHAPE_KEEPING:
                return None
            name = node.input[0] if node.input else ""
        if perm_dims is None:
            return None
        for perm in reversed(steps):
            perm = list(perm) if perm else list(range(len(perm_dims)))[::-1]
            if sorted(perm) != list(range(len(perm_dims))):
                return None
            perm_dims = [perm_dims[p] for p in perm]
        return perm_dims


def inspect_model(model_or_path: onnx.ModelProto | str | os.PathLike, *, base_dir: str | os.PathLike | None = None,
                  check: bool = True) -> ModelSummary:
    """Summarize a model after validating it (raises onnxbit.errors.ModelError
    naming the file and the node or tensor at fault). For a ModelProto,
    external data is looked for in `base_dir` (None: files not checked)."""
    if isinstance(model_or_path, onnx.ModelProto):
        model, source = model_or_path, "<model>"
        if check:
            check_model(model, base_dir, source=source)
    else:
        path = Path(model_or_path)
        # Sizes come from the checked dims and external-data entries; the external data is not read.
        model, source = read_model(path, load_external_data=False), str(path)
        if check:
            check_model(model, path.parent if base_dir is None else base_dir, source=source)
    index = _Model(model)
    layers = [info for node in index.nodes if (info := _layer(node, index)) is not None]
    library_ops = sorted({n.op_type for n in index.nodes if n.domain == LIBRARY_DOMAIN})
    custom_ops = sorted({f"{n.domain}::{n.op_type}" for n in index.nodes
                         if n.domain not in _STANDARD_DOMAINS and n.domain != LIBRARY_DOMAIN})
    return ModelSummary(source=source, ir_version=model.ir_version,
                        opsets={imp.domain: imp.version for imp in model.opset_import}, layers=layers,
                        node_count=len(index.nodes), initializer_bytes=index.initializer_bytes,
                        library_ops=library_ops, custom_ops=custom_ops, constant_bytes=index.constant_total_bytes)


def _layer(node: onnx.NodeProto, index: _Model) -> LayerInfo | None:
    attrs = _attrs(node)
    name = node.name or (node.output[0] if node.output else node.op_type)
    for recognize in recognizers():  # layers a target emitted, read back by the target's own op builders
        info = recognize(node, attrs, index)
        if info is not None:
            info.node = name
            return info
    if node.domain == "com.microsoft" and node.op_type in ATTENTION_CONTRIB_OPS:
        return _other_layer(node, name, index, tuple(range(1, len(node.input))))
    quantized = quantized_weight_inputs(node.domain, node.op_type)
    if quantized:
        return _other_layer(node, name, index, quantized)
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in ("MatMul", "Gemm") and len(node.input) >= 2:
        return _matmul_layer(node, name, attrs, index)
    if node.op_type in _NODE_WEIGHT_INPUTS:
        return _other_layer(node, name, index)
    return None


def _dequantized(name: str, index: _Model) -> tuple[onnx.TensorProto, onnx.NodeProto] | None:
    producer = index.producers.get(name)
    if producer is None or producer.op_type != "DequantizeLinear" or not producer.input:
        return None
    q = index.constant(producer.input[0])
    return (q.tensor, producer) if q is not None else None


def _matmul_layer(node, name: str, attrs: dict[str, Any], index: _Model) -> LayerInfo | None:
    weight_name = node.input[1]
    weight = index.constant(weight_name)
    if weight is not None:
        w = weight.tensor
        k = n = None
        if len(w.dims) == 2:
            k, n = int(w.dims[0]), int(w.dims[1])
            if node.op_type == "Gemm" and attrs.get("transB", 0):
                k, n = n, k
        size = _data_bytes(w)
        note = "" if len(w.dims) == 2 else f"{len(w.dims)}-D weight; onnxbit converts 2-D weights"
        return LayerInfo(name, node.op_type, _type_name(w).lower(), weight.storage, k, n, size,
                         bits_per_weight(size, element_count(w)), {"shape": [int(d) for d in w.dims]}, note)
    sources = index.computed_from(weight_name)
    if sources:
        return _computed_weight_layer(node, name, attrs, weight_name, sources, index)
    first = index.computed_from(node.input[0])
    if first:
        return _computed_weight_layer(node, name, attrs, node.input[0], first, index,
                                      note=f"the constant is the first input; {NOT_CONVERTED}")
    if sources is not None or first is not None:
        return None  # a constant computed from attributes alone: no stored weight
    return LayerInfo(name, node.op_type, ACTIVATIONS, "", None, None, 0, None, {},
                     "both inputs are activations (no constant weight): nothing to convert")


def _computed_weight_layer(node, name, attrs, value_name, sources, index: _Model, note: str = "") -> LayerInfo:
    tensors = [index.tensors[s] for s in sorted(sources)]
    main = max(tensors, key=lambda w: _data_bytes(w.tensor))
    size = sum(_data_bytes(w.tensor) for w in tensors)
    dims = index.traced_dims(value_name)
    k = n = None
    count = None
    if dims is not None:
        count = 1
        for d in dims:
            count *= d
        if len(dims) == 2 and value_name == node.input[1]:
            k, n = dims
            if node.op_type == "Gemm" and attrs.get("transB", 0):
                k, n = n, k
    storage = f"{main.storage}, computed"
    others = f" and {len(tensors) - 1} other constant(s)" if len(tensors) > 1 else ""
    note = note or f"weight computed in the graph from {main.storage} {main.name!r}{others}"
    details = {"computed_from": sorted(sources), "source_shape": [int(d) for d in main.tensor.dims]}
    if dims is not None:
        details["shape"] = dims
    return LayerInfo(name, node.op_type, _type_name(main.tensor).lower(), storage, k, n, size, bits_per_weight(size, count),
                     details, note)


def _other_layer(node, name: str, index: _Model, weight_inputs: tuple[int, ...] | None = None) -> LayerInfo | None:
    """Float Conv/ConvTranspose, LSTM/GRU/RNN, embedding Gathers and the integer
    ops of already quantized models, shown so that every weight-carrying node
    is listed."""
    weights: list[tuple[onnx.TensorProto, str]] = []
    for i in weight_inputs if weight_inputs is not None else _NODE_WEIGHT_INPUTS[node.op_type]:
        if i >= len(node.input) or not node.input[i]:
            continue
        dq = _dequantized(node.input[i], index)
        if dq is not None:
            weights.append((dq[0], f"DequantizeLinear/{_type_name(dq[0])}"))
            continue
        weight = index.constant(node.input[i])
        if weight is not None:
            weights.append((weight.tensor, weight.storage))
            continue
        sources = index.computed_from(node.input[i])
        if sources:
            main = max((index.tensors[s] for s in sources), key=lambda w: element_count(w.tensor))
            weights.append((main.tensor, f"{main.storage}, computed"))
    if not weights:
        if node.op_type in ("Conv", "ConvTranspose"):
            return LayerInfo(name, node.op_type, ACTIVATIONS, "", None, None, 0, None, {},
                             "the weight is computed at run time (no constant): nothing to convert")
        return None
    main, storage = weights[0]
    if node.op_type == "Gather" and len(main.dims) < 2:
        return None  # indexing a small constant (shapes), not an embedding table
    if weight_inputs is not None:
        weights = [(t, s) for t, s in weights if len(t.dims) >= 2]  # projections, not masks or scalars
        if not weights:
            return None
        main, storage = weights[0]
    size = sum(_data_bytes(t) for t, _ in weights)
    count = sum(element_count(t) for t, _ in weights)
    if node.op_type in ("Conv", "ConvTranspose"):
        note = FLOAT_CONV
    elif quantized_weight_inputs(node.domain, node.op_type):
        note = QUANTIZED_REASON
    else:
        note = f"{'embedding table' if node.op_type == 'Gather' else 'weights'} {NO_LOW_BIT_OP}"
    return LayerInfo(name, node.op_type, _type_name(main).lower(), storage, None, None, size, bits_per_weight(size, count),
                     {"shape": [int(d) for d in main.dims]}, note)
