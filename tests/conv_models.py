"""Small float convolutional models built with onnx.helper, for the Conv
conversion tests: every Conv layout the layer kind handles."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# name: (op, weight shape, attributes); applied in order to a [1, 6, 10, 10] input.
LAYERS = [
    ("conv3x3", "Conv", (12, 6, 3, 3), {"pads": [1, 1, 1, 1]}),
    ("depthwise", "Conv", (12, 1, 3, 3), {"group": 12, "pads": [1, 0, 1, 2], "strides": [2, 2]}),
    ("grouped", "Conv", (15, 4, 1, 3), {"group": 3, "auto_pad": "SAME_UPPER"}),
    ("pointwise", "Conv", (24, 15, 1, 1), {}),
    ("deconv", "ConvTranspose", (24, 4, 2, 2), {"group": 2, "strides": [2, 2]}),
    ("deconv_plain", "ConvTranspose", (8, 6, 3, 3), {"pads": [1, 1, 1, 1]}),
]
INPUT_SHAPE = (2, 6, 10, 10)


def conv_chain_model(rng: np.random.Generator, weights: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The LAYERS chain with Relu between layers; `weights` replaces weights by layer name."""
    nodes, inits = [], []
    current = "X"
    for name, op, shape, attrs in LAYERS:
        w = (rng.standard_normal(shape) * 0.3).astype(np.float32)
        if weights and name in weights:
            w = weights[name]
        channels = shape[0] if op == "Conv" else shape[1] * attrs.get("group", 1)
        bias = (rng.standard_normal(channels) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"{name}_W"), numpy_helper.from_array(bias, f"{name}_B")]
        nodes.append(helper.make_node(op, [current, f"{name}_W", f"{name}_B"], [f"{name}_out"], name=name, **attrs))
        nodes.append(helper.make_node("Relu", [f"{name}_out"], [f"{name}_relu"], name=f"{name}_relu"))
        current = f"{name}_relu"
    nodes.append(helper.make_node("Identity", [current], ["Y"]))
    graph = helper.make_graph(nodes, "conv_chain", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                                   ["n", 6, 10, 10])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 6, 10, 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
