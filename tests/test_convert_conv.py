"""Conv and ConvTranspose conversion on every target: the rewritten model
computes with exactly the quantized weights (checked against onnxruntime's
own Conv on weights dequantized in numpy), reports and inspect list every
layer, and a Conv the converter cannot handle is left with its reason."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import onnxbit
from onnxbit.cli.main import main as cli
from onnxbit.convert import convert
from onnxbit.inspect_model import inspect_model
from onnxbit.layers.conv import ConvSpec
from onnxbit.quant import quantize_int, quantize_ternary
from onnxbit.targets import ternary_conv
from conv_models import INPUT_SHAPE, LAYERS, conv_chain_model

CONFIGS = {
    "ternary": ({"default": {"precision": "ternary", "granularity": "channel"}},
                lambda rows_kn: quantize_ternary(rows_kn, method="absmean", granularity="channel")),
    "int8": ({"default": {"precision": "int8", "granularity": "channel", "symmetric": True}},
             lambda rows_kn: quantize_int(rows_kn, 8, symmetric=True, granularity="channel")),
    "int4": ({"default": {"precision": "int4", "granularity": "group", "group_size": 16, "symmetric": False}},
             lambda rows_kn: quantize_int(rows_kn, 4, symmetric=False, granularity="group", group_size=16)),
}


def _dequantized_weights(model: onnx.ModelProto, quantize) -> dict[str, np.ndarray]:
    """Each layer's weight quantized as the converter does, in numpy, back in the node's layout."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for name, op, shape, attrs in LAYERS:
        spec = ConvSpec(op, shape, attrs.get("group", 1))
        rows = spec.rows_of(values[f"{name}_W"])
        deq_rows = quantize(np.ascontiguousarray(rows.T)).dequantize().T
        weight = deq_rows
        for step, value in spec.layout_from_rows():
            weight = weight.reshape(value) if step == "reshape" else weight.transpose(value)
        out[name] = np.ascontiguousarray(weight, dtype=np.float32)
    return out


@pytest.mark.parametrize("target", ["ort", "onnx"])
@pytest.mark.parametrize("precision, granularity, symmetric", [
    ("ternary", "channel", True), ("int8", "channel", True), ("int4", "tensor", False), ("int8", "group", True),
    ("int4", "group", False)])
