"""Acceptance on the Hugging Face BitNet exports (online and packed, both
torch.onnx exporters): the converted model computes what the exported graph
computes, at <= 1.7 bits per weight with base3 storage (<= 2.1 with 2bit)."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxbit.convert import convert
from onnxbit.runtime import InferenceSession

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"
EXPORTS = ["bitnet_online_torchscript", "bitnet_online_dynamo", "bitnet_packed_torchscript",
           "bitnet_packed_dynamo"]
BITS_LIMIT = {"base3": 1.7, "2bit": 2.1}


@pytest.fixture(scope="module")
def inputs():
    return np.load(FIXTURES / "bitnet_inputs.npz")


@pytest.mark.parametrize("fmt", sorted(BITS_LIMIT))
@pytest.mark.parametrize("export", EXPORTS)
def test_bitnet_export_converts_exactly(export, fmt, inputs, tmp_path):
    path = FIXTURES / f"{export}.onnx"
    out = tmp_path / "converted.onnx"
    result = convert(path, config={"preset": "bitnet", "default": {"format": fmt}}, output_path=out,
                     progress=False)
    ternary = [r for r in result.report.layers if r.action == "converted" and r.precision == "ternary"]
    assert len(ternary) == 14, [r.to_json() for r in result.report.layers]
    assert all(r.storage == f"TernaryMatMul/{fmt}" for r in ternary)
    assert max(r.bits_per_weight for r in ternary) <= BITS_LIMIT[fmt]
    converted = onnx.load(str(out))
    assert "Round" not in {n.op_type for n in converted.graph.node}  # fake-quant chains gone
    assert all(n.attribute and any(a.name == "act_quant" and a.i == 1 for a in n.attribute)
               for n in converted.graph.node if n.op_type == "TernaryMatMul")

    original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session = InferenceSession(out)
    for index in range(3):
        feeds = {i.name: inputs[f"{i.name}_{index}"] for i in original.get_inputs()}
        expected = original.run(None, feeds)[0]
        actual = session.run(None, feeds)[0]
        assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()
        np.testing.assert_array_equal(actual.argmax(-1), expected.argmax(-1))
