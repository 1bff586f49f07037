"""The per-layer weight error statistics agree with a direct float64
computation in every layout the pack pass hands them (weight and codes each
contiguous or a transposed view), and the tiled copy behind them is exact."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxbit.passes.pack_weights import _tiled_contiguous, _weight_error
from onnxbit.targets.base import PackedWeight, QuantizedWeight


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 200), cols=st.integers(1, 200), transposed=st.booleans(), tile=st.integers(1, 80))
def test_tiled_contiguous_copies_exactly(rows, cols, transposed, tile):
    base = np.arange(rows * cols, dtype=np.int32).reshape((cols, rows) if transposed else (rows, cols))
    view = base.T if transposed else base
    out = _tiled_contiguous(view, tile=tile)
    assert out.flags.c_contiguous and np.array_equal(out, view)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 90), n=st.integers(1, 90), weight_transposed=st.booleans(), codes_transposed=st.booleans(),
       per_channel=st.booleans(), with_zero=st.booleans(), band=st.integers(1, 5000), seed=st.integers(0, 2**16))
def test_weight_error_matches_a_direct_float64_computation(k, n, weight_transposed, codes_transposed, per_channel,
                                                           with_zero, band, seed):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((k, n)).astype(np.float32)
    codes = rng.integers(-1, 2, size=(k, n)).astype(np.int8)
    scales = rng.uniform(0.1, 2.0, size=n if per_channel else 1).astype(np.float32)
    zeros = rng.integers(-1, 2, size=scales.shape).astype(np.float32) if with_zero else None
    w_arg = np.ascontiguousarray(weight.T).T if weight_transposed else weight
    c_arg = np.ascontiguousarray(codes.T).T if codes_transposed else codes
    q = QuantizedWeight("int" if with_zero else "ternary", k, n, c_arg, scales, zeros, "channel" if per_channel else "tensor", 0)
    packed = PackedWeight(precision="ternary", storage="test", constants=[], attrs={}, k=k, n=n)
    stats = _weight_error(w_arg, q, packed, band_elements=band)

    levels = codes.astype(np.float32) - (zeros.reshape(1, -1) if with_zero else np.float32(0))
    deq = (levels * scales.reshape(1, -1)).astype(np.float64)
    w = weight.astype(np.float64)
    err = w - deq
    mse = float(np.sum(err * err)) / (k * n)
    assert np.isclose(stats["mse"], mse, rtol=1e-9, atol=0.0)
    if mse > 0:
        expected_sqnr = 10 * np.log10(np.sum(w * w) / np.sum(err * err)) if np.sum(w * w) > 0 else -np.inf
        assert np.isclose(stats["sqnr_db"], expected_sqnr, rtol=1e-9, atol=1e-9)
    norm = np.sqrt(np.sum(w * w)) * np.sqrt(np.sum(deq * deq))
    if norm > 0:
        assert np.isclose(stats["cosine"], np.sum(w * deq) / norm, rtol=1e-9, atol=1e-12)


def test_exact_dequantization_reports_zero_error():
    codes = np.array([[1, 0, -1], [0, 1, 1]], dtype=np.int8)
    weight = (codes * np.float32(0.75)).astype(np.float32)
    q = QuantizedWeight("ternary", 2, 3, np.ascontiguousarray(codes.T).T, np.array([0.75], np.float32), None, "tensor", 0)
    packed = PackedWeight(precision="ternary", storage="test", constants=[], attrs={}, k=2, n=3)
    stats = _weight_error(weight, q, packed)
    assert stats["mse"] == 0.0 and stats["sqnr_db"] == float("inf") and stats["cosine"] == 1.0
