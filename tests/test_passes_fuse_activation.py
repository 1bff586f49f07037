"""fuse-activation: the activation reading only a TernaryConv's output moves into the
TernaryConv's attributes (HardSwish, also as HardSigmoid(1/6, 0.5) * x, Relu, Clip with
constant bounds or opset-6 attributes, LeakyRelu, HardSigmoid), the converted model computes
what the unfused one does, and the cases it must not fuse stay with their reason in the report."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxbit import runtime
from onnxbit.convert import convert
from onnxbit.passes.fuse_activation import FuseActivationPass
from onnxbit.passes.manager import PassManager, default_passes

C = 16


def _conv(rng, name: str, x: str) -> tuple[onnx.NodeProto, onnx.TensorProto]:
    w = (rng.standard_normal((C, C, 3, 3)) * 0.2).astype(np.float32)
    return (helper.make_node("Conv", [x, f"{name}_W"], [f"{name}_y"], name=name, pads=[1, 1, 1, 1]),
            numpy_helper.from_array(w, f"{name}_W"))


def _model(rng, opset: int = 17) -> onnx.ModelProto:
    """A chain of 3x3 convs, each followed by one activation form."""
    nodes, inits, x = [], [numpy_helper.from_array(np.float32(v), n)
                           for n, v in (("lo", 0.0), ("hi", 6.0), ("three", 3.0), ("five", 5.0))], "X"
    forms = [
        ("hard_swish", lambda y, o: [helper.make_node("HardSwish", [y], [o])]),
        ("relu", lambda y, o: [helper.make_node("Relu", [y], [o])]),
        ("clip", lambda y, o: [helper.make_node("Clip", [y, "lo", "hi"], [o])]),
        ("leaky", lambda y, o: [helper.make_node("LeakyRelu", [y], [o], alpha=0.05)]),
        ("hsig_mul", lambda y, o: [helper.make_node("HardSigmoid", [y], [f"{o}_gate"], alpha=1.0 / 6.0, beta=0.5),
                                   helper.make_node("Mul", [y, f"{o}_gate"], [o])]),
        ("hsig", lambda y, o: [helper.make_node("HardSigmoid", [y], [o], alpha=0.25, beta=0.4)]),
        ("silu", lambda y, o: [helper.make_node("Sigmoid", [y], [f"{o}_gate"]),
                               helper.make_node("Mul", [f"{o}_gate", y], [o])]),
        ("sigmoid", lambda y, o: [helper.make_node("Sigmoid", [y], [o])]),
        ("paddle", lambda y, o: [helper.make_node("Add", [y, "three"], [f"{o}_shifted"]),
                                 helper.make_node("Clip", [f"{o}_shifted", "lo", "hi"], [f"{o}_relu6"]),
                                 helper.make_node("Mul", [f"{o}_relu6", y], [f"{o}_product"]),
                                 helper.make_node("Div", [f"{o}_product", "hi"], [o])]),
        # not HardSwish: divided by 5 (kept, with its reason)
        ("paddle_by_5", lambda y, o: [helper.make_node("Add", [y, "three"], [f"{o}_shifted"]),
                                      helper.make_node("Clip", [f"{o}_shifted", "lo", "hi"], [f"{o}_relu6"]),
                                      helper.make_node("Mul", [y, f"{o}_relu6"], [f"{o}_product"]),
                                      helper.make_node("Div", [f"{o}_product", "five"], [o])]),
        # not HardSwish: alpha 0.2 (kept, with its reason)
        ("hsig_other_mul", lambda y, o: [helper.make_node("HardSigmoid", [y], [f"{o}_gate"]),
                                         helper.make_node("Mul", [y, f"{o}_gate"], [o])]),
    ]
    # first a conv whose output is also a graph output: its Relu stays
    conv, w = _conv(rng, "exposed", x)
    nodes += [conv, helper.make_node("Relu", ["exposed_y"], ["exposed_out"])]
    inits.append(w)
    x = "exposed_out"
    for name, form in forms:
        conv, w = _conv(rng, name, x)
        nodes += [conv, *form(f"{name}_y", f"{name}_out")]
        inits.append(w)
        x = f"{name}_out"
    conv, w = _conv(rng, "tail", x)  # the last layer, which the ternary preset keeps float
    conv.output[0] = "Y"
    nodes.append(conv)
    inits.append(w)
    x_info = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, C, 8, 8])
    graph = helper.make_graph(nodes, "activations", [x_info],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, C, 8, 8]),
                               helper.make_tensor_value_info("exposed_y", TensorProto.FLOAT, [1, C, 8, 8])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _ternary_convs(model: onnx.ModelProto) -> dict[str, dict]:
    return {n.name: {a.name: helper.get_attribute_value(a) for a in n.attribute} for n in model.graph.node
            if n.op_type == "TernaryConv"}


def test_fuses_each_activation_form_and_computes_the_same(rng):
    model = _model(rng)
    result = convert(model, preset="ternary", progress=False)
    convs = _ternary_convs(result.model)
    activation = {name: attrs.get("activation", b"").decode() for name, attrs in convs.items()}
    assert activation == {"hard_swish": "HardSwish", "relu": "Relu", "clip": "Clip", "leaky": "LeakyRelu",
                          "hsig_mul": "HardSwish", "hsig": "HardSigmoid", "hsig_other_mul": "", "exposed": "",
                          "paddle": "HardSwishRelu6", "paddle_by_5": "", "silu": "Silu", "sigmoid": "Sigmoid"}
    assert convs["clip"]["activation_min"] == 0.0 and convs["clip"]["activation_max"] == 6.0
    assert convs["leaky"]["activation_alpha"] == pytest.approx(0.05)
    assert convs["hsig"]["activation_alpha"] == pytest.approx(0.25)
    assert convs["hsig"]["activation_beta"] == pytest.approx(0.4)
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("HardSwish") == 0 and ops.count("LeakyRelu") == 0 and ops.count("Clip") == 1  # paddle_by_5
    assert ops.count("Relu") == 1 and ops.count("HardSigmoid") == 1  # the exposed conv's, the other-alpha gate
    notes = " ".join(result.report.notes)
    assert "9 activation node(s) fused" in notes and "HardSwish x2" in notes and "HardSwishRelu6 x1" in notes
    assert "Silu x1" in notes and "Sigmoid x1" in notes and ops.count("Sigmoid") == 0
    assert "3 activation(s) after a TernaryConv left as nodes" in notes
    assert ops.count("Div") == 1  # paddle_by_5's

    # the same conversion without the pass: the same outputs, the activations as nodes
    passes = [p for p in default_passes() if not isinstance(p, FuseActivationPass)]
    from onnxbit.config import load_config

    unfused, _ = PassManager(passes, target="onnxbit", config=load_config(None, "ternary")).run(model)
    x = rng.standard_normal((1, C, 8, 8)).astype(np.float32)
    fused_out = runtime.InferenceSession(result.model).run(None, {"X": x})
    unfused_out = runtime.InferenceSession(unfused).run(None, {"X": x})
    for a, b in zip(fused_out, unfused_out):  # the same arithmetic (exp: the library's and onnxruntime's)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _conv_clip_conv(rng, clip: onnx.NodeProto, opset: int, extra_inputs=()) -> onnx.ModelProto:
    """conv -> clip -> a last conv (kept float by the ternary preset)."""
    conv, w = _conv(rng, "first", "X")
    tail, w2 = _conv(rng, "tail", clip.output[0])
    tail.output[0] = "Y"
    graph = helper.make_graph([conv, clip, tail], "clip", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                                         [1, C, 8, 8]), *extra_inputs],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, C, 8, 8])],
                              initializer=[w, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_clip_with_opset_6_attributes_and_a_non_constant_bound(rng):
    model = _conv_clip_conv(rng, helper.make_node("Clip", ["first_y"], ["clipped"], min=-1.0, max=2.0), 10)
    attrs = _ternary_convs(convert(model, preset="ternary", progress=False).model)["first"]
    assert attrs["activation"] == b"Clip" and (attrs["activation_min"], attrs["activation_max"]) == (-1.0, 2.0)

    model = _conv_clip_conv(rng, helper.make_node("Clip", ["first_y", "lo"], ["clipped"]), 17,
                            [helper.make_tensor_value_info("lo", TensorProto.FLOAT, [])])
    result = convert(model, preset="ternary", progress=False)
    assert "activation" not in _ternary_convs(result.model)["first"]
    assert any("Clip's min is not a float32 constant scalar" in note for note in result.report.notes)


def test_fuses_inside_an_if_branch(rng):
    """A conv and its activation inside an If branch fuse there; the branch's output keeps its name."""
    first, w1 = _conv(rng, "outer", "X")
    inner, w2 = _conv(rng, "inner", "outer_y")
    branch = helper.make_graph([inner, helper.make_node("Relu", ["inner_y"], ["branch_out"])], "then", [],
                               [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, [1, C, 8, 8])],
                               initializer=[w2])
    other = helper.make_graph([helper.make_node("Identity", ["outer_y"], ["other_out"])], "else", [],
                              [helper.make_tensor_value_info("other_out", TensorProto.FLOAT, [1, C, 8, 8])])
    tail, w3 = _conv(rng, "tail", "picked")
    tail.output[0] = "Y"
    graph = helper.make_graph(
        [first, helper.make_node("If", ["flag"], ["picked"], then_branch=branch, else_branch=other), tail],
        "branchy", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, C, 8, 8]),
                    helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, C, 8, 8])], initializer=[w1, w3])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    result = convert(model, preset="ternary", progress=False)
    then_graph = next(a.g for n in result.model.graph.node if n.op_type == "If" for a in n.attribute
                      if a.name == "then_branch")
    (conv,) = [n for n in then_graph.node if n.op_type == "TernaryConv"]
    assert helper.get_attribute_value(next(a for a in conv.attribute if a.name == "activation")) == b"Relu"
    assert conv.output[0] == "branch_out" and not [n for n in then_graph.node if n.op_type == "Relu"]
    from onnxbit.config import load_config

    passes = [p for p in default_passes() if not isinstance(p, FuseActivationPass)]
    unfused, _ = PassManager(passes, target="onnxbit", config=load_config(None, "ternary")).run(model)
    x = rng.standard_normal((1, C, 8, 8)).astype(np.float32)
    feeds = {"X": x, "flag": np.array(True)}
    np.testing.assert_array_equal(runtime.InferenceSession(result.model).run(None, feeds)[0],
                                  runtime.InferenceSession(unfused).run(None, feeds)[0])  # Relu is exact
