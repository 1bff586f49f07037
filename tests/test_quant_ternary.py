"""Ternary quantizers: BitNet absmean, threshold methods, granularities,
already-ternary detection and the fused quantize+pack path."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnxbit import codecs
from onnxbit.quant import bitnet_absmean, is_ternary, quantize_pack_absmean, quantize_ternary

THRESHOLD_METHODS = ("mean-factor", "median-factor", "adaptive", "mse")
GRANULARITY_CASES = [("tensor", None), ("channel", None), ("group", 4), ("group", 5)]


def reference_absmean(w):
    """Element by element with numpy float32 scalars and Python's round (half to even)."""
    w32 = np.asarray(w, np.float32)
    total = 0.0
    for x in w32.ravel():
        total += abs(float(x))
    gamma = max(np.float32(total / w32.size), np.float32(1e-5))
    inv = np.float32(1.0) / gamma
    codes = np.zeros(w32.shape, np.int8)
    for idx, x in np.ndenumerate(w32):
        codes[idx] = max(-1, min(1, round(float(np.float32(x * inv)))))
    return codes, gamma


def blocks_of(k, n, granularity, group_size):
    """(row slice, column) of every block, in scale order."""
    if granularity == "tensor":
        return [[(slice(0, k), slice(0, n))]]
    if granularity == "channel":
        return [[(slice(0, k), slice(c, c + 1)) for c in range(n)]]
    return [[(slice(g, min(g + group_size, k)), slice(c, c + 1)) for c in range(n)] for g in range(0, k, group_size)]


# --- BitNet absmean -----------------------------------------------------------------------------

def test_absmean_hand_worked():
    w = np.array([[0.25, -0.75], [1.5, 0.0]], np.float32)
    codes, gamma = bitnet_absmean(w)
    # mean|w| = 2.5 / 4 = 0.625; w / 0.625 = 0.4, -1.2, 2.4, 0
    assert gamma.dtype == np.float32 and gamma.shape == (1,)
    assert gamma[0] == np.float32(0.625)
    np.testing.assert_array_equal(codes, [[0, -1], [1, 0]])
    assert codes.dtype == np.int8


def test_absmean_ties_round_half_to_even():
    # mean|w| = 8 / 8 = 1 exactly, so w * (1/gamma) is exact and lands on the ties.
    w = np.array([[0.5, 1.5, -0.5, -1.5], [2.0, 0.0, 1.0, -1.0]], np.float32)
    codes, gamma = bitnet_absmean(w)
    assert gamma[0] == 1.0
    # 0.5 -> 0 and -0.5 -> 0 (half to even, not away from zero); 1.5 -> 2 -> clipped 1.
    np.testing.assert_array_equal(codes, [[0, 1, 0, -1], [1, 0, 1, -1]])
    # The same ties at gamma = 0.25.
    codes_q, gamma_q = bitnet_absmean(w * 0.25)
    assert gamma_q[0] == 0.25
    np.testing.assert_array_equal(codes_q, codes)


def test_absmean_gamma_floor():
    w = np.full((3, 2), 1e-7, np.float32)
    codes, gamma = bitnet_absmean(w)
    assert gamma[0] == np.float32(1e-5)
    assert not codes.any()  # 1e-7 / 1e-5 = 0.01 rounds to 0
    codes_zero, gamma_zero = bitnet_absmean(np.zeros((2, 2), np.float32))
    assert gamma_zero[0] == np.float32(1e-5) and not codes_zero.any()


def test_absmean_matches_torch_weight_quant(rng):
    torch = pytest.importorskip("torch")
    for shape in [(64, 48), (300, 7), (1, 1000)]:
        w = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        t = torch.from_numpy(w)
        s = 1.0 / t.abs().mean().clamp(min=1e-5)
        q = (t * s).round().clamp(-1, 1)
        codes, gamma = bitnet_absmean(w)
        # torch's float32 mean may sit one ulp from the float64-accumulated one
        np.testing.assert_allclose(gamma[0], 1.0 / s.item(), rtol=2**-22)
        np.testing.assert_array_equal(codes, q.numpy().astype(np.int8))
        np.testing.assert_allclose(quantize_ternary(w, preserve_ternary=False).dequantize(), (q / s).numpy(),
                                   rtol=2**-22, atol=0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=9),
                  elements=st.floats(-4, 4, width=32)))
