"""Small synthetic ONNX models for the converter tests, built with onnx.helper."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def make_model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def model_of(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    """Like make_model, without the checker: for models that are invalid on purpose."""
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def value(name, shape, dtype=FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def mlp(rng, k=64, hidden=48, n=32, opset=17) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x -> MatMul(W1) -> Relu -> Gemm(W2^T, C, transB=1, alpha=0.5) -> y."""
    w1 = rng.standard_normal((k, hidden)).astype(np.float32)
    w2t = rng.standard_normal((n, hidden)).astype(np.float32)
    c = rng.standard_normal(n).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["hr"], name="relu"),
             helper.make_node("Gemm", ["hr", "W2T", "C"], ["y"], name="fc2", transB=1, alpha=0.5)]
    model = make_model(nodes, [value("x", ["batch", k])], [value("y", ["batch", n])],
                       [init("W1", w1), init("W2T", w2t), init("C", c)], opset=opset)
    return model, {"W1": w1, "W2T": w2t, "C": c}


def ternary_matrix(rng, k, n, scale=0.25, per_channel=False) -> np.ndarray:
    codes = rng.integers(-1, 2, size=(k, n)).astype(np.float32)
    s = rng.uniform(0.1, 1.0, size=n).astype(np.float32) if per_channel else np.float32(scale)
    return (codes * s).astype(np.float32)
