"""Sizes of tensor data in ONNX protos, computed from dims and types (reading
raw_data from protobuf would copy it) or from external-data lengths."""

from __future__ import annotations

import onnx


def tensor_nbytes(t: onnx.TensorProto) -> int:
    """Bytes of a tensor's data, from its dims and type (reading raw_data
    would copy it) or its external-data length."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        for entry in t.external_data:
            if entry.key == "length":
                return int(entry.value)
    count = 1
    for d in t.dims:
        count *= d
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (count + 1) // 2
    if t.data_type in (onnx.TensorProto.INT2, onnx.TensorProto.UINT2):
        return (count + 3) // 4
    if t.data_type == onnx.TensorProto.STRING:
        return sum(len(s) for s in t.string_data)
    return count * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def model_nbytes(model: onnx.ModelProto) -> int:
    """Bytes of tensor data the model holds (initializers and Constant
    tensors, subgraphs included)."""
    total = 0
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        total += sum(tensor_nbytes(t) for t in graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)
                elif attr.type == onnx.AttributeProto.TENSOR:
                    total += tensor_nbytes(attr.t)
    return total
