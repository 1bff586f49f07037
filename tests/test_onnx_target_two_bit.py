"""2-bit weights on target onnx compute right in onnxruntime at its default
optimization level. onnxruntime (1.32) fuses 2-bit DequantizeLinear + MatMul
into MatMulNBits and gets per-channel and per-block scales wrong, so those
layouts are written in forms it computes right (targets/dequantize.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from onnxbit.convert import convert
from onnxbit.targets.dequantize import TWO_BIT_CONTAINER_NOTE

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"
FLOAT_MLP = FIXTURES / "digits_float_mlp.onnx"
PIXELS = np.load(FIXTURES / "digits_test.npz")["X_test"].astype(np.float32)[:40]


@pytest.mark.parametrize("settings, storage, note", [
    ({"precision": "ternary", "granularity": "channel"}, "DequantizeLinear/INT2", False),
    ({"precision": "ternary", "granularity": "channel", "act_quant": 1}, "DequantizeLinear/INT2", False),
    ({"precision": "ternary", "granularity": "tensor"}, "DequantizeLinear/INT2", False),
    ({"precision": "binary", "granularity": "channel"}, "DequantizeLinear/INT2", False),
    ({"precision": "int2", "granularity": "channel", "symmetric": True}, "DequantizeLinear/INT2", False),
    ({"precision": "int2", "granularity": "channel", "symmetric": False}, "DequantizeLinear/UINT4", True),
    ({"precision": "int2", "granularity": "group", "group_size": 32, "symmetric": False}, "DequantizeLinear/UINT4",
     True),
    ({"precision": "ternary", "granularity": "group", "group_size": 32}, "DequantizeLinear/INT4", True),
])
def test_two_bit_layers_agree_with_the_onnx_reference_at_default_optimization(settings, storage, note):
    result = convert(str(FLOAT_MLP), config={"float_weights": "quantize", "default": settings}, target="onnx",
                     progress=False, measure_error=False)
    assert {layer.storage for layer in result.report.converted} == {storage}
    assert (TWO_BIT_CONTAINER_NOTE in result.report.notes) == note
    options = ort.SessionOptions()  # default graph optimizations: the fusion runs
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")  # float activations
    session = ort.InferenceSession(result.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixels": PIXELS})[0]
    expected = ReferenceEvaluator(result.model).run(None, {"pixels": PIXELS})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