def test_onnxruntime_folds_the_integer_conv_weights_once(tmp_path, target, precision, granularity, symmetric):
    """Conv weights are stored as integer codes, Cast (- zero point) * scale (K-groups: in [M, groups,
    group_size], then back to rows, a partial last group sliced off): onnxruntime's constant folding turns
    that into a float initializer when the session loads, so each Conv runs on a constant weight, as fast as
    the original (dequantize_conv.py has the timings; DequantizeLinear, written before, is not folded)."""
    config = {"precision": precision, "granularity": granularity, "symmetric": symmetric}
    if granularity == "group":
        config["group_size"] = 16
    result = convert(conv_chain_model(np.random.default_rng(7)), config={"default": config}, target=target,
                     progress=False)
    storages = {r.storage.split("/")[0] for r in result.report.layers if r.action == "converted"}
    assert storages == {"Cast+Mul"}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(result.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    initializers = {t.name for t in optimized.graph.initializer}
    convs = [n for n in optimized.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert len(convs) == len(LAYERS)
    folded = [n.input[1] in initializers for n in convs]
    assert all(folded), folded
    left = {n.op_type for n in optimized.graph.node} & {"Cast", "Mul", "Sub", "Slice", "DequantizeLinear"}
    assert not left, left


@pytest.mark.parametrize("target", ["onnxbit", "ort", "onnx"])
@pytest.mark.parametrize("precision", list(CONFIGS))
def test_converted_convs_compute_with_the_quantized_weights(rng, target, precision):
    model = conv_chain_model(np.random.default_rng(7))
    config, quantize = CONFIGS[precision]
    result = convert(model, config=config, target=target, progress=False)
    converted = {r.node: r for r in result.report.layers if r.action == "converted"}
    assert set(converted) == {name for name, *_ in LAYERS}
    if target == "onnxbit" and precision == "ternary":
        # float activations: depthwise in TernaryConv, dense convs on onnxruntime's Conv (folded INT2 weight)
        assert converted["depthwise"].storage == "TernaryConv/base3"
        assert {converted[n].storage for n in ("conv3x3", "grouped", "pointwise")} == {"Cast+Mul/INT2"}
    ops = {n.op_type for n in result.model.graph.node}
    assert ("TernaryConv" in ops) == (target == "onnxbit" and precision == "ternary")
    # Integer weights are Cast + Mul, which onnxruntime folds (DequantizeLinear it would not).
    assert "DequantizeLinear" not in ops
    x = rng.standard_normal(INPUT_SHAPE).astype(np.float32)
    y = onnxbit.InferenceSession(result.model).run(None, {"X": x})[0]
    expected_model = conv_chain_model(np.random.default_rng(7), _dequantized_weights(model, quantize))
    expected = ort.InferenceSession(expected_model.SerializeToString()).run(None, {"X": x})[0]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # inspect reads every converted layer back with its storage.
    layers = {layer.node: layer for layer in inspect_model(result.model).layers}
    for name, record in converted.items():
        assert layers[name].storage == record.storage, name
        assert layers[name].note == ""


def test_ternary_act_quant_conv_runs_int8_per_im2col_row(rng):
    model = conv_chain_model(np.random.default_rng(7))
    config = {"default": {"precision": "ternary", "granularity": "tensor", "act_quant": 1}}
    for target in ("onnxbit", "onnx"):
        result = convert(model, config=config, target=target, progress=False)
        x = rng.standard_normal(INPUT_SHAPE).astype(np.float32)
        y = onnxbit.InferenceSession(result.model).run(None, {"X": x})[0]
        assert np.isfinite(y).all()
        if target == "onnxbit":
            act_quant = {n.name: a.i for n in result.model.graph.node if n.op_type == "TernaryConv"
                         for a in n.attribute if a.name == "act_quant"}
            # Layers not QAT-folded whose int8 path is the slower one take float activations: depthwise ones
            # (int8 per window) stay in TernaryConv; those reading fewer than 8 channels per group (conv3x3: 6,
            # grouped: 4) run as INT2 + Cast * scale + Conv; pointwise (15 channels) keeps int8 activations.
            assert act_quant == {"depthwise": 0, "pointwise": 1}
            storage = {r.node: r.storage for r in result.report.layers if r.action == "converted"}
            assert storage["conv3x3"].startswith("Cast+Mul/") and storage["grouped"].startswith("Cast+Mul/")
            assert ternary_conv.FLOAT_ACTIVATIONS_CHOSEN_NOTE in result.report.notes
            assert not any("exists only in com.onnxbit::TernaryConv" in note for note in result.report.notes)
        else:
            assert any("float32 activations" in note for note in result.report.notes)


def test_dense_ternary_convs_with_float_activations_take_the_faster_op_and_say_so():
    """Float activations: dense ternary convs become INT2 + Cast * scale + Conv (onnxruntime folds the weight;
    TernaryConv's float path ran them at 0.33-0.69x of fp32), with K-group scales too, and the report says
    why and what act_quant=1 would give; where TernaryConv still runs them float (an explicit storage
    format), the report says they may be slower than the original."""
    model = conv_chain_model(np.random.default_rng(7))
    runs = {"float": {"precision": "ternary", "granularity": "tensor", "act_quant": 0},
            "int8": {"precision": "ternary", "granularity": "tensor", "act_quant": 1},
            "groups": {"precision": "ternary", "granularity": "group", "group_size": 16, "act_quant": 0},
            "format": {"precision": "ternary", "granularity": "tensor", "act_quant": 0, "format": "base3"}}
    results = {name: convert(model, config={"default": config}, target="onnxbit", progress=False)
               for name, config in runs.items()}
    dense = ("conv3x3", "grouped", "pointwise")
    for name, result in results.items():
        storage = {r.node: r.storage for r in result.report.layers if r.action == "converted"}
        # int8 activations: conv3x3 and grouped read fewer than 8 channels a group and take float ones
        standard = {n: name in ("float", "groups") or (name == "int8" and n != "pointwise") for n in dense}
        assert all(storage[n].startswith("Cast+Mul/" if standard[n] else "TernaryConv/") for n in dense), storage
        assert storage["depthwise"].startswith("TernaryConv/")
        notes = result.report.notes
        # and its ConvTranspose, stored so on every run
        assert ternary_conv.DENSE_AS_STANDARD_NOTE in notes, name
        assert (ternary_conv.DENSE_FLOAT_ACTIVATIONS_NOTE in notes) == (name == "format"), name


def test_which_ternary_convs_run_on_onnxruntimes_conv():
    """Float activations: dense convs and depthwise ones larger than 5x5 take INT2 + Cast * scale + Conv;
    depthwise ones up to 5x5, int8 activations and an explicit storage format keep TernaryConv."""
    dense = ConvSpec("Conv", (8, 4, 3, 3), 1)
    dw3, dw5, dw7 = (ConvSpec("Conv", (8, 1, k, k), 8) for k in (3, 5, 7))
    assert ternary_conv.float_as_standard(dense, 0, None)
    assert ternary_conv.float_as_standard(dw7, 0, None)
    assert not ternary_conv.float_as_standard(dw5, 0, None)
    assert not ternary_conv.float_as_standard(dw3, 0, None)
    assert not ternary_conv.float_as_standard(dense, 1, None)
    assert not ternary_conv.float_as_standard(dw7, 0, "base3")


def test_only_convs_whose_int8_path_is_slower_drop_int8_activations_unless_qat_folded():
    depthwise, stem = ConvSpec("Conv", (8, 1, 3, 3), 8), ConvSpec("Conv", (32, 3, 3, 3), 1)
    for slower in (depthwise, stem, ConvSpec("Conv", (8, 4, 3, 3), 2)):  # grouped, 4 channels a group
        assert ternary_conv.activation_quant(slower, 1, proven=False) == 0
        assert ternary_conv.activation_quant(slower, 1, proven=True) == 1  # the fold's graph quantized them
        assert ternary_conv.activation_quant(slower, 0, proven=False) == 0
    assert ternary_conv.activation_quant(ConvSpec("Conv", (16, 8, 3, 3), 2), 1, proven=False) == 1  # 8 a group
    assert ternary_conv.activation_quant(ConvSpec("Conv", (8, 8, 1, 1), 1), 1, proven=False) == 1
    # and then the stem runs on onnxruntime's Conv (a float-activation dense conv), the depthwise in TernaryConv
    assert ternary_conv.float_as_standard(stem, ternary_conv.activation_quant(stem, 1, proven=False), None)
    assert not ternary_conv.float_as_standard(depthwise, 0, None)


def _single(nodes, inputs, inits, outputs=("Y",)):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, [])
                                                   for o in outputs], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_conv_inside_if_branch_converts(rng):
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    branch = helper.make_graph([helper.make_node("Conv", ["X", "W"], ["Z"], name="inner_conv", pads=[1, 1, 1, 1])],
                               "then", [], [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [1, 8, 8, 8])])
    other = helper.make_graph([helper.make_node("Conv", ["X", "W"], ["Z2"], name="other_conv")], "else", [],
                              [helper.make_tensor_value_info("Z2", TensorProto.FLOAT, [1, 8, 6, 6])])
    model = _single([helper.make_node("If", ["cond"], ["Y"], name="branch", then_branch=branch, else_branch=other)],
                    [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, 8, 8]),
                     helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                    [numpy_helper.from_array(w, "W")])
    result = convert(model, config={"default": {"precision": "ternary"}}, progress=False)
    assert {r.node for r in result.report.converted} == {"inner_conv", "other_conv"}
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    y = onnxbit.InferenceSession(result.model).run(None, {"X": x, "cond": np.array(True)})[0]
    q = quantize_ternary(np.ascontiguousarray(w.reshape(8, -1).T), method="absmean", granularity="tensor")
    expected_model = _single([helper.make_node("Conv", ["X", "W"], ["Y"], pads=[1, 1, 1, 1])],
                             [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, 8, 8])],
                             [numpy_helper.from_array(q.dequantize().T.reshape(w.shape).astype(np.float32), "W")])
    expected = ort.InferenceSession(expected_model.SerializeToString()).run(None, {"X": x})[0]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_every_weight_node_is_reported_with_a_reason(rng):
    w = (rng.standard_normal((4, 3, 3, 3))).astype(np.float32)
    table = rng.standard_normal((50, 8)).astype(np.float32)
    lstm_w = rng.standard_normal((1, 16, 8)).astype(np.float32)
    lstm_r = rng.standard_normal((1, 16, 4)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["X", "dynamic_W"], ["c"], name="runtime_weight_conv"),
             helper.make_node("Conv", ["X", "W"], ["c2"], name="float_conv"),
             helper.make_node("Gather", ["table", "ids"], ["e"], name="embedding"),
             helper.make_node("LSTM", ["e", "lstm_W", "lstm_R"], ["h"], name="lstm", hidden_size=4),
             helper.make_node("MatMul", ["e", "et"], ["scores"], name="scores"),
             helper.make_node("Attention", ["e", "attn_W", "attn_B"], ["att"], name="attention", domain="com.microsoft",
                              num_heads=2)]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, 8, 8]),
              helper.make_tensor_value_info("dynamic_W", TensorProto.FLOAT, [4, 3, 3, 3]),
              helper.make_tensor_value_info("ids", TensorProto.INT64, [5, 1]),
              helper.make_tensor_value_info("et", TensorProto.FLOAT, [5, 8, 5])]
    model = _single(nodes, inputs, [numpy_helper.from_array(w, "W"), numpy_helper.from_array(table, "table"),
                                    numpy_helper.from_array(lstm_w, "lstm_W"), numpy_helper.from_array(lstm_r, "lstm_R"),
                                    numpy_helper.from_array(rng.standard_normal((8, 24)).astype(np.float32), "attn_W"),
                                    numpy_helper.from_array(np.zeros(24, np.float32), "attn_B")],
                    outputs=("c", "c2", "h", "scores", "att"))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    # float_conv has 108 weights: under min_params it stays float, so nothing converts.
    result = convert(model, config={"default": {"precision": "ternary"}, "min_params": 1000}, progress=False)
    rows = {r.node: r for r in result.report.table_rows()}
    assert set(rows) == {"runtime_weight_conv", "float_conv", "embedding", "lstm", "scores", "attention"}
    assert "Attention (com.microsoft) projection weights" in rows["attention"].reason
    assert "graph input, not a constant" in rows["runtime_weight_conv"].reason
    assert "min_params" in rows["float_conv"].reason
    assert "embedding" in rows["embedding"].reason and "LSTM" in rows["lstm"].reason
    assert rows["scores"].action == "listed" and "both inputs are activations" in rows["scores"].reason
    assert any(n.startswith("no layer was converted; most common reasons:") for n in result.report.notes)
    # inspect lists the same weight nodes.
    layers = {layer.node for layer in inspect_model(model).layers}
    assert {"runtime_weight_conv", "float_conv", "embedding", "lstm", "scores", "attention"} <= layers


