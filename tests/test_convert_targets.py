"""Converted models run in onnxruntime (plain for targets ort/onnx, with the
onnxbit library for target onnxbit) and compute x @ dequantized(W): the only
difference from the original is the weight quantization itself."""

import numpy as np
import onnxruntime as ort
import pytest

from onnx_models import mlp
from onnxbit.convert import convert
from onnxbit.quant import quantize_binary, quantize_int, quantize_ternary
from onnxbit.runtime import InferenceSession

CASES = {
    "ternary-tensor": {"precision": "ternary", "granularity": "tensor"},
    "ternary-channel": {"precision": "ternary", "granularity": "channel"},
    "ternary-group16": {"precision": "ternary", "granularity": "group", "group_size": 16},
    "ternary-mse": {"precision": "ternary", "granularity": "channel", "method": "mse"},
    "binary-channel": {"precision": "binary", "granularity": "channel"},
    "int8-channel": {"precision": "int8", "granularity": "channel"},
    "int4-group16-asym": {"precision": "int4", "granularity": "group", "group_size": 16, "symmetric": False},
    "int4-tensor": {"precision": "int4", "granularity": "tensor"},
    "int2-channel-asym": {"precision": "int2", "granularity": "channel", "symmetric": False},
}
EXPECTED_STORAGE = {
    "onnxbit": {"ternary": "TernaryMatMul/base3", "binary": "TernaryMatMul/base3", "int8": "DequantizeLinear/INT8",
                "int4": "MatMulNBits/4bit", "int2": "MatMulNBits/2bit"},
    "ort": {"ternary": "MatMulNBits/2bit", "binary": "MatMulNBits/2bit", "int8": "DequantizeLinear/INT8",
            "int4": "MatMulNBits/4bit", "int2": "MatMulNBits/2bit"},
    "onnx": {"ternary": "DequantizeLinear/INT2", "binary": "DequantizeLinear/INT2", "int8": "DequantizeLinear/INT8",
             "int4": "DequantizeLinear/INT4", "int2": "DequantizeLinear/UINT2"},
}


def dequantized(w, settings):
    group = settings.get("group_size") if settings.get("granularity") == "group" else None
    g = settings.get("granularity", "tensor")
    p = settings["precision"]
    if p == "ternary":
        return quantize_ternary(w, method=settings.get("method", "absmean"), granularity=g, group_size=group).dequantize()
    if p == "binary":
        return quantize_binary(w, granularity=g, group_size=group).dequantize()
    return quantize_int(w, int(p[3:]), symmetric=settings.get("symmetric", True), granularity=g,
                        group_size=group).dequantize()


def run(model, target, feeds):
    options = ort.SessionOptions()
    # onnxruntime fuses DequantizeLinear + MatMul into MatMulNBits and, by
    # default, quantizes its activations to int8; ask for float32 arithmetic.
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    if target == "onnxbit":
        return InferenceSession(model, sess_options=options).run(None, feeds)[0]
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("target", ["onnxbit", "ort", "onnx"])
@pytest.mark.parametrize("case", list(CASES))
def test_output_equals_matmul_with_dequantized_weights(rng, target, case):
    settings = CASES[case]
    model, w = mlp(rng, k=64, hidden=48, n=32)
    result = convert(model, config={"default": settings}, target=target, progress=False)
    layers = {r.node: r for r in result.report.layers}
    assert {n for n, r in layers.items() if r.action == "converted"} == {"fc1", "fc2"}
    expected_storage = EXPECTED_STORAGE[target][settings["precision"]]
    if target == "onnx" and settings["precision"] == "int4" and settings.get("symmetric") is False:
        expected_storage = "DequantizeLinear/UINT4"
    two_bit = settings["precision"] in ("ternary", "binary", "int2")
    if target == "onnx" and two_bit and (settings["granularity"] == "group" or settings.get("symmetric") is False):
        # onnxruntime miscomputes fused 2-bit blocks / zero points: a 4-bit container (targets/dequantize.py)
        expected_storage = "DequantizeLinear/UINT4" if settings.get("symmetric") is False else "DequantizeLinear/INT4"
    assert layers["fc1"].storage == expected_storage
    assert all(r.bytes_after < r.bytes_before / 2.5 for r in layers.values())

    x = rng.standard_normal((5, 64)).astype(np.float32)
    w1 = dequantized(w["W1"], settings)
    w2 = dequantized((w["W2T"].T * np.float32(0.5)).astype(np.float32), settings)
    h = np.maximum(x.astype(np.float64) @ w1, 0)
    expected = h @ w2 + w["C"]
    actual = run(result.model, target, {"x": x})
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= 2e-5 * scale * 48
    # The recorded weight error is the error of exactly these dequantized weights.
    mse = float(np.mean((w["W1"].astype(np.float64) - w1) ** 2))
    assert layers["fc1"].weight_error["mse"] == pytest.approx(mse, rel=1e-4, abs=1e-12)


@pytest.mark.parametrize("fmt", ["2bit", "base3"])
def test_bits_per_weight_counts_codes_and_scales(rng, fmt):
    model, _ = mlp(rng, k=64, hidden=48, n=32)
    cfg = {"default": {"precision": "ternary", "granularity": "channel", "format": fmt}}
    layers = {r.node: r for r in convert(model, config=cfg, progress=False).report.layers}
    row_bytes = {"2bit": 16, "base3": 13}[fmt]  # K = 64
    assert layers["fc1"].bytes_after == 48 * row_bytes + 48 * 4
    assert layers["fc1"].bits_per_weight == pytest.approx(8 * (48 * row_bytes + 48 * 4) / (64 * 48))
    assert layers["fc1"].bytes_before == 64 * 48 * 4


def dynamic_int8_reference(x: np.ndarray, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """DynamicQuantizeLinear (uint8, per tensor, range widened to hold 0) then
    an exact integer product, scaled: what the MatMulInteger path computes."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = np.float32((hi - lo) / 255)
    zero = np.clip(np.rint(-lo / scale), 0, 255)
    x_q = np.clip(np.rint(x / scale) + zero, 0, 255)
    product = (x_q - zero).astype(np.int64) @ codes.astype(np.int64)
    return product.astype(np.float64) * float(scale) * scales.astype(np.float64)


@pytest.mark.parametrize("target", ["onnxbit", "ort", "onnx"])
def test_int8_layers_with_int8_activations_use_matmul_integer(rng, target):
    model, w = mlp(rng, k=64, hidden=48, n=32)
    settings = {"precision": "int8", "granularity": "channel", "activations": "int8"}
    result = convert(model, config={"default": settings}, target=target, progress=False)
    layers = {r.node: r for r in result.report.layers}
    assert layers["fc1"].storage == layers["fc2"].storage == "MatMulInteger/INT8"
    x = rng.standard_normal((5, 64)).astype(np.float32)
    q1 = quantize_int(w["W1"], 8, symmetric=True, granularity="channel")
    h = np.maximum(dynamic_int8_reference(x, q1.codes, q1.scales), 0).astype(np.float32)
    q2 = quantize_int((w["W2T"].T * np.float32(0.5)).astype(np.float32), 8, symmetric=True, granularity="channel")
    expected = dynamic_int8_reference(h, q2.codes, q2.scales) + w["C"]
    actual = run(result.model, target, {"x": x})
    assert np.abs(actual - expected).max() <= 1e-5 * np.abs(expected).max()
    from onnxbit.inspect_model import inspect_model

    seen = {layer.node: layer for layer in inspect_model(result.model).layers}
    assert seen["fc1"].storage == "MatMulInteger/INT8" and seen["fc1"].bytes == layers["fc1"].bytes_after
