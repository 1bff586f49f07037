"""Calibration: per-layer precisions chosen on sample data under a budget,
measured on held-out samples, applied by `quantize --calibration`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxbit.calibration import calibrate, load_calibration_data, parse_budget
from onnxbit.calibration.result import load_calibration, weight_bytes
from onnxbit.cli.main import main
from onnxbit.convert import convert
from onnxbit.errors import ConfigError

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"
MODEL = FIXTURES / "digits_float_mlp.onnx"


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "pixels.npz"
    np.savez(path, pixels=np.load(FIXTURES / "digits_test.npz")["X_test"])
    return path


def test_budgets_parse_and_measure():
    assert str(parse_budget("cosine >= 0.99")) == "cosine>=0.99"
    for bad in ("cosine<=0.9", "accuracy>=1", "cosine>=x"):
        with pytest.raises(ConfigError):
            parse_budget(bad)
    ref = [[np.array([[1.0, 2.0, 3.0]])], [[np.array([[3.0, 2.0, 1.0]])]][0], [np.array([[3.0, 2.0, 1.0]])]]
    same = [[r[0].copy()] for r in ref]
    assert parse_budget("cosine>=0.999").measure(ref, same) == pytest.approx(1.0)
    flipped = [[np.array([[1.0, 2.0, 3.0]])], [np.array([[1.0, 2.0, 3.0]])]]
    assert parse_budget("top1>=0.5").measure(ref, flipped) == 0.5
    assert parse_budget("max_rel<=0.1").measure(ref, flipped) == pytest.approx(2 / 3)


def test_data_from_npz_folder_and_reader(pixels, tmp_path):
    data = load_calibration_data(pixels, ["pixels"], samples=10)
    assert (len(data.calibration), len(data.holdout)) == (8, 2)  # every 5th held out
    (tmp_path / "more").mkdir()
    for i in range(2):
        np.savez(tmp_path / "more" / f"{i}.npz", pixels=np.ones((3, 64), np.float32) * i)
    assert load_calibration_data(tmp_path / "more", ["pixels"]).samples == 6

    class Reader:
        def __init__(self):
            self.left = [{"pixels": np.zeros((1, 64), np.float32)}] * 4

        def get_next(self):
            return self.left.pop() if self.left else None

    assert load_calibration_data(Reader(), ["pixels"]).samples == 4
    with pytest.raises(ConfigError, match="lacks the model inputs \\['x'\\]"):
        load_calibration_data(pixels, ["x"])
    # The batches `onnxbit verify --inputs` reads (NAME_0, NAME_1, ...), of different sizes.
    np.savez(tmp_path / "batches.npz", pixels_0=np.zeros((2, 64), np.float32), pixels_1=np.ones((1, 32), np.float32))
    batches = load_calibration_data(tmp_path / "batches.npz", ["pixels"])
    shapes = [feed["pixels"].shape for feed in batches.calibration + batches.holdout]
    assert sorted(shapes) == [(1, 32), (1, 64), (1, 64)]
    with pytest.raises(ConfigError, match="lacks the model inputs \\['x'\\].*or batches NAME_0"):
        load_calibration_data(tmp_path / "batches.npz", ["x"])
    np.savez(tmp_path / "uneven.npz", pixels_0=np.zeros((2, 64), np.float32), mask_0=np.ones((3, 64), np.float32))
    with pytest.raises(ConfigError, match="batch 0.*same number of samples"):
        load_calibration_data(tmp_path / "uneven.npz", ["pixels", "mask"])


def test_calibration_meets_the_budget_on_held_out_data_and_the_conversion_matches(pixels, tmp_path):
    result = calibrate(MODEL, pixels, "top1>=0.98")
    assert result.met and result.holdout_value >= 0.98
    assert result.size_ratio < 0.3  # most layers went to 4 bits or below
    assert all(set(layer.sensitivity) == {"ternary", "int4", "int8"} for layer in result.layers)
    assert sum(l.weight_bytes() for l in result.layers) < sum(weight_bytes("int8", l.k, l.n) for l in result.layers)

    assert any(l.uses_codes() for l in result.layers)  # GPTQ codes, carried by the codes file
    result.write_json(tmp_path / "calib.json")
    assert (tmp_path / "calib.codes.npz").is_file()
    out = tmp_path / "calibrated.onnx"
    converted = convert(MODEL, config=load_calibration(tmp_path / "calib.json"), target="onnx", output_path=out,
                        progress=False)
    assert not converted.report.flagged  # calibration measured the outputs
    stored = {r.node: r.precision for r in converted.report.layers if r.action == "converted"}
    assert stored == {l.node: l.precision for l in result.layers if l.precision != "fp32"}
    # The converted model computes what calibration measured (float activations).
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    x = np.load(pixels)["pixels"]
    held = x[4::5]
    base = ort.InferenceSession(str(MODEL)).run(None, {"pixels": held})[0]
    mine = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"]).run(None, {"pixels": held})[0]
    assert (base.argmax(1) == mine.argmax(1)).mean() == pytest.approx(result.holdout_value, abs=1e-9)


def test_calibrate_and_quantize_from_the_command_line(pixels, tmp_path):
    calib = tmp_path / "calib.json"
    page = tmp_path / "calib.html"
    result = CliRunner().invoke(main, ["calibrate", str(MODEL), "--data", str(pixels), "--budget", "cosine>=0.999",
                                       "--samples", "60", "-o", str(calib), "--html", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert text.count("<svg") == 2 and "/layers/layers.0/Gemm" in text and "cosine&gt;=0.999" in text
    from html.parser import HTMLParser

    HTMLParser().feed(text)  # parses
    saved = json.loads(calib.read_text())
    assert saved["budget"] == "cosine>=0.999" and saved["budget_met_on_holdout"]
    assert saved["samples"] == {"calibration": 48, "holdout": 12}
    assert saved["trajectory"][0]["size_ratio"] == 1.0
    assert saved["trajectory"][0]["value"] == pytest.approx(1.0)
    assert [p["size_ratio"] for p in saved["trajectory"]] == sorted((p["size_ratio"] for p in saved["trajectory"]),
                                                                    reverse=True)
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(main, ["quantize", str(MODEL), str(out), "--calibration", str(calib), "-q"])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = CliRunner().invoke(main, ["quantize", str(MODEL), str(out), "--calibration", str(bad)])
    assert result.exit_code != 0 and "holds no 'config'" in result.output


def test_ternary_threshold_rule_is_chosen_by_output_error(pixels):
    from onnxbit.calibration.search import TERNARY_METHODS

    result = calibrate(MODEL, pixels, "cosine>=0.9", samples=40, method="rtn")
    for layer in result.layers:
        assert set(layer.method_errors) == set(TERNARY_METHODS)
        assert layer.sensitivity["ternary"] == min(layer.method_errors.values())
        assert layer.method_errors[layer.ternary_method] == layer.sensitivity["ternary"]
    # With the activations' X^T X known, the layer's own output error picks the rule.
    # Every threshold rule x scale rule x granularity is tried that way (no model runs).
    from onnxbit.calibration.search import TERNARY_CANDIDATES

    compensated = calibrate(MODEL, pixels, "cosine>=0.9", samples=40)
    for layer in compensated.layers:
        assert set(layer.method_errors) == {"/".join(c) for c in TERNARY_CANDIDATES}
        assert all(0 < e < 1 for e in layer.method_errors.values())
        chosen = f"{layer.ternary_method}/{layer.ternary_scale}/{layer.ternary_granularity}"
        assert layer.method_errors[chosen] == min(layer.method_errors.values())
        assert layer.sensitivity["ternary"] > 0
    ternary_rules = [r for r in compensated.config("calib.codes.npz")["rules"] if r["precision"] == "ternary"]
    for rule in ternary_rules:
        assert (rule["method"], rule["scale"], rule["granularity"]) in TERNARY_CANDIDATES


def test_the_chosen_ternary_settings_convert_to_what_was_measured(pixels):
    """A calibrated ternary layer's rule (method, scale, granularity) gives the
    converted model the weights the search simulated: its held-out value is
    the one the search reported."""
    from onnxbit import runtime
    from onnxbit.calibration.data import load_calibration_data
    from onnxbit.convert import convert

    result = calibrate(MODEL, pixels, "cosine>=0.5", samples=40, precisions=("ternary",))
    chosen = {(l.ternary_scale, l.ternary_granularity) for l in result.layers if l.precision == "ternary"}
    assert chosen
    converted = convert(MODEL, config=result.config(), target="onnx", progress=False, measure_error=False).model
    split = load_calibration_data(pixels, ["pixels"], 40)
    original, session = runtime.InferenceSession(str(MODEL)), runtime.InferenceSession(converted)
    reference = [original.run(None, feed) for feed in split.holdout]
    outputs = [session.run(None, feed) for feed in split.holdout]
    assert result.budget.measure(reference, outputs) == pytest.approx(result.holdout_value, abs=1e-5)