def test_an_already_quantized_model_lists_its_integer_ops_and_keeps_its_output_shape(tmp_path, rng):
    """A dynamically quantized export (ConvInteger, MatMulInteger: ddddocr's common_old.onnx) lists
    each integer op with its reason in the report and in inspect, and a no-op reports the input's
    own size. Its value_info restated the output without a shape, which onnx-graphsurgeon took over
    the output's declared shape (the checker then refused the rewritten model): a float layer
    beside them converts and the output keeps [1, 4, 6, 6]."""
    wq = rng.integers(-127, 128, size=(4, 3, 3, 3)).astype(np.int8)
    mq = rng.integers(-127, 128, size=(8, 16)).astype(np.int8)
    wf = rng.standard_normal((4, 4, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["X"], ["Xq", "Xs", "Xz"], name="quantize"),
             helper.make_node("ConvInteger", ["Xq", "Wq"], ["Ci"], name="conv_integer"),
             helper.make_node("Cast", ["Ci"], ["Cf"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Conv", ["Cf", "Wf"], ["Yc"], name="float_conv"),
             helper.make_node("Reshape", ["Yc", "S"], ["Y"], name="reshape"),  # a shape inference cannot tell
             helper.make_node("DynamicQuantizeLinear", ["V"], ["Vq", "Vs", "Vz"], name="quantize_v"),
             helper.make_node("MatMulInteger", ["Vq", "Mq"], ["Mi"], name="matmul_integer"),
             helper.make_node("Cast", ["Mi"], ["Z"], to=TensorProto.FLOAT, name="cast_m")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, 8, 8]),
                                           helper.make_tensor_value_info("V", TensorProto.FLOAT, [2, 8]),
                                           helper.make_tensor_value_info("S", TensorProto.INT64, ["rank"])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4, 6, 6]),
                               helper.make_tensor_value_info("Z", TensorProto.FLOAT, [2, 16])],
                              initializer=[numpy_helper.from_array(wq, "Wq"), numpy_helper.from_array(mq, "Mq"),
                                           numpy_helper.from_array(wf, "Wf")])
    graph.value_info.append(helper.make_tensor_value_info("Y", TensorProto.FLOAT, None))  # no shape
    # at the opset the emitted ops need: an upgrade by onnx's version converter rebuilt value_info first
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    model.ir_version = 11
    source = tmp_path / "quantized.onnx"
    onnx.save(model, source)
    result = convert(source, config={"default": {"precision": "ternary"}}, progress=False)
    rows = {r.node: r for r in result.report.table_rows()}
    for name, op in (("conv_integer", "ConvInteger"), ("matmul_integer", "MatMulInteger")):
        assert rows[name].action == "skipped" and rows[name].reason.startswith(f"{op}: weights already quantized")
    assert rows["float_conv"].action == "converted"
    dims = [d.dim_value for d in result.model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 4, 6, 6]
    layers = {layer.node: layer for layer in inspect_model(model).layers}
    assert layers["conv_integer"].precision == "int8" and "already quantized" in layers["conv_integer"].note
    # Without the float layer nothing converts: the no-op summary names the integer ops and the
    # size after is the input's (an estimate had said 689 B more on ddddocr's model).
    del model.graph.node[3:5]
    model.graph.output[0].name = "Cf"
    del model.graph.value_info[:]
    onnx.save(model, source)
    noop = convert(source, config={"default": {"precision": "ternary"}}, progress=False).report
    assert "ConvInteger: weights already quantized" in next(n for n in noop.notes if n.startswith("no layer"))
    assert noop.model_bytes_after == noop.model_bytes_before == source.stat().st_size
    assert not noop.growth_summary()


