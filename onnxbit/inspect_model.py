"""What a model holds: its weight layers (float, TernaryMatMul, MatMulNBits,
DequantizeLinear + MatMul), their formats, bits per weight and sizes, and
which ops need the onnxbit library at run time."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import onnx

from onnxbit.model_size import tensor_nbytes
from onnxbit.report import human_bytes

LIBRARY_DOMAIN = "com.onnxbit"
_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")


@dataclass
class LayerInfo:
    node: str
    op_type: str
    precision: str
    storage: str
    k: int | None
    n: int | None
    bytes: int
    bits_per_weight: float | None
    details: dict[str, Any] = field(default_factory=dict)


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
        for column, justify in (("layer", "left"), ("op", "left"), ("precision", "left"), ("storage", "left"),
                                ("K x N", "right"), ("bits/w", "right"), ("size", "right")):
            table.add_column(column, justify=justify, overflow="fold")
        for layer in self.layers:
            shape = f"{layer.k} x {layer.n}" if layer.k is not None else ""
            bpw = "" if layer.bits_per_weight is None else f"{layer.bits_per_weight:.2f}"
            table.add_row(layer.node, layer.op_type, layer.precision, layer.storage, shape, bpw,
                          human_bytes(layer.bytes))
        console.print(table)
        opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in sorted(self.opsets.items()))
        console.print(f"IR {self.ir_version}; opsets: {opsets}; {self.node_count} nodes; "
                      f"initializers {human_bytes(self.initializer_bytes)}", soft_wrap=True)
        if self.library_ops:
            console.print(f"needs the onnxbit library (onnxbit.runtime.InferenceSession): "
                          f"{', '.join(self.library_ops)}", soft_wrap=True)
        else:
            console.print("runs on stock onnxruntime (no onnxbit ops)", soft_wrap=True)
        if self.custom_ops:
            console.print(f"other custom ops: {', '.join(self.custom_ops)}", soft_wrap=True)


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graphs(sub)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute
            if a.type not in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)}


def inspect_model(model_or_path: onnx.ModelProto | str | os.PathLike) -> ModelSummary:
    if isinstance(model_or_path, onnx.ModelProto):
        model, source = model_or_path, "<model>"
    else:
        path = Path(model_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
        # Sizes come from the external data entries; the tensors are not read.
        model, source = onnx.load(str(path), load_external_data=False), str(path)
    initializers: dict[str, onnx.TensorProto] = {}
    producers: dict[str, onnx.NodeProto] = {}
    nodes: list[onnx.NodeProto] = []
    for graph in _graphs(model.graph):
        initializers.update({t.name: t for t in graph.initializer})
        for node in graph.node:
            nodes.append(node)
            for out in node.output:
                producers[out] = node
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value":
                        initializers[node.output[0]] = a.t
    layers = [info for node in nodes if (info := _layer(node, initializers, producers)) is not None]
    library_ops = sorted({n.op_type for n in nodes if n.domain == LIBRARY_DOMAIN})
    custom_ops = sorted({f"{n.domain}::{n.op_type}" for n in nodes
                         if n.domain not in _STANDARD_DOMAINS and n.domain != LIBRARY_DOMAIN})
    return ModelSummary(source=source, ir_version=model.ir_version,
                        opsets={imp.domain: imp.version for imp in model.opset_import}, layers=layers,
                        node_count=len(nodes),
                        initializer_bytes=sum(tensor_nbytes(t) for g in _graphs(model.graph) for t in g.initializer),
                        library_ops=library_ops, custom_ops=custom_ops)


def _sum_bytes(names, initializers) -> int:
    return sum(tensor_nbytes(initializers[n]) for n in names if n in initializers)


def _layer(node: onnx.NodeProto, initializers, producers) -> LayerInfo | None:
    attrs = _attrs(node)
    if node.domain == LIBRARY_DOMAIN and node.op_type == "TernaryMatMul":
        k, n = int(attrs["K"]), int(attrs["N"])
        size = _sum_bytes(node.input[1:3], initializers)
        fmt = attrs.get("format", b"2bit")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        details = {"group_size": int(attrs.get("group_size", 0)), "act_quant": int(attrs.get("act_quant", 0))}
        return LayerInfo(node.name, node.op_type, "ternary", f"TernaryMatMul/{fmt}", k, n, size, 8 * size / (k * n),
                         details)
    if node.domain == "com.microsoft" and node.op_type == "MatMulNBits":
        k, n, bits = int(attrs["K"]), int(attrs["N"]), int(attrs["bits"])
        size = _sum_bytes([i for i in node.input[1:4] if i], initializers)
        return LayerInfo(node.name, node.op_type, f"int{bits}", f"MatMulNBits/{bits}bit", k, n, size,
                         8 * size / (k * n), {"block_size": int(attrs["block_size"]),
                                              "accuracy_level": int(attrs.get("accuracy_level", 0))})
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
        return None
    weight_name = node.input[1]
    if weight_name in producers and producers[weight_name].op_type == "DequantizeLinear":
        dq = producers[weight_name]
        q = initializers.get(dq.input[0])
        if q is None:
            return None
        type_name = onnx.TensorProto.DataType.Name(q.data_type)
        bits = {"INT2": 2, "UINT2": 2, "INT4": 4, "UINT4": 4, "INT8": 8, "UINT8": 8}.get(type_name)
        size = _sum_bytes([i for i in dq.input if i], initializers)
        k, n = (list(q.dims) + [None, None])[:2] if len(q.dims) == 2 else (None, None)
        bpw = 8 * size / (k * n) if k and n else None
        return LayerInfo(node.name, node.op_type, f"int{bits}" if bits else type_name.lower(),
                         f"DequantizeLinear/{type_name}", k, n, size, bpw, {})
    w = initializers.get(weight_name)
    if w is None or len(w.dims) != 2:
        return None
    k, n = int(w.dims[0]), int(w.dims[1])
    if node.op_type == "Gemm" and _attrs(node).get("transB", 0):
        k, n = n, k
    type_name = onnx.TensorProto.DataType.Name(w.data_type).lower()
    size = tensor_nbytes(w)
    return LayerInfo(node.name, node.op_type, type_name, "initializer", k, n, size, 8 * size / (k * n), {})
