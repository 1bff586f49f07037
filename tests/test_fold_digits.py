"""The QAT folding passes inside the full converter on a trained BitNet QAT
MLP (sklearn digits), exported by TorchScript (weight chains kept) and dynamo
(weight chains constant-folded into ternary initializers, Gemm layers)."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxbit.convert as cv
from onnxbit.runtime import InferenceSession

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"


def with_hidden_outputs(model: onnx.ModelProto, names: list[str]) -> bytes:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in names)
    return model.SerializeToString()


@pytest.mark.parametrize("file_name", ["digits_qat_mlp.onnx", "digits_qat_mlp_dynamo.onnx"])
def test_converted_qat_mlp_matches_the_export(file_name):
    path = FIXTURES / file_name
    if not path.is_file():
        pytest.skip(f"{path} has not been exported (models/train_digits_qat.py)")
    original = onnx.load(path)
    result = cv.convert(original, preset="bitnet", target="onnxbit", progress=False, measure_error=False)
    folded = {r.node: r.pass_name for r in result.report.layers if r.action == "folded"}
    converted = [r for r in result.report.layers if r.action == "converted"]
    assert len(converted) == 3 and all("QAT ternary weight" in r.reason for r in converted)
    assert len(folded) == 3
    assert sorted(n.op_type for n in result.model.graph.node) == ["Relu", "Relu", "TernaryMatMul",
                                                                 "TernaryMatMul", "TernaryMatMul"]

    data = np.load(FIXTURES / "digits_test.npz")
    hidden = [n.output[0] for n in original.graph.node if n.op_type == "Relu"]
    expected = ort.InferenceSession(with_hidden_outputs(original, hidden),
                                    providers=["CPUExecutionProvider"]).run(None, {"pixels": data["X_test"]})
    actual = InferenceSession(with_hidden_outputs(result.model, hidden)).run(None, {"pixels": data["X_test"]})
    # Hidden layers agree to float rounding (the op sums integers exactly; the
    # export sums q/s * w in float, in another order).
    for got, want in zip(actual[1:], expected[1:]):
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    # Those last-bit differences can move a pixel-derived activation across an
    # int8 rounding tie at the last quantizer; a flip moves a logit by one
    # quantization step. So: same predictions everywhere, and nearly all rows
    # within 1e-4.
    logits, reference = actual[0], expected[0]
    np.testing.assert_array_equal(logits.argmax(-1), reference.argmax(-1))
    row_error = np.abs(logits - reference).max(-1) / np.abs(reference).max()
    assert (row_error > 1e-4).mean() <= 0.01 and row_error.max() < 2e-3
    recorded = json.loads((FIXTURES / "digits_qat_mlp.json").read_text())
    accuracy = float((logits.argmax(-1) == data["y_test"]).mean())
    assert accuracy == recorded["exports"][file_name]["onnxruntime_test_accuracy"]