def test_absmean_matches_elementwise_reference(w):
    codes, gamma = bitnet_absmean(w)
    ref_codes, ref_gamma = reference_absmean(w)
    assert gamma[0] == ref_gamma
    np.testing.assert_array_equal(codes, ref_codes)


@pytest.mark.parametrize("granularity,group_size", GRANULARITY_CASES)
def test_absmean_granularity_equals_per_block_tensor_quantization(rng, granularity, group_size):
    k, n = 13, 6
    w = rng.standard_normal((k, n)).astype(np.float32) * rng.uniform(0.1, 3, n).astype(np.float32)
    codes, gamma = bitnet_absmean(w, granularity=granularity, group_size=group_size)
    blocks = blocks_of(k, n, granularity, group_size)
    expected_shape = {"tensor": (1,), "channel": (n,), "group": (len(blocks), n)}[granularity]
    assert gamma.shape == expected_shape
    gamma_grid = gamma.reshape(len(blocks), -1)
    for g, row in enumerate(blocks):
        for c, (rows, cols) in enumerate(row):
            block_codes, block_gamma = bitnet_absmean(w[rows, cols])
            np.testing.assert_array_equal(codes[rows, cols], block_codes)
            assert gamma_grid[g, c] == block_gamma[0]


@pytest.mark.parametrize("method", ("absmean",) + THRESHOLD_METHODS)
@pytest.mark.parametrize("granularity,group_size", GRANULARITY_CASES[1:])
def test_every_method_quantizes_each_block_as_its_own_tensor(rng, method, granularity, group_size):
    k, n = 13, 4
    w = rng.laplace(size=(k, n)).astype(np.float32) * rng.uniform(0.1, 3, n).astype(np.float32)
    result = quantize_ternary(w, method=method, granularity=granularity, group_size=group_size)
    blocks = blocks_of(k, n, granularity, group_size)
    scale_grid = result.scales.reshape(len(blocks), -1)
    for g, row in enumerate(blocks):
        for c, (rows, cols) in enumerate(row):
            alone = quantize_ternary(w[rows, cols], method=method)
            np.testing.assert_array_equal(result.codes[rows, cols], alone.codes)
            assert scale_grid[g, c] == alone.scales[0]


def test_quantize_ternary_absmean_dequantize_is_codes_times_gamma(rng):
    w = rng.standard_normal((20, 10)).astype(np.float32)
    result = quantize_ternary(w, granularity="group", group_size=8)
    codes, gamma = bitnet_absmean(w, granularity="group", group_size=8)
    np.testing.assert_array_equal(result.codes, codes)
    np.testing.assert_array_equal(result.scales, gamma)
    expanded = np.repeat(gamma, 8, axis=0)[:20]
    np.testing.assert_array_equal(result.dequantize(), codes.astype(np.float32) * expanded)
    assert result.kind == "ternary" and result.bits == 2 and result.zero_points is None


def test_float16_and_float64_inputs_are_computed_in_float32(rng):
    w = rng.standard_normal((8, 8))
    ref = quantize_ternary(w.astype(np.float32))
    for dtype in (np.float16, np.float64):
        result = quantize_ternary(w.astype(dtype))
        np.testing.assert_array_equal(result.codes, bitnet_absmean(w.astype(dtype).astype(np.float32))[0])
        assert result.scales.dtype == np.float32
    np.testing.assert_array_equal(quantize_ternary(w).codes, ref.codes)


# --- already-ternary input ----------------------------------------------------------------------

def test_already_ternary_is_returned_exactly(rng):
    s = np.float32(0.0371)
    codes = rng.integers(-1, 2, size=(32, 16)).astype(np.int8)
    w = codes.astype(np.float32) * s
    assert is_ternary(w) == (True, pytest.approx(np.array([s])))
    result = quantize_ternary(w)
    np.testing.assert_array_equal(result.codes, codes)
    assert result.scales[0] == s
    assert np.array_equal(result.dequantize().view(np.int32), w.view(np.int32))
    assert result.stats.mse == 0.0 and result.stats.sqnr_db == float("inf")


