"""Every precision of the calibration ladder (binary, ternary, int2, int4,
int8) converts to what the search simulated: the held-out value the search
reports is the converted model's own, run in onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxbit import runtime
from onnxbit.calibration import calibrate
from onnxbit.calibration.data import load_calibration_data
from onnxbit.calibration.result import DEFAULT_PRECISIONS, LADDER, load_calibration, weight_bytes
from onnxbit.convert import convert

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"
FLOAT_MLP = FIXTURES / "digits_float_mlp.onnx"
PIXELS = np.load(FIXTURES / "digits_test.npz")["X_test"].astype(np.float32)


def test_the_ladder_is_ordered_by_size_and_low_bits_are_opt_in():
    sizes = [weight_bytes(p, 4096, 4096) for p in LADDER]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert DEFAULT_PRECISIONS == ("ternary", "int4", "int8")


@pytest.mark.parametrize("precision, target, method", [
    ("binary", "onnxbit", "rtn"), ("int2", "onnx", "gptq"), ("int2", "ort", "rtn"), ("int4", "onnx", "gptq"),
    ("int2", "ort", "gptq"), ("int2", "onnx", "rtn")])
def test_a_calibrated_precision_converts_to_what_was_simulated(precision, target, method, tmp_path):
    data = tmp_path / "pixels.npz"
    np.savez(data, pixels=PIXELS[:50])
    result = calibrate(str(FLOAT_MLP), str(data), "cosine>=0.5", precisions=(precision,), method=method)
    assert any(l.precision == precision for l in result.layers), [l.precision for l in result.layers]
    result.write_json(tmp_path / "calib.json")
    converted = convert(str(FLOAT_MLP), config=load_calibration(tmp_path / "calib.json"), target=target,
                        progress=False, measure_error=False)
    assert len(converted.report.converted) == sum(l.precision != "fp32" for l in result.layers)
    split = load_calibration_data(str(data), ["pixels"])
    original = runtime.InferenceSession(str(FLOAT_MLP))
    session = runtime.InferenceSession(converted.model)
    reference = [original.run(None, feed) for feed in split.holdout]
    outputs = [session.run(None, feed) for feed in split.holdout]
    assert result.budget.measure(reference, outputs) == pytest.approx(result.holdout_value, abs=2e-3)
