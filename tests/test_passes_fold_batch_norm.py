"""fold-batch-norm: BatchNormalization after a Conv goes into the Conv's weight and bias (as
onnxruntime does when it loads the float model), in subgraphs too; the cases it must not fold stay,
and the report says how many of each."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxbit
from onnxbit.convert import convert
from onnxbit.passes.fold_batch_norm import FoldBatchNormPass
from onnxbit.passes.manager import PassManager, default_passes


def _bn_inits(rng, prefix: str, m: int) -> list[onnx.TensorProto]:
    values = {"scale": rng.uniform(-1.5, 1.5, m), "beta": rng.standard_normal(m), "mean": rng.standard_normal(m),
              "var": rng.uniform(0.1, 2.0, m)}
    return [numpy_helper.from_array(v.astype(np.float32), f"{prefix}_{k}") for k, v in values.items()]


def _conv_bn(rng, name: str, x: str, c: int, m: int, *, bias: bool, group: int = 1, extra_use: bool = False):
    w = (rng.standard_normal((m, c // group, 3, 3)) * 0.3).astype(np.float32)
    inits = [numpy_helper.from_array(w, f"{name}_W"), *_bn_inits(rng, name, m)]
    conv_inputs = [x, f"{name}_W"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(m).astype(np.float32), f"{name}_B"))
        conv_inputs.append(f"{name}_B")
    nodes = [helper.make_node("Conv", conv_inputs, [f"{name}_conv"], name=name, pads=[1, 1, 1, 1], group=group),
             helper.make_node("BatchNormalization", [f"{name}_conv", f"{name}_scale", f"{name}_beta", f"{name}_mean",
                                                     f"{name}_var"], [f"{name}_bn"], name=f"{name}_bn",
                              epsilon=1e-3)]
    out = f"{name}_bn"
    if extra_use:  # the Conv's output read twice: not folded
        nodes.append(helper.make_node("Add", [f"{name}_bn", f"{name}_conv"], [f"{name}_sum"], name=f"{name}_sum"))
        out = f"{name}_sum"
    return nodes, inits, out


def _model(rng) -> onnx.ModelProto:
    n1, i1, y1 = _conv_bn(rng, "plain", "X", 8, 16, bias=False)
    n2, i2, y2 = _conv_bn(rng, "biased_grouped", y1, 16, 16, bias=True, group=4)
    n3, i3, y3 = _conv_bn(rng, "shared", y2, 16, 8, bias=True, extra_use=True)
    then_nodes, then_inits, then_y = _conv_bn(rng, "in_branch", y3, 8, 8, bias=True)
    then_graph = helper.make_graph(then_nodes, "then", [], [helper.make_tensor_value_info(then_y, TensorProto.FLOAT,
                                                                                          [2, 8, 9, 9])],
                                   initializer=then_inits)
    else_graph = helper.make_graph([helper.make_node("Identity", [y3], ["else_y"])], "else", [],
                                   [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, [2, 8, 9, 9])])
    nodes = [*n1, *n2, *n3, helper.make_node("If", ["flag"], ["Y"], name="branch", then_branch=then_graph,
                                             else_branch=else_graph)]
    graph = helper.make_graph(nodes, "conv_bn", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 8, 9, 9]),
                                                 helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 8, 9, 9])],
                              initializer=[*i1, *i2, *i3])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, feeds, optimized: bool) -> np.ndarray:
    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, feeds)[0]


def _ops(model: onnx.ModelProto) -> list[str]:
    ops = []
    for node in model.graph.node:
        ops.append(node.op_type)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                ops += [f"{node.name}/{n.op_type}" for n in attr.g.node]
    return ops


def test_folds_conv_batch_norm_pairs_as_onnxruntime_does(rng):
    model = _model(rng)
    out, ctx = PassManager([FoldBatchNormPass()]).run(model)
    ops = _ops(out)
    # plain, biased_grouped and the If branch's fold; shared's Conv output is read twice and stays
    assert ops.count("BatchNormalization") == 1 and "branch/BatchNormalization" not in ops, ops
    assert any("3 BatchNormalization node(s) folded" in note for note in ctx.notes), ctx.notes
    assert any("1 BatchNormalization node(s) after a Conv left" in note and "shared_bn" in note
               for note in ctx.notes), ctx.notes
    assert _ops(model).count("BatchNormalization") == 3  # the input model is untouched
    for flag in (True, False):
        feeds = {"X": rng.standard_normal((2, 8, 9, 9)).astype(np.float32), "flag": np.array(flag)}
        expected = _run(model, feeds, optimized=False)  # BatchNormalization computed on its own
        folded = _run(out, feeds, optimized=False)
        np.testing.assert_allclose(folded, expected, rtol=2e-5, atol=2e-5 * np.abs(expected).max())
        # and onnxruntime's own fusion of the original gives the same float weights' results
        np.testing.assert_allclose(folded, _run(model, feeds, optimized=True), rtol=2e-5,
                                   atol=2e-5 * np.abs(expected).max())


def test_leaves_qat_chains_training_mode_and_ternary_weights(rng):
    """Non-constant weights (a QAT chain here: W through Mul), BatchNormalization in training mode and
    weights already exactly ternary are not folded, and the note names why."""
    nodes, inits, _ = _conv_bn(rng, "chain", "X", 8, 8, bias=False)
    inits.append(numpy_helper.from_array(np.float32(0.5), "half"))
    nodes.insert(0, helper.make_node("Mul", ["chain_W", "half"], ["chain_W_scaled"], name="fake_quant"))
    nodes[1].input[1] = "chain_W_scaled"
    codes = rng.integers(-1, 2, (8, 8, 3, 3)).astype(np.float32) * np.float32(0.25)
    ternary = numpy_helper.from_array(codes, "ternary_W")
    graph = helper.make_graph(
        [*nodes, helper.make_node("Conv", ["chain_bn", "ternary_W"], ["t_conv"], name="ternary", pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["t_conv", "chain_scale", "chain_beta", "chain_mean", "chain_var"],
                          ["Y"], name="ternary_bn")],
        "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 8, 6, 6])], initializer=[*inits, ternary])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    out, ctx = PassManager([FoldBatchNormPass()]).run(model)
    assert _ops(out).count("BatchNormalization") == 2
    assert any("2 BatchNormalization node(s) after a Conv left" in note for note in ctx.notes), ctx.notes


def test_runs_first_in_the_default_pipeline_and_in_conversions(rng):
    assert default_passes()[0].name == FoldBatchNormPass.name
    model = _model(rng)
    result = convert(model, config={"default": {"precision": "int8"}}, target="onnxbit", progress=False)
    ops = _ops(result.model)
    assert ops.count("BatchNormalization") == 1, ops  # only the one reading a shared Conv output
    feeds = {"X": rng.standard_normal((2, 8, 9, 9)).astype(np.float32), "flag": np.array(True)}
    y = onnxbit.InferenceSession(result.model).run(None, feeds)[0]
    expected = _run(model, feeds, optimized=True)
    assert np.abs(y - expected).max() < 0.05 * np.abs(expected).max()


def test_calibration_sees_the_folded_weights_the_conversion_quantizes(tmp_path, rng):
    """Calibration folds BatchNormalization as the conversion does, so its error-compensated codes
    are for the weights the converted model holds: the conversion loads them (their digests match)
    and the budget holds on the converted model."""
    from onnxbit.calibration import calibrate, load_calibration_data
    from onnxbit.calibration.result import load_calibration

    n1, i1, y1 = _conv_bn(rng, "first", "X", 3, 16, bias=True)
    n2, i2, y2 = _conv_bn(rng, "second", "first_relu", 16, 16, bias=False)
    head = (rng.standard_normal((16, 10)) * 0.3).astype(np.float32)
    nodes = [*n1, helper.make_node("Relu", [y1], ["first_relu"]), *n2, helper.make_node("Relu", [y2], ["second_relu"]),
             helper.make_node("GlobalAveragePool", ["second_relu"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]), helper.make_node("MatMul", ["flat", "head"], ["Y"])]
    graph = helper.make_graph(nodes, "cnn_bn", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 3, 12, 12])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 10])],
                              initializer=[*i1, *i2, numpy_helper.from_array(head, "head")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "cnn.onnx")
    np.savez(tmp_path / "x.npz", X=rng.standard_normal((40, 3, 12, 12)).astype(np.float32))
    result = calibrate(str(tmp_path / "cnn.onnx"), str(tmp_path / "x.npz"), "cosine>=0.98",
                       precisions=("int4", "int8"), method="gptq")
    assert {l.node for l in result.layers if l.compensated} >= {"first", "second"}
    assert any(l.precision != "fp32" for l in result.layers if l.op == "Conv")
    result.write_json(tmp_path / "calib.json")
    converted = convert(str(tmp_path / "cnn.onnx"), config=load_calibration(tmp_path / "calib.json"),
                        progress=False).model
    assert "BatchNormalization" not in _ops(converted)
    data = load_calibration_data(str(tmp_path / "x.npz"), ["X"])
    session = onnxbit.InferenceSession(converted)
    original = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    value = result.budget.measure([original.run(None, f) for f in data.holdout],
                                  [session.run(None, f) for f in data.holdout])
    assert result.budget.met(value) and value == pytest.approx(result.holdout_value, abs=1e-4)
