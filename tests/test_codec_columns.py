"""Column path of the codecs: packing and |W| sums straight from W [K, N],
checked byte for byte against the row primitives on the transposed copy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnxbit import codecs, native

FORMATS = codecs.FORMATS
# Edges of the 640-row chunks and 64-column tiles, the 8x8 transpose blocks,
# the 8-lane sums and the 2048-column sum blocks.
SHAPES = [(1, 1), (1, 17), (21, 1), (21, 17), (8, 8), (9, 7), (4096, 33), (640, 64),
          (641, 65), (1283, 130), (5, 2100)]


def transposed_reference(w, inv, fmt):
    return codecs.ternarize_pack(np.ascontiguousarray(w.T), inv, fmt)


def raw_pack_columns(fmt, w, inv):
    """obx_ternarize_pack_cols_f32 without the Python checks: (packed, count, first)."""
    ffi, lib = native.ffi(), native.lib()
    k, n = w.shape
    out = np.full((n, codecs.packed_row_bytes(k, fmt)), 0xEE, np.uint8)
    first = ffi.new("size_t *", 12345)
    count = lib.obx_ternarize_pack_cols_f32(codecs.format_id(fmt), ffi.from_buffer("float[]", w), k, n,
                                            ffi.from_buffer("float[]", inv), inv.size,
                                            ffi.from_buffer("uint8_t[]", out, require_writable=True), first)
    return out, count, first[0]


def raw_pack_rows(fmt, rows, inv):
    ffi, lib = native.ffi(), native.lib()
    r, k = rows.shape
    out = np.full((r, codecs.packed_row_bytes(k, fmt)), 0xEE, np.uint8)
    first = ffi.new("size_t *", 12345)
    count = lib.obx_ternarize_pack_f32(codecs.format_id(fmt), ffi.from_buffer("float[]", rows), r, k,
                                       ffi.from_buffer("float[]", inv), inv.size,
                                       ffi.from_buffer("uint8_t[]", out, require_writable=True), first)
    return out, count, first[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_columns_pack_like_the_transposed_copy(isa, fmt, rng):
    for k, n in SHAPES:
        # ties at +-0.5 and values that round to +-1 and beyond, so every code occurs
        w = (rng.integers(-6, 7, size=(k, n)) * 0.25).astype(np.float32)
        w += rng.standard_normal((k, n)).astype(np.float32) * np.float32(rng.integers(0, 2))
        per_column = rng.uniform(0.5, 2.0, n).astype(np.float32)
        for inv in (np.float32(1.0), per_column):
            got = codecs.ternarize_pack_columns(w, inv, fmt)
            assert got.shape == (n, codecs.packed_row_bytes(k, fmt)), (k, n)
            np.testing.assert_array_equal(got, transposed_reference(w, inv, fmt), err_msg=f"{(k, n)}")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("misalign", [1, 3, 13])
def test_rows_not_starting_on_a_cache_line(isa, fmt, misalign, rng):
    # n a multiple of 16 floats: the first tile is narrowed to reach a line boundary
    for k, n in [(700, 48), (650, 160), (30, 1024)]:
        storage = np.empty(k * n + 16, np.float32)
        w = storage[misalign:misalign + k * n].reshape(k, n)
        w[...] = rng.standard_normal((k, n))
        inv = rng.uniform(0.5, 2.0, n).astype(np.float32)
        np.testing.assert_array_equal(codecs.ternarize_pack_columns(w, inv, fmt),
                                      transposed_reference(w, inv, fmt))


def test_empty_matrices(isa):
    for k, n in [(0, 5), (5, 0), (0, 0)]:
        w = np.zeros((k, n), np.float32)
        assert codecs.ternarize_pack_columns(w, 1.0, "base3").shape == (n, codecs.packed_row_bytes(k, "base3"))
        np.testing.assert_array_equal(codecs.abs_sum_columns(w), np.zeros(n))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_counted_located_and_packed_as_zero(isa, fmt, bad, rng):
    k, n = 1300, 70
    w = rng.standard_normal((k, n)).astype(np.float32)
    # second chunk and second tile hold the smallest row-major index; the
    # others come first in column order or in the order chunks are visited
    positions = [(1299, 0), (700, 69), (650, 66), (651, 3), (1000, 65)]
    for i, j in positions:
        w[i, j] = bad
    inv = rng.uniform(0.5, 2.0, n).astype(np.float32)
    packed, count, first = raw_pack_columns(fmt, w, inv)
    assert count == len(positions)
    assert first == 650 * n + 66
    cleaned = w.copy()
    for i, j in positions:
        cleaned[i, j] = 0
    np.testing.assert_array_equal(packed, transposed_reference(cleaned, inv, fmt))
    rows_packed, rows_count, _ = raw_pack_rows(fmt, np.ascontiguousarray(w.T), inv)
    assert rows_count == count
    np.testing.assert_array_equal(packed, rows_packed)
    with pytest.raises(ValueError, match=rf"w_kn has 5 non-finite values; first at element {650 * n + 66} "
                                         r"\(row 650, column 66\)"):
        codecs.ternarize_pack_columns(w, inv, fmt)


def adversarial_weights(rng, shape):
    """Magnitudes over ~40 binades, so a float64 sum depends on its order."""
    mags = np.exp2(rng.uniform(-30, 10, size=shape)).astype(np.float32)
    return mags * rng.choice([-1, 1], size=shape).astype(np.float32)


def test_abs_sum_columns_is_bit_identical_to_rows_of_the_transpose(isa, rng):
    for k, n in SHAPES + [(7, 3), (16, 129), (300, 4100)]:
        w = adversarial_weights(rng, (k, n))
        got = codecs.abs_sum_columns(w)
        assert got.dtype == np.float64 and got.shape == (n,)
        assert np.array_equal(got, codecs.abs_sum_rows(np.ascontiguousarray(w.T))), (k, n)


def test_non_contiguous_input_is_accepted(rng):
    w = rng.standard_normal((90, 40)).astype(np.float32)[::2, 1::3]
    np.testing.assert_array_equal(codecs.ternarize_pack_columns(w, 1.5, "2bit"),
                                  transposed_reference(np.ascontiguousarray(w), 1.5, "2bit"))
    assert np.array_equal(codecs.abs_sum_columns(w), codecs.abs_sum_rows(np.ascontiguousarray(w.T)))


def test_bad_arguments_raise_clear_errors():
    w = np.ones((4, 3), np.float32)
    with pytest.raises(TypeError, match="w_kn must be float32, got dtype float64"):
        codecs.ternarize_pack_columns(w.astype(np.float64), 1.0)
    with pytest.raises(ValueError, match=r"w_kn must be 2-D \[K, N\], got shape \(12,\)"):
        codecs.ternarize_pack_columns(w.reshape(-1), 1.0)
    with pytest.raises(ValueError, match=r"inv_scales must have 1 or 3 \(columns\) entries, got 4"):
        codecs.ternarize_pack_columns(w, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="inv_scales must be finite"):
        codecs.ternarize_pack_columns(w, np.float32(np.inf))
    with pytest.raises(ValueError, match="unknown packed format 'base4'"):
        codecs.ternarize_pack_columns(w, 1.0, "base4")
    with pytest.raises(TypeError, match="w_kn must be float32, got dtype int64"):
        codecs.abs_sum_columns(np.ones((2, 2), np.int64))
    with pytest.raises(ValueError, match=r"w_kn must be 2-D \[K, N\]"):
        codecs.abs_sum_columns(np.ones((2, 2, 2), np.float32))


def test_c_entry_point_rejects_bad_arguments_without_writing():
    ffi, lib = native.ffi(), native.lib()
    w = np.ones((4, 3), np.float32)
    inv = np.ones(3, np.float32)
    out = np.full((3, 1), 0xEE, np.uint8)
    w_buf, inv_buf = ffi.from_buffer("float[]", w), ffi.from_buffer("float[]", inv)
    out_buf = ffi.from_buffer("uint8_t[]", out, require_writable=True)
    assert lib.obx_ternarize_pack_cols_f32(7, w_buf, 4, 3, inv_buf, 3, out_buf, ffi.NULL) == -1
    assert lib.obx_ternarize_pack_cols_f32(0, ffi.NULL, 4, 3, inv_buf, 3, out_buf, ffi.NULL) == -1
    assert lib.obx_ternarize_pack_cols_f32(0, w_buf, 4, 3, ffi.NULL, 3, out_buf, ffi.NULL) == -1
    assert lib.obx_ternarize_pack_cols_f32(0, w_buf, 4, 3, inv_buf, 2, out_buf, ffi.NULL) == -1
    assert lib.obx_ternarize_pack_cols_f32(0, w_buf, 4, 3, inv_buf, 3, ffi.NULL, ffi.NULL) == -1
    assert (out == 0xEE).all()
    assert lib.obx_ternarize_pack_cols_f32(0, w_buf, 4, 3, inv_buf, 3, out_buf, ffi.NULL) == 0
    assert (out == 0xAA).all()  # four codes 2 (the value +1) in each byte


@settings(max_examples=60, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    w=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=90),
                 elements=st.floats(-3, 3, width=32) | st.sampled_from([0.5, -0.5, 1.5, -1.5])),
    inv=st.floats(0.25, 4, width=32),
)
def test_hypothesis_columns_match_the_transposed_copy_on_every_isa(fmt, w, inv):
    expected = transposed_reference(w, inv, fmt)
    sums = codecs.abs_sum_rows(np.ascontiguousarray(w.T))
    for path in native.available_isas():
        with native.forced_isa(path):
            np.testing.assert_array_equal(codecs.ternarize_pack_columns(w, inv, fmt), expected)
            assert np.array_equal(codecs.abs_sum_columns(w), sums)
