"""activations "static": calibration measures a fixed int8 activation scale per
ternary layer, `quantize --calibration` emits TernaryMatMul act_quant=2 with
it, and the converted model runs in onnxruntime; plus the config rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx.reference import ReferenceEvaluator

from onnxbit import runtime
from onnxbit.calibration.statistics import RANGE_METHODS
from onnxbit.cli.main import main
from onnxbit.config import ACT_RANGES, config_from_dict
from onnxbit.convert import convert
from onnxbit.errors import ConfigError, LayerError
from onnxbit.ops.reference import CUSTOM_OPS

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"
MODEL = FIXTURES / "digits_float_mlp.onnx"


@pytest.fixture(scope="module")
def digits():
    data = np.load(FIXTURES / "digits_test.npz")
    return data["X_test"].astype(np.float32), data["y_test"]


@pytest.fixture(scope="module")
def pixels(tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("static") / "pixels.npz"
    np.savez(path, pixels=digits[0])
    return path


def _ternary_nodes(model: onnx.ModelProto) -> dict[str, dict]:
    return {n.name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            for n in model.graph.node if n.op_type == "TernaryMatMul"}


def _per_token(config: dict) -> dict:
    """The same layers with BitNet per-token scales (act_quant=1) instead of static ones."""
    drop = ("activations", "act_scale", "act_range", "act_percentile")
    rules = [{**{k: v for k, v in r.items() if k not in drop}, "act_quant": 1} for r in config["rules"]]
    return {**config, "rules": rules}


def test_calibrate_static_then_quantize_runs_and_agrees_with_float(pixels, digits, tmp_path):
    calib = tmp_path / "calib.json"
    result = CliRunner().invoke(main, ["calibrate", str(MODEL), "--data", str(pixels), "--budget", "top1>=0.97",
                                       "--precisions", "ternary", "--activations", "static", "--act-range", "mse",
                                       "-o", str(calib)])
    assert result.exit_code == 0, result.output
    saved = json.loads(calib.read_text())
    static_rules = [r for r in saved["config"]["rules"] if r.get("activations") == "static"]
    assert static_rules and all(r["act_range"] == "mse" and r["act_scale"] > 0 for r in static_rules)
    for rule in static_rules:
        stats = saved["activation_statistics"][rule["match"]["name"]]
        assert 0 < stats["threshold"] <= stats["absmax"] and stats["count"] > 0
        assert rule["act_scale"] == pytest.approx(127 / stats["threshold"], rel=1e-6)

    out = tmp_path / "static.onnx"
    result = CliRunner().invoke(main, ["quantize", str(MODEL), str(out), "--calibration", str(calib), "-q"])
    assert result.exit_code == 0, result.output
    nodes = _ternary_nodes(onnx.load(out))
    assert nodes and all(a["act_quant"] == 2 for a in nodes.values())
    assert sorted(a["act_scale"] for a in nodes.values()) == pytest.approx(
        sorted(r["act_scale"] for r in static_rules))
    assert CliRunner().invoke(main, ["verify", str(out)]).exit_code == 0

    x, labels = digits
    held = x[4::5]  # the held-out samples of the split
    reference = runtime.InferenceSession(str(MODEL)).run(None, {"pixels": held})[0]
    static = runtime.InferenceSession(str(out)).run(None, {"pixels": held})[0]
    # The C op equals the numpy reference of the whole model bit for bit.
    evaluated = ReferenceEvaluator(str(out), new_ops=CUSTOM_OPS).run(None, {"pixels": held})[0]
    np.testing.assert_array_equal(static, evaluated)

    token_out = tmp_path / "token.onnx"
    convert(MODEL, config=_per_token(saved["config"]), output_path=token_out, progress=False)
    assert all(a["act_quant"] == 1 for a in _ternary_nodes(onnx.load(token_out)).values())
    token = runtime.InferenceSession(str(token_out)).run(None, {"pixels": held})[0]

    agree_static = float((static.argmax(1) == reference.argmax(1)).mean())
    agree_token = float((token.argmax(1) == reference.argmax(1)).mean())
    print(f"\nheld-out top-1 agreement with float: static {agree_static:.4f}, per-token {agree_token:.4f}; "
          f"accuracy: float {(reference.argmax(1) == labels[4::5]).mean():.4f}, "
          f"static {(static.argmax(1) == labels[4::5]).mean():.4f}, "
          f"per-token {(token.argmax(1) == labels[4::5]).mean():.4f}")
    assert agree_static >= 0.95
    assert agree_static >= agree_token - 0.03


def test_range_methods_agree_between_config_and_statistics():
    assert ACT_RANGES == RANGE_METHODS


@pytest.mark.parametrize("default,problem", [
    ({"activations": "float", "act_scale": 2.0}, "act_scale is only used with activations 'static'"),
    ({"activations": "static", "act_scale": 0.0}, "act_scale must be a finite number > 0"),
    ({"activations": "static", "act_scale": float("nan")}, "act_scale must be a finite number > 0"),
    ({"activations": "static", "act_scale": "3"}, "act_scale must be a finite number > 0"),
    ({"activations": "static", "act_quant": 1}, "'static' .* and act_quant=1 .* contradict"),
    ({"activations": "static", "act_range": "kl"}, "act_range must be one of minmax, percentile, entropy, mse"),
    ({"act_percentile": 0}, r"act_percentile must be a number in \(0, 100\]"),
    ({"activations": "dynamic"}, "activations must be one of float, int8, static"),
])
def test_config_rejects_bad_static_settings(default, problem):
    with pytest.raises(ConfigError, match=problem):
        config_from_dict({"default": {"precision": "ternary", **default}})


@pytest.mark.parametrize("target,precision,problem", [
    ("ort", "ternary", "target 'ort' has no static form for them yet"),
    ("onnx", "ternary", "target 'onnx' has no static form for them yet"),
    ("onnxbit", "int4", "applies to ternary/binary layers .* and int8 ones .* not 'int4'"),
    ("ort", "int8", None),  # allowed: QuantizeLinear + MatMulInteger
])
def test_targets_refuse_static_where_they_have_no_form(target, precision, problem):
    config = {"default": {"precision": precision, "activations": "static", "act_scale": 10.0,
                          **({"granularity": "group", "group_size": 32} if precision == "int4" else {})}}
    if problem is None:
        convert(MODEL, config=config, target=target, progress=False)
        return
    with pytest.raises(ConfigError, match=problem):
        convert(MODEL, config=config, target=target, progress=False)


@pytest.mark.parametrize("target", ["onnxbit", "ort", "onnx"])
def test_int8_static_is_quantize_linear_and_matmul_integer(digits, target):
    x = digits[0][:64]
    scale = 127 / float(np.abs(x).max())  # the input layer; later layers see larger values and clip
    config = {"default": {"precision": "int8", "granularity": "channel", "activations": "static",
                          "act_scale": scale}}
    model = convert(MODEL, config=config, target=target, progress=False).model
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == 3 and ops.count("MatMulInteger") == 3
    assert "DynamicQuantizeLinear" not in ops
    dynamic = convert(MODEL, config={"default": {**config["default"], "activations": "int8", "act_scale": None}},
                      target=target, progress=False).model
    assert "DynamicQuantizeLinear" in [n.op_type for n in dynamic.graph.node]
    reference = runtime.InferenceSession(str(MODEL)).run(None, {"pixels": x})[0]
    static_y = runtime.InferenceSession(model).run(None, {"pixels": x})[0]
    assert np.isfinite(static_y).all()
    # Layer 0's input is quantized exactly as its q = round(x * scale) says.
    first = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    step = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == first.input[1]))
    assert step == np.float32(1) / np.float32(scale)
    # The int8 grid as uint8 around 128: the form onnxruntime's fast MatMulInteger takes.
    zero = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == first.input[2]))
    assert zero.dtype == np.uint8 and zero == 128
    agreement = float((static_y.argmax(1) == reference.argmax(1)).mean())
    assert agreement >= 0.5  # one scale for every layer: a smoke check, calibration picks real ones


def test_static_without_a_measured_scale_says_to_calibrate():
    with pytest.raises(LayerError, match="layer '/layers/layers.0/Gemm'.*needs the layer's act_scale.*onnxbit calibrate"):
        convert(MODEL, config={"default": {"precision": "ternary", "activations": "static"}}, progress=False)


def test_a_global_static_scale_applies_to_every_ternary_layer(digits):
    config = {"default": {"precision": "ternary", "activations": "static", "act_scale": 20.0}}
    model = convert(MODEL, config=config, progress=False).model
    nodes = _ternary_nodes(model)
    assert len(nodes) == 3 and all(a["act_quant"] == 2 and a["act_scale"] == 20.0 for a in nodes.values())
    y = runtime.InferenceSession(model).run(None, {"pixels": digits[0][:8]})[0]
    assert np.isfinite(y).all()


def test_static_conv_layers_become_ternary_conv_act_quant_2(rng):
    model = FIXTURES / "digits_qat_cnn.onnx"
    config = {"default": {"precision": "ternary", "activations": "static", "act_scale": 30.0}}
    converted = convert(model, config=config, progress=False).model
    convs = [n for n in converted.graph.node if n.op_type == "TernaryConv"]
    assert convs
    for node in convs:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["act_quant"] == 2 and attrs["act_scale"] == 30.0
    feed = {i.name: rng.standard_normal([d.dim_value or 2 for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in converted.graph.input}
    y = runtime.InferenceSession(converted).run(None, feed)[0]
    np.testing.assert_array_equal(y, ReferenceEvaluator(converted, new_ops=CUSTOM_OPS).run(None, feed)[0])


def test_a_layer_whose_static_scale_breaks_the_budget_goes_back_to_float_activations(pixels):
    from onnxbit.calibration import calibrate, load_calibration_data
    from onnxbit.calibration.activations import add_static_activations, check_static_activations

    data = load_calibration_data(pixels, ["pixels"], samples=100)
    result = calibrate(MODEL, data, "top1>=0.95", precisions=["ternary"])
    static = add_static_activations(MODEL, result, data, "mse")
    assert len(static) >= 2
    ruined = static[0]
    result.activations[ruined]["act_scale"] = 1e-3  # every activation rounds to 0: the layer outputs its bias
    record = check_static_activations(MODEL, result, data)
    assert not result.budget.met(record["all_static"])
    assert [step["layer"] for step in record["reverted"]] == [ruined]
    assert result.budget.met(record["calibration_value"])
    assert set(result.activations) == set(static) - {ruined}
    rules = {r["match"]["name"]: r for r in result.config()["rules"]}
    assert "activations" not in rules[ruined] and rules[static[1]]["activations"] == "static"
    assert 0 <= record["holdout_value"] <= 1
