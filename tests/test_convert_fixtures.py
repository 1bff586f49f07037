"""End to end on the exported fixtures in models/fixtures/: BitNet QAT exports
(folded, then packed from the proven codes) and a float MLP (post-training)."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxbit.convert import convert
from onnxbit.runtime import InferenceSession

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"


def fixture(name):
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"{path} is not generated yet (models/ export scripts)")
    return path


def bitnet_feeds(model_path, index):
    inputs = np.load(fixture("bitnet_inputs.npz"))
    names = [i.name for i in onnx.load(model_path, load_external_data=False).graph.input]
    return {name: inputs[f"{name}_{index}"] for name in names}


@pytest.mark.parametrize("name", ["bitnet_online_torchscript.onnx", "bitnet_packed_dynamo.onnx"])
def test_bitnet_export_converts_to_ternary_matmul_with_the_same_logits(name, tmp_path):
    path = fixture(name)
    out_path = tmp_path / "model.obx.onnx"
    result = convert(path, preset="bitnet", target="onnxbit", output_path=out_path, progress=False)
    converted = [r for r in result.report.layers if r.action == "converted"]
    assert len(converted) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    assert all(r.storage == "TernaryMatMul/base3" and "exact codes" in r.reason for r in converted)
    kinds = {n.op_type for n in result.model.graph.node}
    assert "TernaryMatMul" in kinds and "Round" not in kinds  # the fake-quant chains are gone
    assert result.report.model_bytes_after < 0.7 * result.report.model_bytes_before
    original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    packed = InferenceSession(out_path)
    for index in range(3):
        feeds = bitnet_feeds(path, index)
        expected = original.run(None, feeds)[0]
        actual = packed.run(None, feeds)[0]
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_bitnet_export_on_stock_onnxruntime_target(tmp_path):
    path = fixture("bitnet_online_dynamo.onnx")
    result = convert(path, preset="bitnet", target="ort", progress=False)
    assert {r.storage for r in result.report.layers if r.action == "converted"} == {"MatMulNBits/2bit"}
    assert any("accuracy_level=4" in note for note in result.report.notes)
    session = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = bitnet_feeds(path, 1)
    expected = original.run(None, feeds)[0]
    actual = session.run(None, feeds)[0]
    # Per-block instead of per-token int8 activations: close, not identical.
    assert np.abs(actual - expected).max() < 0.05 * np.abs(expected).max()


def run_digits(model, target, x):
    if target == "onnxbit":
        return InferenceSession(model).run(None, {"pixels": x})[0]
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]).run(None, {"pixels": x})[0]


# Post-training conversion of the float digits MLP (97.1 % test accuracy):
# accuracy may drop by at most this much per recipe.
PTQ_ACCURACY_DROP = {("int8", "ort"): 0.005, ("int4", "onnx"): 0.02, ("ternary", "onnxbit"): 0.08}


@pytest.mark.parametrize("preset, target", list(PTQ_ACCURACY_DROP))
def test_float_digits_mlp_post_training(preset, target):
    path = fixture("digits_float_mlp.onnx")
    data = np.load(fixture("digits_test.npz"))
    x, labels = data["X_test"], data["y_test"]
    result = convert(path, preset=preset, target=target, progress=False)
    converted = [r for r in result.report.layers if r.action == "converted"]
    assert len(converted) == (2 if preset == "ternary" else 3)  # ternary keeps the output layer float
    baseline = (run_digits(path, "ort", x).argmax(1) == labels).mean()
    accuracy = (run_digits(result.model, target, x).argmax(1) == labels).mean()
    assert accuracy >= baseline - PTQ_ACCURACY_DROP[preset, target]


@pytest.mark.parametrize("target", ["onnxbit", "ort", "onnx"])
def test_qat_digits_mlp_is_lossless_on_every_target(target):
    path = fixture("digits_qat_mlp.onnx")
    x = np.load(fixture("digits_test.npz"))["X_test"]
    result = convert(path, preset="bitnet", target=target, progress=False)
    converted = [r for r in result.report.layers if r.action == "converted"]
    assert len(converted) == 3 and all(r.precision == "ternary" for r in converted)  # proven codes beat "last"
    expected = run_digits(path, "ort", x)
    np.testing.assert_allclose(run_digits(result.model, target, x), expected, rtol=0,
                               atol=1e-5 * np.abs(expected).max())


def test_the_default_preset_keeps_a_float_model_float_and_says_what_to_run():
    path = fixture("digits_float_mlp.onnx")
    result = convert(path, progress=False)
    assert not result.report.converted
    assert {r.reason for r in result.report.skipped} == {"kept float (float weight, not proven ternary by a QAT fold)",
                                                        "kept float (rule 0: position=last)"}
    note = next(n for n in result.report.notes if "float layer(s) kept float" in n)
    assert "--preset int8" in note and "the bitnet preset converts only layers a QAT fold proves ternary" in note
    assert result.model.SerializeToString() == onnx.load(str(path)).SerializeToString()


def test_post_training_ternary_is_flagged_and_strict_refuses_it(tmp_path):
    from onnxbit.errors import LayerError

    path = fixture("digits_float_mlp.onnx")
    result = convert(path, preset="ternary", progress=False)
    flagged = result.report.flagged
    assert flagged and all(r.weight_error["sqnr_db"] < 15 for r in flagged)
    assert result.report.to_json()["summary"]["layers_flagged"] == len(flagged)
    assert not convert(path, preset="int8", progress=False).report.flagged
    out = tmp_path / "o.onnx"
    with pytest.raises(LayerError, match="--strict: .* layer\\(s\\) lost much accuracy"):
        convert(path, preset="ternary", output_path=out, progress=False, strict=True)
    assert not out.exists()
