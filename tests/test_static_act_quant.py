"""act_quant = 2: int8 activations with one fixed, calibrated scale (act_scale).

The C quantizer of every ISA (forced with the isa fixture) against the numpy
reference bit for bit, through the cffi handle (every compute path) and a
real onnxruntime session; saturation, NaN rows, and the numpy reference of
the op itself."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from onnxbit import runtime
from onnxbit.ops.reference import CUSTOM_OPS
from onnxbit.reference.ternary_matmul import (ACT_INT8_STATIC, quantize_activations,
                                              quantize_activations_static,
                                              ternary_matmul_reference)
from onnxbit.tmatmul import ACT_INT8_TOKEN, TernaryWeights
from onnxbit.reference.ternary_conv import ternary_conv_reference
from op_models import pack_codes, random_scales, ternary_conv_model, ternary_matmul_model
from test_op_ternary_conv import CASES as CONV_CASES
from test_op_ternary_conv import _case as conv_case


def _weights(rng, k, n, scale_kind="channel", group_size=0, fmt="2bit"):
    codes = rng.integers(-1, 2, size=(k, n)).astype(np.int8)
    scales = random_scales(rng, scale_kind, k, n, group_size)
    return codes, scales, TernaryWeights(pack_codes(codes, fmt), k, n, scales, fmt, group_size)


# (m, k, n, scales, group size): M spans the single-row lookup (1..5), the
# many-row lookup (8, 16, 130) and the multiply kernel's leftovers; K spans the
# 32-wide SIMD step and its scalar tail; groups on and off chunk boundaries.
CASES = [
    (1, 1, 1, "tensor", 0),
    (1, 4096, 257, "channel", 0),
    (3, 255, 64, "channel", 0),
    (8, 4097, 33, "tensor", 0),
    (17, 255, 3, "group", 7),
    (16, 64, 257, "group", 32),
    (130, 100, 31, "channel", 0),
]


@pytest.mark.parametrize("m,k,n,scale_kind,group_size", CASES)
def test_compute_matches_reference_on_every_isa(isa, rng, m, k, n, scale_kind, group_size):
    codes, scales, weights = _weights(rng, k, n, scale_kind, group_size)
    # Heavy tails, so a fixed clip threshold saturates some values at both ends.
    a = (rng.laplace(size=(m, k)) * 2).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    act_scale = np.float32(127.0 / 3.0)
    expected = ternary_matmul_reference(a, codes, scales, group_size, ACT_INT8_STATIC, bias,
                                        act_scale=act_scale)
    y = weights.matmul(a, ACT_INT8_STATIC, bias, act_scale=act_scale)
    np.testing.assert_array_equal(y, expected)
    # The path is the per-token mode's: only the quantizer differs.
    assert weights.compute_path(m, ACT_INT8_STATIC) == weights.compute_path(m, ACT_INT8_TOKEN)


def test_saturates_at_the_int8_range_and_rounds_half_to_even(isa, rng):
    k = 70  # two SIMD steps of 32 and a scalar tail
    a = np.zeros((1, k), np.float32)
    a[0, :8] = [0.5, 1.5, 2.5, -0.5, -2.5, 127.4, 200.0, -300.0]
    a[0, 40:44] = [126.5, -127.5, -128.5, 1e30]  # same values in the SIMD body
    a[0, 66:70] = [126.5, -127.5, -128.5, -1e30]  # and in the tail
    q, _, finite = quantize_activations_static(a, 1.0)
    assert finite[0]
    assert list(q[0, :8]) == [0, 2, 2, 0, -2, 127, 127, -128]
    assert list(q[0, 40:44]) == [126, -128, -128, 127]
    assert list(q[0, 66:70]) == [126, -128, -128, -128]
    # Identity weights read q back out exactly: y = q / act_scale.
    codes = np.eye(k, dtype=np.int8)
    weights = TernaryWeights(pack_codes(codes, "2bit"), k, k, np.ones(1, np.float32), "2bit")
    y = weights.matmul(a, ACT_INT8_STATIC, act_scale=1.0)
    np.testing.assert_array_equal(y[0], q[0].astype(np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 37, 69])
def test_a_non_finite_row_gives_a_nan_row(isa, rng, bad, where):
    codes, scales, weights = _weights(rng, 70, 9)
    a = rng.standard_normal((3, 70)).astype(np.float32)
    a[1, where] = bad
    y = weights.matmul(a, ACT_INT8_STATIC, act_scale=20.0)
    assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()
    np.testing.assert_array_equal(
        y, ternary_matmul_reference(a, codes, scales, 0, ACT_INT8_STATIC, act_scale=20.0))


@pytest.mark.parametrize("act_scale", [0.0, -1.0, float("nan"), float("inf")])
def test_compute_refuses_a_bad_scale(rng, act_scale):
    _, _, weights = _weights(rng, 8, 4)
    with pytest.raises(ValueError, match="needs a finite act_scale > 0"):
        weights.matmul(np.ones((1, 8), np.float32), ACT_INT8_STATIC, act_scale=act_scale)
    with pytest.raises(ValueError, match="act_scale must be finite and > 0"):
        quantize_activations_static(np.ones((1, 8), np.float32), act_scale)


def test_static_scale_equal_to_the_token_scale_gives_the_token_result(rng):
    """Mode 2 with each row's own absmax scale is mode 1: the same q, kernels, epilogue."""
    codes, scales, weights = _weights(rng, 300, 40)
    a = rng.standard_normal((1, 300)).astype(np.float32)
    q_token, s, _ = quantize_activations(a)
    q_static, _, _ = quantize_activations_static(a, s[0])
    np.testing.assert_array_equal(q_token, q_static)
    np.testing.assert_array_equal(weights.matmul(a, ACT_INT8_STATIC, act_scale=float(s[0])),
                                  weights.matmul(a, ACT_INT8_TOKEN))


