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
    assert all(r.storage == "TernaryMatMul/2bit" and "proven codes" in r.reason for r in converted)
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


@pytest.mark.parametrize("preset, target", [("int8", "ort"), ("int4", "onnx"), ("bitnet", "onnxbit")])
def test_float_mlp_post_training(preset, target):
    path = fixture("digits_float_mlp.onnx")
    result = convert(path, preset=preset, target=target, progress=False)
    assert result.report.converted
    model = onnx.load(path)
    inp = model.graph.input[0]
    dims = [d.dim_value or 4 for d in inp.type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    expected = ort.InferenceSession(str(path)).run(None, {inp.name: x})[0]
    session = (InferenceSession(result.model) if target == "onnxbit"
               else ort.InferenceSession(result.model.SerializeToString()))
    actual = session.run(None, {inp.name: x})[0]
    assert actual.shape == expected.shape
    tolerance = {"int8": 0.05, "int4": 0.3, "bitnet": 1.0}[preset]
    assert np.abs(actual - expected).max() <= tolerance * np.abs(expected).max()


def test_bitnet_export_on_standard_onnx_target_keeps_per_token_activations():
    path = fixture("bitnet_packed_torchscript.onnx")
    result = convert(path, preset="bitnet", target="onnx", progress=False)
    assert {r.storage for r in result.report.layers if r.action == "converted"} == {"DequantizeLinear/INT2"}
    assert {o.domain: o.version for o in result.model.opset_import}[""] == 25
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("DequantizeLinear") == 14 and ops.count("ReduceMax") >= 14  # the per-token chain, in std ops
    session = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = bitnet_feeds(path, 2)
    expected = original.run(None, feeds)[0]
    np.testing.assert_allclose(session.run(None, feeds)[0], expected, rtol=0, atol=1e-5 * np.abs(expected).max())
