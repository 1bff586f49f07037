"""GPTQ error compensation (onnxbit.quant.gptq) and the codes file that
carries its codes from calibration to conversion (onnxbit.calibration.codes)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxbit.calibration.codes import codes_bytes, weight_digest
from onnxbit.convert import convert
from onnxbit.errors import OnnxbitError
from onnxbit.quant import quantize_int
from onnxbit.quant.gptq import hessian, quantize_int_gptq

SETTINGS = [
    (4, dict(symmetric=False, granularity="group", group_size=32)),
    (4, dict(symmetric=True, granularity="group", group_size=64)),
    (4, dict(symmetric=True, granularity="channel")),
    (8, dict(symmetric=True, granularity="channel")),
    (2, dict(symmetric=False, granularity="group", group_size=32)),
]


def correlated_inputs(rows=1500, k=192, rank=24, seed=0):
    """Activations that live mostly in one low-dimensional subspace (the same
    for every seed), as a transformer layer's inputs do; `seed` draws the rows."""
    basis = np.random.default_rng(100).standard_normal((rank, k))
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, rank)) @ basis + 0.05 * rng.standard_normal((rows, k))).astype(np.float32)


@pytest.mark.parametrize("bits, settings", SETTINGS)
def test_gptq_cuts_the_output_error_of_round_to_nearest(bits, settings):
    x = correlated_inputs()
    w = np.random.default_rng(1).standard_normal((x.shape[1], 48)).astype(np.float32)
    rtn = quantize_int(w, bits, **settings)
    gptq = quantize_int_gptq(w, hessian(x), bits, **settings)
    held_out = correlated_inputs(rows=400, seed=7)  # same subspace, other rows
    error = {name: float(np.linalg.norm(held_out @ (w - q.dequantize()))) for name, q in
             (("rtn", rtn), ("gptq", gptq))}
    assert error["gptq"] < 0.6 * error["rtn"], error
    # An ordinary quantized weight: same layout, code range and types as round to nearest.
    assert gptq.codes.dtype == rtn.codes.dtype and gptq.codes.shape == rtn.codes.shape
    assert gptq.scales.shape == rtn.scales.shape and gptq.scales.dtype == np.float32
    assert (gptq.zero_points is None) == (rtn.zero_points is None)
    low, high = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if settings["symmetric"] else (0, 2**bits - 1)
    assert gptq.codes.min() >= low and gptq.codes.max() <= high


def test_uncorrelated_inputs_give_round_to_nearest_exactly():
    """With X^T X diagonal no error is worth spreading: the codes, scales and
    zero points are quantize_int's."""
    w = np.random.default_rng(2).standard_normal((96, 40)).astype(np.float32)
    h = np.diag(np.random.default_rng(3).uniform(0.5, 2.0, 96))
    for bits, settings in SETTINGS:
        rtn, gptq = quantize_int(w, bits, **settings), quantize_int_gptq(w, h, bits, **settings)
        np.testing.assert_array_equal(gptq.codes, rtn.codes)
        np.testing.assert_array_equal(gptq.scales, rtn.scales)
        if rtn.zero_points is not None:
            np.testing.assert_array_equal(gptq.zero_points, rtn.zero_points)


def test_inputs_that_are_always_zero_and_bad_input():
    x = correlated_inputs(k=64)
    x[:, 5] = 0.0
    w = np.random.default_rng(4).standard_normal((64, 16)).astype(np.float32)
    q = quantize_int_gptq(w, hessian(x), 4, symmetric=True, granularity="channel")
    assert np.isfinite(q.dequantize()).all()
    with pytest.raises(ValueError, match="must be \\[64, 64\\]"):
        quantize_int_gptq(w, np.eye(32), 4)
    with pytest.raises(ValueError, match="granularity 'channel' or 'group'"):
        quantize_int_gptq(w, np.eye(64), 4, granularity="tensor")
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_int_gptq(w, np.full((64, 64), np.nan), 4)


def _matmul_model(w: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", w.shape[1]])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("target", ["onnx", "ort"])
def test_conversion_stores_the_codes_file_and_computes_with_them(tmp_path, target):
    x = correlated_inputs(k=128)
    w = np.random.default_rng(5).standard_normal((128, 32)).astype(np.float32)
    gptq = quantize_int_gptq(w, hessian(x), 4, symmetric=False, granularity="group", group_size=32)
    codes = tmp_path / "c.codes.npz"
    codes.write_bytes(codes_bytes({"w": (gptq, weight_digest(w))}))
    model = tmp_path / "m.onnx"
    onnx.save(_matmul_model(w), model)
    rule = {"match": {"name": "proj"}, "precision": "int4", "granularity": "group", "group_size": 32,
            "symmetric": False, "codes": str(codes)}
    config = {"default": {"precision": "fp32"}, "rules": [rule]}
    out = tmp_path / "out.onnx"
    convert(model, config=config, target=target, output_path=out, progress=False)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    got = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"]).run(None, {"x": x[:64]})[0]
    np.testing.assert_allclose(got, x[:64] @ gptq.dequantize(), rtol=1e-4, atol=1e-3)
    rounded = x[:64] @ quantize_int(w, 4, symmetric=False, granularity="group", group_size=32).dequantize()
    assert np.linalg.norm(got - x[:64] @ w) < 0.6 * np.linalg.norm(rounded - x[:64] @ w)

    # Codes computed from other weights, or for other settings, are refused by name.
    other = tmp_path / "other.onnx"
    onnx.save(_matmul_model(w + 1.0), other)
    with pytest.raises(OnnxbitError, match="layer 'proj'.*weight 'w' differs from the one calibration quantized"):
        convert(other, config=config, target=target, output_path=tmp_path / "x.onnx", progress=False)
    wrong = {**config, "rules": [{**rule, "group_size": 64}]}
    with pytest.raises(OnnxbitError, match="do not fit the layer's settings"):
        convert(model, config=wrong, target=target, output_path=tmp_path / "x.onnx", progress=False)
    missing = {**config, "rules": [{**rule, "codes": str(tmp_path / "nope.npz")}]}
    with pytest.raises(OnnxbitError, match="does not exist"):
        convert(model, config=missing, target=target, output_path=tmp_path / "x.onnx", progress=False)
    (tmp_path / "bad.npz").write_bytes(b"not a zip file")
    bad = {**config, "rules": [{**rule, "codes": str(tmp_path / "bad.npz")}]}
    with pytest.raises(OnnxbitError, match="is not a readable .npz file"):
        convert(model, config=bad, target=target, output_path=tmp_path / "x.onnx", progress=False)