@pytest.mark.parametrize("m,k,n,scale_kind,group_size", CASES[:5])
@pytest.mark.parametrize("threads", [1, 2])
def test_onnxruntime_session_matches_reference_on_every_isa(isa, rng, m, k, n, scale_kind,
                                                            group_size, threads):
    codes = rng.integers(-1, 2, size=(k, n)).astype(np.int8)
    scales = random_scales(rng, scale_kind, k, n, group_size)
    bias = rng.standard_normal(n).astype(np.float32)
    act_scale = 127.0 / 2.5
    op = ternary_matmul_model(codes, scales, bias, group_size=group_size, act_quant=2,
                              act_scale=act_scale)
    a = rng.standard_normal((m, k)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    y = runtime.InferenceSession(op.model, sess_options=options).run(None, op.feeds(a))[0]
    expected = ternary_matmul_reference(a, codes, scales, group_size, ACT_INT8_STATIC, bias,
                                        act_scale=act_scale)
    np.testing.assert_array_equal(y, expected)
    # The op's own numpy reference (onnx ReferenceEvaluator) agrees bit for bit.
    np.testing.assert_array_equal(
        ReferenceEvaluator(op.model, new_ops=CUSTOM_OPS).run(None, op.feeds(a))[0], y)


def test_reference_evaluator_checks_act_scale(rng):
    codes = rng.integers(-1, 2, size=(8, 4)).astype(np.int8)
    op = ternary_matmul_model(codes, np.ones(1, np.float32), act_quant=2)
    with pytest.raises(ValueError, match="act_scale is missing"):
        ReferenceEvaluator(op.model, new_ops=CUSTOM_OPS).run(None, op.feeds(np.ones((1, 8), np.float32)))


# The im2col path (obx_tmm_compute_scaled per tile) and the direct depthwise
# kernel (its window scales replaced by act_scale), on every ISA.
@pytest.mark.parametrize("name", ["3x3_pad1", "1d", "groups", "grouped_scales", "depthwise",
                                  "depthwise_stride2_mult2", "depthwise_dilated_1d", "depthwise_grouped_scales"])
def test_ternary_conv_matches_reference_on_every_isa(isa, rng, name):
    assert name in CONV_CASES
    codes, scales, bias, x, attrs, group_size = conv_case(rng, name)
    x[..., 0] *= 8  # some values beyond the clip threshold
    if name == "depthwise":
        x[0, 3, 5, 5] = np.nan  # a window holding NaN gives NaN
    act_scale = 127.0 / 4.0
    op = ternary_conv_model(codes, scales, bias, group_size=group_size, act_quant=2, act_scale=act_scale,
                            conv_attrs=attrs)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    y = runtime.InferenceSession(op.model, sess_options=options).run(None, op.feeds(x))[0]
    expected = ternary_conv_reference(x, codes, scales, weight_shape=codes.shape, group=attrs.get("group", 1),
                                      group_size=group_size, act_quant=2, bias=bias, strides=attrs.get("strides"),
                                      pads=attrs.get("pads"), dilations=attrs.get("dilations"),
                                      auto_pad=attrs.get("auto_pad", "NOTSET"), act_scale=act_scale)
    np.testing.assert_array_equal(y, expected)
    if name == "depthwise":
        assert np.isnan(y[0, 3]).any() and not np.isnan(y[0, 4]).any()
    evaluated = ReferenceEvaluator(op.model, new_ops=CUSTOM_OPS).run(None, op.feeds(x))[0]
    np.testing.assert_array_equal(evaluated, expected)


# A static scale can take x * act_scale far past the int8 range (a per-row
# absmax scale never does): values around -1.5 * 2^23 and beyond must clamp
# to -128, not wrap; Inf and NaN make their windows NaN, on the channels-last
# and depthwise paths alike.
@pytest.mark.parametrize("name", ["3x3_pad1", "depthwise"])
def test_ternary_conv_static_scale_far_values_and_non_finite(isa, rng, name):
    codes, scales, bias, x, attrs, group_size = conv_case(rng, name)
    act_scale = 127.0 / 4.0
    far = np.float32([-1e30, -3e8, -2e7, -1.3e7, -4e6, 4e6, 2e7, 3e8, 1e30]) / np.float32(act_scale)
    flat = x.reshape(-1)
    flat[: far.size] = far
    flat[far.size: 2 * far.size] = -far[::-1]
    x[0, 1, 6, 6] = np.inf
    x[-1, -1, 2, 3] = np.nan
    op = ternary_conv_model(codes, scales, bias, group_size=group_size, act_quant=2, act_scale=act_scale,
                            conv_attrs=attrs)
    y = runtime.InferenceSession(op.model).run(None, op.feeds(x))[0]
    expected = ternary_conv_reference(x, codes, scales, weight_shape=codes.shape, group=attrs.get("group", 1),
                                      group_size=group_size, act_quant=2, bias=bias, strides=attrs.get("strides"),
                                      pads=attrs.get("pads"), dilations=attrs.get("dilations"),
                                      auto_pad=attrs.get("auto_pad", "NOTSET"), act_scale=act_scale)
    np.testing.assert_array_equal(y, expected)
    assert np.isnan(y).any() and not np.isnan(y).all()