def test_absmean_alone_rescales_ternary_input_by_nonzero_fraction(rng):
    s = np.float32(0.5)
    codes = rng.integers(-1, 2, size=(40, 10)).astype(np.int8)
    w = codes.astype(np.float32) * s
    plain = quantize_ternary(w, preserve_ternary=False)
    np.testing.assert_array_equal(plain.codes, codes)  # same codes ...
    fraction = np.count_nonzero(codes) / codes.size
    assert plain.scales[0] == np.float32(s * fraction)  # ... but the scale shrinks
    assert plain.scales[0] < s and plain.stats.mse > 0


def test_per_channel_ternary_detection(rng):
    codes = rng.integers(-1, 2, size=(10, 4)).astype(np.int8)
    codes[0] = 1  # every column has a non-zero
    column_scales = np.array([0.1, 0.2, 3.0, 1e-3], np.float32)
    w = codes * column_scales
    assert is_ternary(w) == (False, None)
    ok, scales = is_ternary(w, granularity="channel")
    assert ok and np.array_equal(scales, column_scales)
    result = quantize_ternary(w, granularity="channel")
    np.testing.assert_array_equal(result.scales, column_scales)
    np.testing.assert_array_equal(result.dequantize(), w)
    # Per group: each group of a column inherits the column scale.
    ok, scales = is_ternary(w, granularity="group", group_size=3)
    assert ok and scales.shape == (4, 4)
    group_has_nonzero = np.array([codes[g:g + 3].any(axis=0) for g in range(0, 10, 3)])
    np.testing.assert_array_equal(scales, np.where(group_has_nonzero, column_scales, np.float32(1e-5)))
    grouped = quantize_ternary(w, granularity="group", group_size=3)
    np.testing.assert_array_equal(grouped.dequantize(), w)


def test_ternary_detection_rejects_near_ternary(rng):
    w = rng.integers(-1, 2, size=(50, 50)).astype(np.float32) * 0.25
    w[49, 49] = np.nextafter(np.float32(0.25), np.float32(1))  # one ulp off, late in the tensor
    assert is_ternary(w) == (False, None)
    assert is_ternary(np.zeros((3, 3), np.float32)) == (True, pytest.approx(np.array([1e-5])))


@pytest.mark.parametrize("method", ("absmean",) + THRESHOLD_METHODS)
@pytest.mark.parametrize("granularity,group_size", GRANULARITY_CASES)
def test_ternary_input_is_a_fixed_point_of_every_method(rng, method, granularity, group_size):
    codes = rng.integers(-1, 2, size=(11, 5)).astype(np.int8)
    w = codes * np.float32(0.125)
    result = quantize_ternary(w, method=method, granularity=granularity, group_size=group_size)
    np.testing.assert_array_equal(result.codes, codes)
    np.testing.assert_array_equal(result.dequantize(), w)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 12), st.integers(1, 6)),
                  elements=st.floats(-10, 10, width=32)),
       st.sampled_from(("absmean",) + THRESHOLD_METHODS),
       st.sampled_from(GRANULARITY_CASES))
def test_quantizing_twice_gives_the_same_codes_and_scales(w, method, granularity_case):
    granularity, group_size = granularity_case
    first = quantize_ternary(w, method=method, granularity=granularity, group_size=group_size)
    # A block whose codes are all zero dequantizes to zeros and gets the floor scale back.
    pieces = first.layout.pieces(first.codes)
    assume(all(piece.any(axis=1).all() for piece in pieces))
    second = quantize_ternary(first.dequantize(), method=method, granularity=granularity, group_size=group_size)
    np.testing.assert_array_equal(second.codes, first.codes)
    np.testing.assert_array_equal(second.scales, first.scales)


# --- threshold methods --------------------------------------------------------------------------

def brute_force_mse(block):
    """Try every threshold (0 and each |w|) with the least-squares scale."""
    flat = block.astype(np.float64).ravel()
    best = (np.dot(flat, flat), np.inf)
    for delta in np.concatenate([[0.0], np.abs(flat)]):
        q = np.sign(flat) * (np.abs(flat) > delta)
        if not q.any():
            continue
        alpha = np.dot(flat, q) / np.dot(q, q)
        err = np.sum((flat - alpha * q) ** 2)
        if err < best[0]:
            best = (err, delta)
    return best


