"""The goal presets (accuracy, balanced, memory, performance): what each
sets, what it does to a real float model in onnxruntime, how `onnxbit
calibrate --preset` uses them, and the bitnet preset under calibration on the
QAT fixtures (identical to converting without calibration)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxbit.cli.main import main
from onnxbit.config import CALIBRATION_PRESETS, preset
from onnxbit.convert import convert

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"
FLOAT_MLP = FIXTURES / "digits_float_mlp.onnx"
PIXELS = np.load(FIXTURES / "digits_test.npz")["X_test"].astype(np.float32)


def _run(model, x):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    from onnxbit import library_path

    options.register_custom_ops_library(library_path())
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _cosine(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def test_goal_presets_say_what_they_set():
    accuracy = preset("accuracy").default
    assert (accuracy.precision, accuracy.granularity, accuracy.activations) == ("int8", "channel", "float")
    balanced = preset("balanced")
    assert (balanced.default.precision, balanced.default.group_size, balanced.default.symmetric) == ("int4", 32, False)
    for position in ("first", "last"):
        settings = balanced.settings_for("x", "MatMul", {position}, 10**5)[0]
        assert (settings.precision, settings.granularity, settings.group_size) == ("int8", "channel", 0)
    memory = preset("memory").default
    assert (memory.precision, memory.granularity, memory.group_size, memory.symmetric) == ("int4", "group", 128, True)
    performance = preset("performance").default
    assert (performance.precision, performance.activations) == ("int8", "int8")
    assert CALIBRATION_PRESETS["accuracy"] == {"budget": "cosine>=0.999", "precisions": ("int8",)}


@pytest.mark.parametrize("name, target, min_cosine, max_ratio", [
    ("accuracy", "onnx", 0.999, 0.27),  # per-channel scales weigh on this small MLP
    ("balanced", "ort", 0.99, 0.22),
    ("memory", "onnx", 0.98, 0.14),
    ("performance", "ort", 0.995, 0.27),
])
def test_goal_preset_on_the_float_mlp(name, target, min_cosine, max_ratio, tmp_path):
    out = tmp_path / f"{name}.onnx"
    result = convert(FLOAT_MLP, preset=name, target=target, output_path=out, progress=False)
    report = result.report
    assert len(report.converted) == 3  # every layer
    assert report.weight_bytes_after / report.weight_bytes_before <= max_ratio
    base, mine = _run(FLOAT_MLP, PIXELS), _run(out, PIXELS)
    assert _cosine(base, mine) >= min_cosine
    assert (base.argmax(1) == mine.argmax(1)).mean() >= 0.98
    precisions = [r.precision for r in report.converted]
    ops = {n.op_type for n in onnx.load(out).graph.node}
    if name == "balanced":
        assert precisions == ["int8", "int4", "int8"]  # first and last layers at int8
    if name == "performance":
        assert "MatMulInteger" in ops  # int8 activations: the integer path measured fastest
    if name == "memory":
        assert set(precisions) == {"int4"}


def test_calibrate_with_a_goal_preset(tmp_path):
    data = tmp_path / "pixels.npz"
    np.savez(data, pixels=PIXELS[:60])
    calib = tmp_path / "calib.json"
    result = CliRunner().invoke(main, ["calibrate", str(FLOAT_MLP), "--data", str(data), "--preset", "accuracy",
                                       "-o", str(calib)])
    assert result.exit_code == 0, result.output
    saved = json.loads(calib.read_text())
    assert saved["budget"] == "cosine>=0.999" and saved["budget_met_on_holdout"]
    assert {layer["precision"] for layer in saved["layers"]} <= {"int8", "fp32"}
    assert set(saved["layers"][0]["sensitivity"]) == {"int8"}
    # --budget overrides the preset's
    result = CliRunner().invoke(main, ["calibrate", str(FLOAT_MLP), "--data", str(data), "--preset", "memory",
                                       "--budget", "cosine>=0.95", "-o", str(calib)])
    assert result.exit_code == 0, result.output
    assert json.loads(calib.read_text())["budget"] == "cosine>=0.95"


@pytest.mark.parametrize("fixture", ["digits_qat_mlp.onnx", "digits_qat_cnn.onnx"])
def test_bitnet_preset_with_calibration_on_qat_fixtures_equals_plain_conversion(fixture, tmp_path):
    model = FIXTURES / fixture
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape][1:]
    x = PIXELS[:40].reshape(40, *shape)
    data = tmp_path / "data.npz"
    np.savez(data, **{name: x})
    calib = tmp_path / "calib.json"
    result = CliRunner().invoke(main, ["calibrate", str(model), "--data", str(data), "--preset", "bitnet",
                                       "-o", str(calib)])
    assert result.exit_code == 0, result.output
    assert json.loads(calib.read_text())["config"]["preset"] == "bitnet"
    plain, calibrated = tmp_path / "plain.onnx", tmp_path / "calibrated.onnx"
    for out, extra in ((plain, ["--preset", "bitnet"]), (calibrated, ["--calibration", str(calib)])):
        result = CliRunner().invoke(main, ["quantize", str(model), str(out), "-q", *extra])
        assert result.exit_code == 0, result.output
    assert calibrated.read_bytes() == plain.read_bytes()
    np.testing.assert_array_equal(_run(calibrated, x), _run(plain, x))