def test_cli_no_op_exits_1_unless_allowed(tmp_path, rng):
    w = (rng.standard_normal((4, 3, 3, 3))).astype(np.float32)
    model = _single([helper.make_node("Conv", ["X", "W"], ["Y"], name="small_conv")],
                    [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, 8, 8])],
                    [numpy_helper.from_array(w, "W")])
    source = tmp_path / "small.onnx"
    onnx.save(model, source)
    config = tmp_path / "config.json"
    config.write_text('{"default": {"precision": "ternary"}, "min_params": 1000}')
    out = tmp_path / "out.onnx"
    refused = CliRunner().invoke(cli, ["quantize", str(source), str(out), "--config", str(config), "-q"])
    assert refused.exit_code == 1 and not out.exists()
    assert "no layer was converted" in refused.output and "min_params" in refused.output
    allowed = CliRunner().invoke(cli, ["quantize", str(source), str(out), "--config", str(config), "-q",
                                       "--allow-noop"])
    assert allowed.exit_code == 0 and out.exists()
    config.write_text('{"default": {"precision": "ternary"}}')
    converted = CliRunner().invoke(cli, ["quantize", str(source), str(out), "--config", str(config), "-q"])
    assert converted.exit_code == 0, converted.output


def _sparse_and_dense_convs(rng):
    """A 64 x 16 x 3 x 3 Conv with 90 % zero weights (a stream is smaller than
    base3) then a small dense one (base3 is smallest)."""
    sparse = (rng.standard_normal((64, 16, 3, 3)) * 0.3).astype(np.float32)
    sparse[rng.random(sparse.shape) < 0.9] = 0.0
    dense = (rng.standard_normal((8, 64, 1, 1)) * 0.3).astype(np.float32)
    nodes = [helper.make_node("Conv", ["X", "Ws"], ["H"], name="sparse_conv", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["H", "Wd"], ["Y"], name="dense_conv")]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 16, 8, 8])]
    return _single(nodes, inputs, [numpy_helper.from_array(sparse, "Ws"), numpy_helper.from_array(dense, "Wd")])


