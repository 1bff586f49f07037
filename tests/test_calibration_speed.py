"""The performance goal: representations measured slower than float for a
layer's shape are not considered (onnxbit.calibration.speed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxbit.calibration import calibrate
from onnxbit.calibration import speed as speed_module
from onnxbit.calibration.speed import LayerSpeed, measure_speedup
from onnxbit.cli.main import main

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"
FLOAT_MLP = FIXTURES / "digits_float_mlp.onnx"
PIXELS = np.load(FIXTURES / "digits_test.npz")["X_test"].astype(np.float32)


def test_measured_speedup_is_a_real_timing():
    ratio = measure_speedup({"precision": "ternary", "granularity": "channel", "method": "absmean"}, 256, 128, 4,
                            rounds=3)
    assert math.isfinite(ratio) and ratio > 0


def test_layer_speed_measures_each_key_once(tmp_path, monkeypatch):
    calls = []

    def fake_measure(settings, k, n, m, target, threads):
        calls.append((k, n, m))
        return 0.5 if settings["precision"] == "int8" else 2.0

    monkeypatch.setattr(speed_module, "measure_speedup", fake_measure)
    path = tmp_path / "speed.json"
    speed = LayerSpeed("onnxbit", 1, path)
    assert speed({"precision": "int8"}, 64, 32, 8) == 0.5
    assert speed({"precision": "int8"}, 64, 32, 8) == 0.5
    assert speed({"precision": "int4"}, 64, 32, 8) == 2.0
    assert calls == [(64, 32, 8), (64, 32, 8)]
    # A new process on the same machine reads the cache instead of measuring.
    assert LayerSpeed("onnxbit", 1, path)({"precision": "int8"}, 64, 32, 8) == 0.5
    assert len(calls) == 2
    # Another target or thread count is another key.
    LayerSpeed("ort", 2, path)({"precision": "int8"}, 64, 32, 8)
    assert len(calls) == 3


def test_a_precision_slower_than_float_is_never_chosen(tmp_path):
    def int8_is_slow(settings, k, n, m):
        return {"int8": 0.5, "int4": 1.5, "ternary": 3.0}[settings["precision"]]

    data = tmp_path / "pixels.npz"
    np.savez(data, pixels=PIXELS[:60])
    result = calibrate(str(FLOAT_MLP), str(data), "cosine>=0.99", precisions=("int4", "int8"), method="rtn",
                       speed=int8_is_slow)
    assert {l.precision for l in result.layers} <= {"int4", "fp32"}
    for layer in result.layers:
        assert "int8" not in layer.sensitivity  # not even measured for accuracy
        assert result.speed[layer.node]["int8"] == 0.5 and result.speed[layer.node]["rows"] == 1
    lines = result.speed_lines()
    assert lines and all("int8 0.50x (slower: not considered)" in line for line in lines)
    # A layer that misses the held-out budget at int4 goes to float, skipping int8.
    for adjustment in result.adjustments:
        assert adjustment["to"] != "int8"


def test_calibrate_performance_preset_times_every_layer_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXBIT_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "pixels.npz"
    np.savez(data, pixels=PIXELS[:40])
    calib = tmp_path / "calib.json"
    result = CliRunner().invoke(main, ["calibrate", str(FLOAT_MLP), "--data", str(data), "--preset", "performance",
                                       "--method", "rtn", "-o", str(calib)])
    assert result.exit_code == 0, result.output
    assert "speed vs float at" in result.output
    saved = json.loads(calib.read_text())
    assert saved["budget"] == "cosine>=0.99"
    for layer in saved["layers"]:
        measured = saved["speed"][layer["node"]]
        assert set(measured) == {"rows", "ternary", "int4", "int8"}
        if layer["precision"] != "fp32":
            assert measured[layer["precision"]] >= 1.0
    cache = json.loads((tmp_path / "cache" / "layer_speed.json").read_text())
    assert len(cache) == 3 * len({(l["k"], l["n"]) for l in saved["layers"]})


@pytest.mark.parametrize("bad", [None, "x"])
def test_unknown_cache_content_is_measured_again(tmp_path, monkeypatch, bad):
    path = tmp_path / "speed.json"
    path.write_text("not json" if bad is None else json.dumps({"k": bad}))
    monkeypatch.setattr(speed_module, "measure_speedup", lambda *a: 1.25)
    assert LayerSpeed("onnxbit", 1, path)({"precision": "int4"}, 8, 8, 1) == 1.25


def _all_fast(settings, k, n, m):
    return 2.0


def test_int8_activations_are_checked_on_the_converted_model(tmp_path):
    data = tmp_path / "pixels.npz"
    np.savez(data, pixels=PIXELS[:60])
    result = calibrate(str(FLOAT_MLP), str(data), "cosine>=0.995", precisions=("int8",), method="rtn",
                       speed=_all_fast, int8_activations=True)
    lowered = [l for l in result.layers if l.precision != "fp32"]
    assert lowered and result.met
    rules = result.config()["rules"]
    assert rules and all(rule["activations"] == "int8" for rule in rules)
    # What quantize --calibration writes: int8 weights with int8 activations (MatMulInteger),
    # and the held-out value the search reports is the converted model's own.
    from onnxbit.calibration.converted import converted_outputs
    from onnxbit.calibration.data import load_calibration_data
    from onnxbit.convert import convert

    converted = convert(str(FLOAT_MLP), config=result.config(), progress=False, measure_error=False).model
    assert "MatMulInteger" in {node.op_type for node in converted.graph.node}
    split = load_calibration_data(str(data), ["pixels"], None)
    session = ort.InferenceSession(str(FLOAT_MLP), providers=["CPUExecutionProvider"])
    reference = [session.run(None, feed) for feed in split.holdout]
    assert result.holdout_value == pytest.approx(
        result.budget.measure(reference, converted_outputs(str(FLOAT_MLP), result, split.holdout)), abs=1e-9)


def test_a_budget_the_converted_model_misses_raises_layers(tmp_path):
    """int8 weights pass this budget in the float-activation simulation; with
    int8 activations the converted model misses it, so layers go back up."""
    data = tmp_path / "pixels.npz"
    np.savez(data, pixels=PIXELS[:60])
    budget = "max_rel<=0.0045"  # simulated: 0.0040 with every layer int8; converted: 0.0049
    simulated = calibrate(str(FLOAT_MLP), str(data), budget, precisions=("int8",), method="rtn")
    assert any(l.precision == "int8" for l in simulated.layers)
    # Float activations too: the held-out value reported is the converted model's own.
    from onnxbit.calibration.converted import converted_outputs
    from onnxbit.calibration.data import load_calibration_data

    split = load_calibration_data(str(data), ["pixels"], None)
    session = ort.InferenceSession(str(FLOAT_MLP), providers=["CPUExecutionProvider"])
    reference = [session.run(None, feed) for feed in split.holdout]
    assert simulated.holdout_value == pytest.approx(
        simulated.budget.measure(reference, converted_outputs(str(FLOAT_MLP), simulated, split.holdout)), abs=1e-9)
    result = calibrate(str(FLOAT_MLP), str(data), budget, precisions=("int8",), method="rtn",
                       speed=_all_fast, int8_activations=True)
    raised = [a for a in result.adjustments if "converted model, as onnxruntime runs it" in a["why"]]
    assert raised and all(a["to"] == "fp32" for a in raised)
    assert result.met
