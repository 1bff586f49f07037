"""Binary and b-bit integer quantizers, and the QuantStats definitions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnxbit.quant import QuantResult, QuantStats, quantize_binary, quantize_int, quantize_ternary

GRANULARITY_CASES = [("tensor", None), ("channel", None), ("group", 4), ("group", 7)]
weights = hnp.arrays(np.float32, st.tuples(st.integers(1, 20), st.integers(1, 6)),
                     elements=st.floats(-100, 100, width=32))


def expanded_scales(result: QuantResult, values=None) -> np.ndarray:
    values = result.scales if values is None else values
    return np.broadcast_to(result.layout.expand(values), result.codes.shape)


# --- binary -------------------------------------------------------------------------------------

def test_binary_hand_worked():
    w = np.array([[0.5, -1.0], [0.0, 2.5]], np.float32)
    result = quantize_binary(w)
    # sign(0) -> +1; scale = mean|w| = 4 / 4
    np.testing.assert_array_equal(result.codes, [[1, -1], [1, 1]])
    assert result.codes.dtype == np.int8 and result.scales.shape == (1,)
    assert result.scales[0] == 1.0
    np.testing.assert_array_equal(result.dequantize(), [[1, -1], [1, 1]])
    assert result.kind == "binary" and result.bits == 1


@pytest.mark.parametrize("granularity,group_size", GRANULARITY_CASES)
def test_binary_scale_is_least_squares_per_block(rng, granularity, group_size):
    w = rng.standard_normal((15, 5)).astype(np.float32)
    result = quantize_binary(w, granularity=granularity, group_size=group_size)
    scale = expanded_scales(result)
    q = result.codes.astype(np.float64)
    assert set(np.unique(result.codes)) <= {-1, 1}
    np.testing.assert_array_equal(result.codes, np.where(w < 0, -1, 1))
    # Each block's scale is (w . q) / (q . q) over that block.
    for value in np.unique(scale):
        block = scale == value
        lsq = np.sum(w[block] * q[block]) / np.sum(q[block] ** 2)
        assert value == pytest.approx(lsq, rel=1e-6)


# --- symmetric integers -------------------------------------------------------------------------

def test_symmetric_int4_hand_worked():
    w = np.array([[0.875, -0.3125], [0.125, 0.0]], np.float32)
    result = quantize_int(w, 4)
    # range [-7, 7], scale = 0.875 / 7 = 0.125: codes 7, -2.5 -> -2 (half to even), 1, 0
    assert result.scales[0] == 0.125
    np.testing.assert_array_equal(result.codes, [[7, -2], [1, 0]])
    assert result.codes.dtype == np.int8 and result.zero_points is None


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("granularity,group_size", GRANULARITY_CASES)
def test_symmetric_round_trip_bound_and_range(rng, bits, granularity, group_size):
    w = (rng.standard_normal((23, 6)) * rng.uniform(0.01, 10, 6)).astype(np.float32)
    result = quantize_int(w, bits, granularity=granularity, group_size=group_size)
    top = 2 ** (bits - 1) - 1
    assert result.codes.min() >= -top and result.codes.max() <= top
    scale = expanded_scales(result)
    err = np.abs(w.astype(np.float64) - result.dequantize())
    assert np.all(err <= scale * 0.5 * (1 + 1e-6) + 1e-30)
    # Negating the weight negates the codes (the range is symmetric).
    neg = quantize_int(-w, bits, granularity=granularity, group_size=group_size)
    np.testing.assert_array_equal(neg.codes, -result.codes)
    # max|w| of every block is hit exactly: some code reaches +-top in each block.
    for piece in result.layout.pieces(np.abs(result.codes)):
        assert np.all(piece.max(axis=1) == top)


def test_int2_symmetric_is_ternary_with_absmax_scale(rng):
    w = rng.standard_normal((10, 3)).astype(np.float32)
    result = quantize_int(w, 2)
    assert result.scales[0] == np.abs(w).max()
    np.testing.assert_array_equal(result.codes, np.clip(np.rint(w / np.abs(w).max()), -1, 1))


# --- asymmetric integers ------------------------------------------------------------------------

def test_asymmetric_int4_hand_worked():
    w = np.array([[-1.0, 2.75], [0.0, 0.625]], np.float32)
    result = quantize_int(w, 4, symmetric=False)
    # lo = -1, hi = 2.75, scale = 3.75 / 15 = 0.25, zp = 4; 0.625 / 0.25 = 2.5 -> 2, + 4
    assert result.scales[0] == 0.25
    assert result.zero_points.dtype == np.uint8 and result.zero_points[0] == 4
    np.testing.assert_array_equal(result.codes, [[0, 15], [4, 6]])
    assert result.codes.dtype == np.uint8
    assert result.dequantize()[1, 0] == 0.0


def test_asymmetric_range_always_contains_zero():
    w = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)  # all positive: lo = 0, zp = 0
    result = quantize_int(w, 8, symmetric=False)
    assert result.zero_points[0] == 0 and result.scales[0] == np.float32(4 / 255)
    neg = quantize_int(-w, 8, symmetric=False)  # all negative: hi = 0, zp = 255
    assert neg.zero_points[0] == 255


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("granularity,group_size", GRANULARITY_CASES)
def test_asymmetric_round_trip_bound_and_exact_zero(rng, bits, granularity, group_size):
    w = (rng.standard_normal((23, 6)) + rng.uniform(-2, 2, 6)).astype(np.float32)
    w[rng.random(w.shape) < 0.2] = 0.0
    result = quantize_int(w, bits, symmetric=False, granularity=granularity, group_size=group_size)
    assert result.codes.max() <= 2**bits - 1 and result.zero_points.max() <= 2**bits - 1
    assert result.zero_points.shape == result.scales.shape
    dq = result.dequantize()
    assert np.all(dq[w == 0] == 0.0)  # zero is exactly representable
    scale = expanded_scales(result)
    err = np.abs(w.astype(np.float64) - dq)
    assert np.all(err <= scale * 0.5 * (1 + 1e-5) + 1e-30)


@settings(max_examples=60, deadline=None)
@given(weights, st.sampled_from([2, 4, 8]), st.booleans(), st.sampled_from(GRANULARITY_CASES))
def test_int_round_trip_bound_any_shape(w, bits, symmetric, granularity_case):
    granularity, group_size = granularity_case
    result = quantize_int(w, bits, symmetric=symmetric, granularity=granularity, group_size=group_size)
    dq = result.dequantize()
    assert dq.shape == w.shape and dq.dtype == np.float32
    scale = expanded_scales(result).astype(np.float64)
    err = np.abs(w.astype(np.float64) - dq)
    assert np.all(err <= scale * 0.5 * (1 + 1e-5) + 1e-37)
    assert np.all(dq[w == 0] == 0.0)


def test_all_zero_blocks_get_zero_scale_and_dequantize_to_zero():
    w = np.zeros((8, 3), np.float32)
    w[:, 1] = [1, -2, 3, 0, 0, 0, 0, 0]
    for symmetric in (True, False):
        result = quantize_int(w, 4, symmetric=symmetric, granularity="channel")
        assert result.scales[0] == 0 and result.scales[2] == 0 and result.scales[1] > 0
        np.testing.assert_array_equal(result.dequantize()[:, [0, 2]], 0)


# --- stats --------------------------------------------------------------------------------------

def test_stats_hand_computed():
    w = np.array([[0.25, -0.75], [1.5, 0.0]], np.float32)
    result = quantize_ternary(w)  # codes [[0, -1], [1, 0]], gamma 0.625
    dq = np.array([[0, -0.625], [0.625, 0]])
    err = w - dq  # 0.25, -0.125, 0.875, 0
    stats = result.stats
    assert isinstance(stats, QuantStats)
    assert stats.mse == pytest.approx((0.0625 + 0.015625 + 0.765625) / 4)
    assert stats.mae == pytest.approx((0.25 + 0.125 + 0.875) / 4)
    signal = 0.0625 + 0.5625 + 2.25
    assert stats.sqnr_db == pytest.approx(10 * np.log10(signal / np.sum(err**2)))
    assert stats.cosine == pytest.approx(np.sum(w * dq) / np.sqrt(signal * np.sum(dq**2)))
    # 4 codes at 2 bits + one float32 scale = 40 bits over 4 weights
    assert stats.bits_per_weight == 10.0 and stats.compression_ratio == 3.2


def test_stats_count_scales_and_zero_points(rng):
    w = rng.standard_normal((64, 8)).astype(np.float32)
    grouped = quantize_int(w, 4, symmetric=False, granularity="group", group_size=32)
    # 4 bits + (32-bit scale + 4-bit zero point) / 32 weights
    assert grouped.stats.bits_per_weight == pytest.approx(4 + 36 / 32)
    assert grouped.stats.compression_ratio == pytest.approx(32 / (4 + 36 / 32))
    channel = quantize_binary(w, granularity="channel")
    assert channel.stats.bits_per_weight == pytest.approx(1 + 32 / 64)
    tensor = quantize_ternary(w)
    assert tensor.stats.bits_per_weight == pytest.approx(2 + 32 / w.size)
    assert tensor.stats.to_json()["bits_per_weight"] == tensor.stats.bits_per_weight


def test_stats_of_exact_and_zero_results():
    w = np.zeros((2, 2), np.float32)
    stats = quantize_int(w, 8).stats
    assert stats.mse == 0 and stats.sqnr_db == float("inf") and stats.cosine == 1.0
    exact = quantize_int(np.array([[1.0, -1.0]], np.float32), 2).stats
    assert exact.sqnr_db == float("inf") and exact.cosine == pytest.approx(1.0)


# --- errors -------------------------------------------------------------------------------------

def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"bits must be one of \(2, 4, 8\), got 3"):
        quantize_int(np.ones((2, 2)), 3)
    with pytest.raises(ValueError, match="empty"):
        quantize_binary(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="must be 2-D"):
        quantize_int(np.ones(5), 8)
    w = np.ones((4, 4))
    w[3, 2] = np.inf
    with pytest.raises(ValueError, match=r"1 Inf value; first at \[3, 2\]"):
        quantize_int(w, 8, symmetric=False)
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        quantize_binary(np.ones((4, 4)), granularity="group", group_size=0)