def test_mean_factor_half_reproduces_absmean(rng):
    w = rng.standard_normal((64, 32)).astype(np.float32)
    for granularity in ("tensor", "channel"):
        a = quantize_ternary(w, granularity=granularity)
        m = quantize_ternary(w, method="mean-factor", factor=0.5, scale="absmean", granularity=granularity)
        np.testing.assert_array_equal(m.codes, a.codes)
        np.testing.assert_array_equal(m.scales, a.scales)
    # At exact ties |w| = gamma/2 both give 0 (strict threshold, round half to even).
    ties = np.array([[0.5, 1.5, -0.5, -1.5], [2.0, 0.0, 1.0, -1.0]], np.float32)
    m = quantize_ternary(ties, method="mean-factor", factor=0.5, scale="absmean")
    np.testing.assert_array_equal(m.codes, bitnet_absmean(ties)[0])


def test_mean_factor_half_differs_from_absmean_only_where_the_product_rounds_onto_the_tie(rng):
    # Find gamma and x = gamma/2 + 1 ulp with float32(x * (1/gamma)) == 0.5 exactly,
    # and a partner y so that the column [x, y] has mean|w| == gamma.
    for gamma in rng.uniform(0.01, 1, 1000).astype(np.float32):
        x = np.nextafter(np.float32(0.5) * gamma, np.float32(1))
        y = np.float32(2 * np.float64(gamma) - np.float64(x))
        w = np.array([[x], [y]], np.float32)
        if np.float32(x * (np.float32(1) / gamma)) == 0.5 and bitnet_absmean(w)[1][0] == gamma:
            break
    else:
        pytest.fail("no float32 gamma with the rounding case found")
    absmean = quantize_ternary(w, preserve_ternary=False)
    threshold = quantize_ternary(w, method="mean-factor", factor=0.5, scale="absmean", preserve_ternary=False)
    np.testing.assert_array_equal(absmean.codes[:, 0], [0, 1])
    np.testing.assert_array_equal(threshold.codes[:, 0], [1, 1])


def test_mean_factor_threshold_and_lsq_scale():
    w = np.array([[0.1, -0.3], [0.6, -1.0], [0.2, 0.0]], np.float32)
    # mean|w| = 2.2 / 6; delta = 0.7 * 0.3667 = 0.2567: keeps -0.3, 0.6, -1.0
    result = quantize_ternary(w, method="mean-factor")
    np.testing.assert_array_equal(result.codes, [[0, -1], [1, -1], [0, 0]])
    assert result.scales[0] == np.float32((0.3 + 0.6 + 1.0) / 3)
    absmean_scaled = quantize_ternary(w, method="mean-factor", scale="absmean")
    assert absmean_scaled.scales[0] == np.float32(2.2 / 6)


def test_median_factor_threshold():
    w = np.array([[0.1, -0.2, 0.3, -0.4, 0.5, 4.0]], np.float32).T
    # median|w| = 0.35; factor 1 keeps 0.4, 0.5, 4.0; default 0.9 -> 0.315 keeps the same
    for factor in (None, 1.0):
        result = quantize_ternary(w, method="median-factor", factor=factor)
        np.testing.assert_array_equal(result.codes[:, 0], [0, 0, 0, -1, 1, 1])
    result = quantize_ternary(w, method="median-factor", factor=0.5)  # 0.175 also keeps -0.2, 0.3
    np.testing.assert_array_equal(result.codes[:, 0], [0, -1, 1, -1, 1, 1])


def test_mse_search_equals_brute_force(rng):
    for trial in range(20):
        w = (rng.standard_normal((9, 7)) * rng.uniform(0.1, 2)).astype(np.float32)
        if trial % 2:
            w = np.round(w, 1)  # repeated magnitudes: ties must stay together
        result = quantize_ternary(w, method="mse", preserve_ternary=False)
        q = result.codes.astype(np.float64)
        flat = w.astype(np.float64)
        alpha = np.dot(flat.ravel(), q.ravel()) / np.dot(q.ravel(), q.ravel())
        ours = np.sum((flat - alpha * q) ** 2)
        best_err, best_delta = brute_force_mse(w)
        assert ours == pytest.approx(best_err, rel=1e-12, abs=1e-12)
        expected = np.sign(w) * (np.abs(w) > best_delta)
        np.testing.assert_array_equal(result.codes, expected)
        assert result.scales[0] == np.float32(alpha)


def test_mse_search_per_channel_equals_brute_force_per_column(rng):
    w = rng.laplace(size=(15, 6)).astype(np.float32)
    result = quantize_ternary(w, method="mse", granularity="channel")
    for c in range(6):
        _, delta = brute_force_mse(w[:, c])
        np.testing.assert_array_equal(result.codes[:, c], np.sign(w[:, c]) * (np.abs(w[:, c]) > delta))