def _conv_storage(model):
    """node name -> (format attribute, bytes of B) for each TernaryConv."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "TernaryConv":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            out[node.name] = (attrs["format"].decode(), values[node.input[1]].nbytes)
    return out


def test_conv_storage_formats_rans_and_auto(rng):
    model = _sparse_and_dense_convs(rng)
    x = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    storage, outputs = {}, {}
    for fmt in ("base3", "rans", "zeroruns", "sparse", "auto"):
        config = {"default": {"precision": "ternary", "granularity": "channel", "act_quant": 1, "format": fmt}}
        result = convert(model, config=config, target="onnxbit", progress=False)
        storage[fmt] = _conv_storage(result.model)
        records = {r.node: r.storage for r in result.report.layers if r.action == "converted"}
        assert records == {name: f"TernaryConv/{f}" for name, (f, _) in storage[fmt].items()}
        outputs[fmt] = onnxbit.InferenceSession(result.model).run(None, {"X": x})[0]
    assert {f for f, _ in storage["base3"].values()} == {"base3"}
    assert {f for f, _ in storage["rans"].values()} == {"rans"}
    assert {f for f, _ in storage["zeroruns"].values()} == {"zeroruns"}
    assert {f for f, _ in storage["sparse"].values()} == {"sparse"}
    # auto: per tensor, the smallest of base3 and every stream format.
    for name in ("sparse_conv", "dense_conv"):
        smallest = min((storage[f][name] for f in ("base3", "rans", "zeroruns", "sparse")), key=lambda pair: pair[1])
        assert storage["auto"][name] == smallest, name
    assert storage["auto"]["sparse_conv"][0] != "base3" and storage["auto"]["dense_conv"][0] == "base3"
    for fmt in ("rans", "zeroruns", "sparse", "auto"):
        np.testing.assert_array_equal(outputs[fmt], outputs["base3"])


def test_no_op_summary_counts_a_reason_once_whatever_names_it_quotes():
    """The one-line summary of a conversion that converted nothing groups skip reasons that differ
    only in the tensor and node names they quote (a model whose every weight comes from a
    ConstantOfShape gave one reason per layer, each '1x')."""
    from onnxbit.convert import noop_summary
    from onnxbit.passes.base import LayerRecord

    def skipped(name):
        return LayerRecord(node=name, op_type="Conv", action="skipped",
                           reason=f"'{name}_w' comes from ConstantOfShape node '{name}_fill', not from a constant")

    records = [skipped(f"conv{i}") for i in range(5)] + [
        LayerRecord(node="fc", op_type="Gemm", action="skipped", reason="below min_params (100 < 1000)")]
    line = noop_summary(records)
    assert line.startswith("no layer was converted; most common reasons: 'conv0_w' comes from ConstantOfShape")
    assert "(5x, alike)" in line and "below min_params (100 < 1000) (1x)" in line
