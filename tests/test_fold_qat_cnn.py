"""The committed ternary-QAT CNN (models/train_digits_qat_cnn.py): its
convolutions' absmean weight chains fold to the exact ternary codes the
exported graph computes, on every target, and the test accuracy does not
change by a single sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import onnxbit
from onnxbit.convert import convert
from onnxbit.inspect_model import inspect_model
from onnxbit.verify_model import verify_model

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"
MODEL = FIXTURES / "digits_qat_cnn.onnx"


@pytest.fixture(scope="module")
def test_split():
    data = np.load(FIXTURES / "digits_test.npz")
    return data["X_test"], data["y_test"]


@pytest.mark.parametrize("target", ["onnxbit", "ort", "onnx"])
def test_qat_cnn_folds_exactly_and_keeps_every_prediction(test_split, target):
    x, y = test_split
    original = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"]).run(None, {"pixels": x})[0]
    recorded = json.loads((FIXTURES / "digits_qat_cnn.json").read_text())["test_accuracy"]
    assert float((original.argmax(1) == y).mean()) == pytest.approx(recorded)

    result = convert(MODEL, target=target, progress=False)
    convs = [r for r in result.report.layers if r.op_type == "Conv" and r.action == "converted"]
    assert len(convs) == 3
    for record in convs:
        assert record.precision == "ternary"
        assert record.weight_error["mse"] == 0.0  # the fold's codes * scales are the graph's weight
    # On target onnxbit the two per-pixel-folded convs run TernaryConv act_quant=3; the first one, on float
    # pixels, onnxruntime's Conv on its folded INT2 weight (faster than TernaryConv's float path).
    expected = ["Cast+Mul/INT2", "TernaryConv/base3", "TernaryConv/base3"] if target == "onnxbit" else \
        ["Cast+Mul/INT2"] * 3
    assert [record.storage for record in convs] == expected
    assert {r.node for r in result.report.layers if r.action == "folded"} == {r.node for r in convs}
    converted = onnxbit.InferenceSession(result.model).run(None, {"pixels": x})[0]
    np.testing.assert_array_equal(converted.argmax(1), original.argmax(1))
    # Float sums in another order; int8 activation rounding amplifies the rare tie.
    assert np.abs(converted - original).max() < 0.05
    shown = {layer.node: layer.storage for layer in inspect_model(result.model).layers}
    assert all(shown[record.node] == record.storage for record in convs)
    # The per-pixel activation fake-quant in front of the second and third conv: folded into
    # TernaryConv act_quant=3 on target onnxbit (no float ops left), kept as standard ops elsewhere.
    fake_quant = {"Abs", "ReduceMax", "Round", "Reciprocal", "Div"}
    ops = [node.op_type for node in result.model.graph.node]
    if target == "onnxbit":
        assert not fake_quant & set(ops), ops
        act_quant = {node.name: next((a.i for a in node.attribute if a.name == "act_quant"), 0)
                     for node in result.model.graph.node if node.op_type == "TernaryConv"}
        assert sorted(act_quant.values()) == [3, 3]
        inspected = {layer.node: layer.details for layer in inspect_model(result.model).layers}
        assert {name: inspected[name]["act_quant"] for name in act_quant} == act_quant  # inspect shows it
        report = verify_model(result.model)
        assert report.ok and not [f for f in report.findings if "act_quant" in f.message], report.findings
        # Its dense act_quant=3 conv is one of the paths slower than fp32 Conv on wide layers: said so.
        from onnxbit.targets.ternary_conv import PER_PIXEL_DENSE_NOTE

        assert PER_PIXEL_DENSE_NOTE in result.report.notes
    else:
        assert ops.count("ReduceMax") == 2


def test_qat_cnn_shrinks(tmp_path):
    out = tmp_path / "cnn.onnx"
    result = convert(MODEL, target="onnxbit", output_path=out, progress=False)
    before = sum(r.bytes_before for r in result.report.converted)
    after = sum(r.bytes_after for r in result.report.converted)
    assert after * 10 < before
    assert result.report.model_bytes_after == out.stat().st_size < MODEL.stat().st_size


def test_a_folded_conv_kept_float_gets_its_per_pixel_chain_back(test_split):
    """A rule keeping a per-pixel-folded conv float restores its activation
    fake-quant (axis 1, q / s before the Conv) in standard ops."""
    x, _ = test_split
    config = {"default": {"precision": "ternary"},
              "rules": [{"match": {"position": "last"}, "precision": "fp32"},
                        {"match": {"name": "/features/features.2/Conv"}, "precision": "fp32"}]}
    result = convert(MODEL, config=config, target="onnxbit", progress=False)
    ops = [node.op_type for node in result.model.graph.node]
    # the kept conv, and the first one on its folded INT2 weight (float pixels in)
    assert ops.count("ReduceMax") == 1 and ops.count("Conv") == 2 and ops.count("TernaryConv") == 1
    original = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"]).run(None, {"pixels": x})[0]
    converted = onnxbit.InferenceSession(result.model).run(None, {"pixels": x})[0]
    np.testing.assert_array_equal(converted.argmax(1), original.argmax(1))
    assert np.abs(converted - original).max() < 0.05