def test_mse_with_fixed_absmean_scale_thresholds_at_half_gamma(rng):
    # With alpha fixed to gamma the optimum keeps |w| > gamma / 2: the absmean codes.
    w = rng.standard_normal((40, 12)).astype(np.float32)
    result = quantize_ternary(w, method="mse", scale="absmean", granularity="channel")
    np.testing.assert_array_equal(result.codes, quantize_ternary(w, granularity="channel").codes)


def test_threshold_methods_on_two_cluster_distribution(rng):
    # Signal at +-1 plus small noise: every data-driven method must keep exactly the
    # signal, and the least-squares scale is the mean signal magnitude.
    signal = rng.choice([-1.0, 0.0, 1.0], size=(200, 3), p=[0.2, 0.6, 0.2])
    w = (signal + rng.normal(0, 0.01, size=signal.shape)).astype(np.float32)
    for method in ("adaptive", "mse"):
        result = quantize_ternary(w, method=method, granularity="channel")
        np.testing.assert_array_equal(result.codes, signal.astype(np.int8))
        for c in range(3):
            kept = np.abs(w[:, c])[signal[:, c] != 0]
            assert result.scales[c] == np.float32(kept.astype(np.float64).mean())


def test_adaptive_ends_at_a_lloyd_fixed_point(rng):
    w = rng.standard_normal((500, 4)).astype(np.float32)
    result = quantize_ternary(w, method="adaptive", granularity="channel")
    for c in range(4):
        col = w[:, c].astype(np.float64)
        alpha = np.abs(col)[result.codes[:, c] != 0].mean()
        np.testing.assert_array_equal(result.codes[:, c], np.sign(col) * (np.abs(col) > alpha / 2))
    # For Gaussian weights the fixed point is near the MSE optimum (about 0.61 sigma).
    mse = quantize_ternary(w, method="mse", granularity="channel")
    assert result.stats.mse == pytest.approx(mse.stats.mse, rel=0.02)


def test_mse_method_beats_or_ties_all_others(rng):
    w = rng.standard_t(3, size=(128, 16)).astype(np.float32)
    best = quantize_ternary(w, method="mse", granularity="channel").stats.mse
    for method in ("absmean", "mean-factor", "median-factor", "adaptive"):
        other = quantize_ternary(w, method=method, granularity="channel", scale="lsq")
        assert best <= other.stats.mse * (1 + 1e-9)


# --- errors -------------------------------------------------------------------------------------

def test_errors_name_the_problem():
    w = np.ones((20, 8), np.float32)
    w[12, 4] = w[13, 0] = w[19, 7] = np.nan
    with pytest.raises(ValueError, match=r"weight contains 3 NaN values; first at \[12, 4\]"):
        quantize_ternary(w)
    w = np.ones((3, 3), np.float32)
    w[2, 1] = -np.inf
    with pytest.raises(ValueError, match=r"1 Inf value; first at \[2, 1\]"):
        is_ternary(w)
    with pytest.raises(ValueError, match="empty"):
        quantize_ternary(np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match=r"must be 2-D.*shape \(2, 3, 4\)"):
        quantize_ternary(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="float16/32/64"):
        bitnet_absmean(np.ones((2, 2), np.int32))
    with pytest.raises(ValueError, match="unknown ternary method 'foo'"):
        quantize_ternary(np.ones((2, 2)), method="foo")
    with pytest.raises(ValueError, match="needs an integer group_size"):
        quantize_ternary(np.ones((2, 2)), granularity="group")
    with pytest.raises(ValueError, match="granularity must be one of"):
        quantize_ternary(np.ones((2, 2)), granularity="row")
    with pytest.raises(ValueError, match="only used with granularity 'group'"):
        quantize_ternary(np.ones((2, 2)), group_size=4)
    with pytest.raises(ValueError, match="factor is only used by"):
        quantize_ternary(np.ones((2, 2)), method="mse", factor=0.5)
    with pytest.raises(ValueError, match="unknown ternary scale"):
        quantize_ternary(np.ones((2, 2)), scale="max")


# --- fused quantize + pack ----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["2bit", "base3"])
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_quantize_pack_absmean_equals_quantize_then_pack(rng, fmt, granularity):
    # (300, 250): several column tiles of the C packer, with K % 32 != 0.
    for shape, dtype in [((37, 5), np.float32), ((64, 48), np.float64), ((1, 3), np.float16),
                         ((130, 1), np.float32), ((300, 250), np.float32), ((300, 250), np.float64)]:
        w = rng.standard_normal(shape).astype(dtype)
        packed, scales = quantize_pack_absmean(w, fmt=fmt, granularity=granularity)
        result = quantize_ternary(w, granularity=granularity)
        np.testing.assert_array_equal(packed, codecs.pack_ternary(np.ascontiguousarray(result.codes.T), fmt))
        np.testing.assert_array_equal(scales, result.scales)
    ternary = rng.integers(-1, 2, size=(33, 6)).astype(np.float32) * np.float32(0.3)
    packed, scales = quantize_pack_absmean(ternary, fmt=fmt, granularity=granularity)
    result = quantize_ternary(ternary, granularity=granularity)
    np.testing.assert_array_equal(packed, codecs.pack_ternary(np.ascontiguousarray(result.codes.T), fmt))
    np.testing.assert_array_equal(scales, result.scales)
    assert np.all(scales == np.float32(0.3))


@pytest.mark.parametrize("fmt", ["2bit", "base3"])
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_quantize_pack_absmean_reads_transposed_views_without_copying(rng, fmt, granularity):
    # A Gemm(transB=1) weight is W^T of a contiguous [N, K] array; the row path
    # must give the bytes and scales of the column path.
    for n, k in [(250, 300), (7, 33), (1, 5)]:
        w_nk = rng.standard_normal((n, k)).astype(np.float32)
        expected = quantize_pack_absmean(np.ascontiguousarray(w_nk.T), fmt=fmt, granularity=granularity)
        got = quantize_pack_absmean(w_nk.T, fmt=fmt, granularity=granularity)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    ternary_nk = rng.integers(-1, 2, size=(6, 33)).astype(np.float32) * np.float32(0.3)
    assert np.all(quantize_pack_absmean(ternary_nk.T, fmt=fmt, granularity=granularity)[1] == np.float32(0.3))


def test_quantize_pack_absmean_rejects_bad_input():
    w = np.ones((4, 4), np.float32)
    w[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN value; first at \[1, 2\]"):
        quantize_pack_absmean(w)
    with pytest.raises(ValueError, match="must be 2-D"):
        quantize_pack_absmean(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="'tensor' or 'channel'"):
        quantize_pack_absmean(np.ones((4, 4), np.float32), granularity="group")
    with pytest.raises(ValueError, match="unknown packed format '3bit'"):
        quantize_pack_absmean(np.ones((4, 4), np.float32), fmt="3bit")


def adversarial_weights(rng, shape):
    """Magnitudes over ~40 binades, so a float64 sum depends on its order."""
    mags = np.exp2(rng.uniform(-30, 10, size=shape)).astype(np.float32)
    return mags * rng.choice([-1, 1], size=shape).astype(np.float32)


def test_abs_sums_follow_the_c_summation_order(rng):
    from onnxbit.quant.granularity import abs_sums
    for shape in [(1, 1), (7, 3), (8, 1), (9, 2), (1000, 1), (257, 33), (4096, 5)]:
        w = adversarial_weights(rng, shape)
        expected = codecs.abs_sum_rows(np.ascontiguousarray(w.T))
        ours = abs_sums(w.reshape(1, *shape))[0]
        assert np.array_equal(ours, expected), shape
    # The order matters for this data: plain sequential float64 sums differ.
    w = adversarial_weights(rng, (4096, 64))
    sequential = np.cumsum(np.abs(w).astype(np.float64), axis=0)[-1]
    assert not np.array_equal(abs_sums(w.reshape(1, 4096, 64))[0], sequential)


@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_quantize_pack_absmean_gamma_is_bit_identical_on_order_sensitive_data(rng, isa, granularity):
    for trial in range(10):
        w = adversarial_weights(rng, (int(rng.integers(1, 300)), int(rng.integers(1, 20))))
        packed, scales = quantize_pack_absmean(w, granularity=granularity)
        result = quantize_ternary(w, granularity=granularity)
        np.testing.assert_array_equal(scales, result.scales)
        np.testing.assert_array_equal(packed, codecs.pack_ternary(np.ascontiguousarray(result.codes.T)))
