"""Packed ternary codecs: C kernels (every ISA path) against the numpy reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnxbit import codecs, native
from onnxbit.reference import codecs as reference

FORMATS = codecs.FORMATS
PER_BYTE = {"2bit": 4, "base3": 5}
LENGTHS = list(range(0, 301)) + [511, 512, 513, 639, 640, 641, 1279, 1280, 1281, 2561, 4096, 9999, 10000]


def random_codes(rng, shape):
    return rng.integers(-1, 2, size=shape).astype(np.int8)


def raw_decode(fmt, packed, rows, k):
    """obx_decode_i8 without the Python error handling: (values, count, first)."""
    ffi, lib = native.ffi(), native.lib()
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    out = np.full(rows * k, 99, dtype=np.int8)
    first = ffi.new("size_t *", 12345)
    count = lib.obx_decode_i8(codecs.format_id(fmt), ffi.from_buffer("uint8_t[]", packed), rows, k,
                              ffi.from_buffer("int8_t[]", out, require_writable=True), first)
    return out.reshape(rows, k), count, first[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_length_matches_reference(isa, fmt, rng):
    for k in LENGTHS:
        values = random_codes(rng, k)
        packed = codecs.pack_ternary(values, fmt)
        assert packed.dtype == np.uint8 and packed.shape == (codecs.packed_row_bytes(k, fmt),)
        np.testing.assert_array_equal(packed, reference.pack_ternary(values, fmt), err_msg=f"k={k}")
        np.testing.assert_array_equal(codecs.unpack_ternary(packed, k, fmt), values, err_msg=f"k={k}")
        np.testing.assert_array_equal(reference.unpack_ternary(packed, k, fmt), values)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("k", [1, 3, 4, 5, 6, 7, 9, 130, 161, 333, 1027])
def test_2d_rows_start_on_byte_boundaries(isa, fmt, k, rng):
    values = random_codes(rng, (7, k))
    packed = codecs.pack_ternary(values, fmt)
    assert packed.shape == (7, -(-k // PER_BYTE[fmt]))
    np.testing.assert_array_equal(packed, reference.pack_ternary(values, fmt))
    for r in range(7):  # each row is packed exactly like a 1-D tensor
        np.testing.assert_array_equal(packed[r], codecs.pack_ternary(values[r], fmt))
    np.testing.assert_array_equal(codecs.unpack_ternary(packed, k, fmt), values)


@pytest.mark.parametrize("fmt", FORMATS)
def test_isa_paths_are_byte_identical_to_scalar_even_on_bad_data(isa, fmt, rng):
    for rows, k in [(1, 4099), (3, 1280), (5, 517), (2, 10000)]:
        values = random_codes(rng, (rows, k))
        packed = codecs.pack_ternary(values, fmt)
        noisy = rng.integers(0, 256, size=packed.shape, dtype=np.uint8)
        w = rng.standard_normal((rows, k)).astype(np.float32)
        w[0, -1] = np.nan
        results = []
        for path in (isa, "scalar"):
            with native.forced_isa(path):
                decoded, count, first = raw_decode(fmt, noisy, rows, k)
                try:
                    codecs.ternarize_pack(w, 1.3, fmt)
                except ValueError as err:
                    ternarize_error = str(err)
                results.append((codecs.pack_ternary(values, fmt).tobytes(), decoded.tobytes(), count,
                                first, codecs.ternarize_pack(w[1:], [1.3] * (rows - 1), fmt).tobytes(),
                                ternarize_error,
                                codecs.abs_sum_rows(w[:, :-1]).tobytes(),
                                codecs.unpack_ternary_f32(packed, k, fmt, np.arange(rows) - 1.5).tobytes()))
        assert results[0] == results[1]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_byte_value_decodes_like_reference(isa, fmt):
    per = PER_BYTE[fmt]
    byte_values = np.arange(256)
    if fmt == "2bit":  # bytes without a field equal to 3
        valid = ((byte_values[:, None] >> np.array([0, 2, 4, 6])) & 3 != 3).all(axis=1)
    else:
        valid = byte_values < 243
    packed = byte_values[valid].astype(np.uint8).repeat(3)  # long enough for the SIMD bulk
    assert packed.size == 3 * (81 if fmt == "2bit" else 243)
    expected = reference.unpack_ternary(packed, per * packed.size, fmt)
    np.testing.assert_array_equal(codecs.unpack_ternary(packed, per * packed.size, fmt), expected)
    digits = expected.reshape(-1, per).astype(np.int64) + 1
    np.testing.assert_array_equal((digits * (4 if fmt == "2bit" else 3) ** np.arange(per)).sum(1), packed)


@pytest.mark.parametrize("position", [0, 1, 3, 4, 127, 128, 129, 511, 512, 1023, 1030, 1031])
def test_2bit_code_3_is_counted_and_located(isa, position, rng):
    k = 1032
    packed = codecs.pack_ternary(random_codes(rng, k), "2bit")
    packed[position // 4] |= 3 << (2 * (position % 4))
    with pytest.raises(codecs.CorruptPackedDataError) as caught:
        codecs.unpack_ternary(packed, k, "2bit")
    assert caught.value.count == 1 and caught.value.first_offset == position
    assert f"has 1 invalid codes; first at element {position} (row 0, column {position})" in str(caught.value)
    decoded, count, first = raw_decode("2bit", packed, 1, k)
    assert (count, first, decoded[0, position]) == (1, position, 0)


def test_2bit_counts_every_bad_field_across_rows(isa, rng):
    rows, k = 4, 301
    packed = codecs.pack_ternary(random_codes(rng, (rows, k)), "2bit")
    packed[1, 10] = 0xFF  # four bad fields: elements 40..43 of row 1
    packed[3, 75] |= 0x03  # element 300 of row 3 (the last one)
    with pytest.raises(codecs.CorruptPackedDataError) as caught:
        codecs.unpack_ternary(packed, k, "2bit")
    assert caught.value.count == 5 and caught.value.first_offset == k + 40
    assert "(row 1, column 40)" in str(caught.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_padding_bits_are_ignored(isa, fmt, rng):
    k = 1 + 64 * PER_BYTE[fmt]  # one element in the last byte of each row
    values = random_codes(rng, (3, k))
    packed = codecs.pack_ternary(values, fmt)
    if fmt == "2bit":
        packed[:, -1] |= 0b11111100  # code 3 in every padding field
    else:
        packed[:, -1] += 3 * rng.integers(0, 81, size=3, dtype=np.uint8)  # nonzero padding digits
    np.testing.assert_array_equal(codecs.unpack_ternary(packed, k, fmt), values)


@pytest.mark.parametrize("bad_byte", range(243, 256))
def test_base3_bytes_243_and_up_are_invalid(isa, bad_byte, rng):
    rows, k = 2, 1003
    packed = codecs.pack_ternary(random_codes(rng, (rows, k)), "base3")
    packed[1, 100] = bad_byte
    packed[1, -1] = bad_byte  # the partial last byte counts too
    with pytest.raises(codecs.CorruptPackedDataError) as caught:
        codecs.unpack_ternary(packed, k, "base3")
    assert caught.value.count == 2 and caught.value.first_offset == k + 500
    decoded, count, first = raw_decode("base3", packed, rows, k)
    assert (count, first) == (2, k + 500)
    assert not decoded[1, 500:505].any() and not decoded[1, 1000:].any()
    with pytest.raises(codecs.CorruptPackedDataError):
        codecs.unpack_ternary_f32(packed, k, "base3", 1.0)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad_value", [2, -2, 127, -128])
def test_encoder_rejects_values_outside_ternary(isa, fmt, bad_value, rng):
    values = random_codes(rng, (3, 700))
    values[2, 699] = bad_value
    values[1, 5] = bad_value
    with pytest.raises(ValueError, match=r"has 2 values outside \{-1, 0, 1\}; first at element 705 "
                                         r"\(row 1, column 5\)"):
        codecs.pack_ternary(values, fmt)
    with pytest.raises(ValueError, match="first at element 705"):
        codecs.pack_ternary(values.astype(np.int32), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_f32_per_tensor_and_per_row_scales(isa, fmt, rng):
    values = random_codes(rng, (4, 1001))
    packed = codecs.pack_ternary(values, fmt)
    got = codecs.unpack_ternary_f32(packed, 1001, fmt, np.float32(0.25))
    np.testing.assert_array_equal(got, values.astype(np.float32) * np.float32(0.25))
    scales = np.array([0.5, -2.0, 3.25, 1e-3], dtype=np.float32)
    got = codecs.unpack_ternary_f32(packed, 1001, fmt, scales)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values.astype(np.float32) * scales[:, None])
    one_row = codecs.unpack_ternary_f32(packed[0], 1001, fmt, [2.0])
    np.testing.assert_array_equal(one_row, values[0] * np.float32(2.0))
    with pytest.raises(ValueError, match=r"scales must have 1 or 4 \(rows\) entries, got 3"):
        codecs.unpack_ternary_f32(packed, 1001, fmt, scales[:3])


def numpy_ternarize(w, inv):
    return np.clip(np.rint(w * np.asarray(inv, dtype=np.float32).reshape(-1, 1)), -1, 1).astype(np.int8)


@pytest.mark.parametrize("fmt", FORMATS)
def test_ternarize_pack_matches_numpy_formula(isa, fmt, rng):
    w = rng.standard_normal((6, 1283)).astype(np.float32)
    inv = np.float32(1.0) / np.float32(np.abs(w).mean())
    np.testing.assert_array_equal(codecs.ternarize_pack(w, inv, fmt),
                                  reference.pack_ternary(numpy_ternarize(w, inv), fmt))
    per_row = (1.0 / np.maximum(np.abs(w).mean(axis=1), 1e-5)).astype(np.float32)
    np.testing.assert_array_equal(codecs.ternarize_pack(w, per_row, fmt),
                                  reference.pack_ternary(numpy_ternarize(w, per_row), fmt))


@pytest.mark.parametrize("fmt", FORMATS)
def test_ternarize_ties_round_half_to_even(isa, fmt):
    # w * 2 is exactly +-0.5, +-1.5, +-2.5: rint gives 0, 2, 2 before clipping
    ties = np.array([0.25, -0.25, 0.75, -0.75, 1.25, -1.25, 0.2500001, -0.2500001, 0.0, -0.0], np.float32)
    w = np.tile(ties, (3, 70))
    packed = codecs.ternarize_pack(w, 2.0, fmt)
    q = codecs.unpack_ternary(packed, w.shape[1], fmt)
    np.testing.assert_array_equal(q, numpy_ternarize(w, 2.0))
    np.testing.assert_array_equal(q[0, :10], [0, 0, 1, -1, 1, -1, 1, -1, 0, 0])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_ternarize_reports_non_finite_weights(isa, fmt, bad, rng):
    w = rng.standard_normal((3, 1290)).astype(np.float32)
    w[1, 1289] = bad
    w[2, 0] = bad
    with pytest.raises(ValueError, match=r"w has 2 non-finite values; first at element 2579 "
                                         r"\(row 1, column 1289\)"):
        codecs.ternarize_pack(w, 1.0, fmt)


def test_abs_sum_rows_matches_numpy(isa, rng):
    for k in (0, 1, 7, 8, 9, 1000, 4099):
        w = rng.standard_normal((3, k)).astype(np.float32)
        got = codecs.abs_sum_rows(w)
        assert got.dtype == np.float64 and got.shape == (3,)
        np.testing.assert_allclose(got, np.abs(w.astype(np.float64)).sum(axis=1), rtol=1e-13)


def test_non_contiguous_inputs_are_accepted(rng):
    values = random_codes(rng, (6, 400))[::2, 1::3]
    packed = codecs.pack_ternary(values, "base3")
    np.testing.assert_array_equal(packed, reference.pack_ternary(values, "base3"))
    wide = np.zeros((3, 2 * packed.shape[1]), np.uint8)
    wide[:, ::2] = packed
    np.testing.assert_array_equal(codecs.unpack_ternary(wide[:, ::2], values.shape[1], "base3"), values)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown packed format 'base4'"):
        codecs.pack_ternary(np.zeros(4, np.int8), "base4")
    with pytest.raises(TypeError, match="codes must be an integer array"):
        codecs.pack_ternary(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="codes must be 1-D or 2-D"):
        codecs.pack_ternary(np.zeros((2, 2, 2), np.int8))
    with pytest.raises(TypeError, match="packed must be uint8, got dtype int8"):
        codecs.unpack_ternary(np.zeros(2, np.int8), 8)
    with pytest.raises(ValueError, match="packed rows of 9 2bit codes take 3 bytes, got 2"):
        codecs.unpack_ternary(np.zeros(2, np.uint8), 9)
    with pytest.raises(ValueError, match="k must be a non-negative integer"):
        codecs.unpack_ternary(np.zeros(2, np.uint8), -1)
    with pytest.raises(TypeError, match="w must be float32, got dtype float64"):
        codecs.ternarize_pack(np.zeros((2, 2)), 1.0)
    with pytest.raises(ValueError, match=r"w must be 2-D \[rows, K\]"):
        codecs.abs_sum_rows(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="inv_scales must be finite"):
        codecs.ternarize_pack(np.zeros((2, 2), np.float32), np.inf)
    assert codecs.packed_row_bytes(10, "2bit") == 3 and codecs.packed_row_bytes(10, "base3") == 2
    assert native.lib().obx_packed_row_bytes(7, 10) == 0
    assert native.lib().obx_encode_i8(7, native.ffi().NULL, 1, 1, native.ffi().NULL, native.ffi().NULL) == -1


@settings(max_examples=120, deadline=None)
@given(fmt=st.sampled_from(FORMATS),
       values=hnp.arrays(np.int8, st.one_of(st.tuples(st.integers(0, 1300)),
                                            st.tuples(st.integers(1, 5), st.integers(0, 300))),
                         elements=st.integers(-1, 1)))
def test_hypothesis_round_trip(fmt, values):
    for path in native.available_isas():
        with native.forced_isa(path):
            packed = codecs.pack_ternary(values, fmt)
            np.testing.assert_array_equal(packed, reference.pack_ternary(values, fmt))
            k = values.shape[-1]
            np.testing.assert_array_equal(codecs.unpack_ternary(packed, k, fmt), values)


@settings(max_examples=100, deadline=None)
@given(fmt=st.sampled_from(FORMATS),
       packed=hnp.arrays(np.uint8, st.tuples(st.integers(1, 4), st.integers(1, 300))),
       drop=st.integers(0, 4))
def test_hypothesis_invalid_counts_match_reference(fmt, packed, drop):
    per = PER_BYTE[fmt]
    k = max(packed.shape[1] * per - min(drop, per - 1), 1)
    if fmt == "2bit":
        fields = (packed[:, :, None] >> np.array([0, 2, 4, 6])) & 3
        expected = int((fields.reshape(packed.shape[0], -1)[:, :k] == 3).sum())
    else:
        expected = int((packed >= 243).sum())
    counts = set()
    for path in native.available_isas():
        with native.forced_isa(path):
            counts.add(raw_decode(fmt, packed, packed.shape[0], k)[1:])
    assert len(counts) == 1 and counts.pop()[0] == expected


@settings(max_examples=60, deadline=None)
@given(fmt=st.sampled_from(FORMATS),
       w=hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 400)),
                    elements=st.floats(width=32, allow_nan=False, allow_infinity=False)),
       inv=st.floats(min_value=2.0**-100, max_value=2.0**100, width=32))
def test_hypothesis_ternarize_matches_numpy_on_every_isa(fmt, w, inv):
    with np.errstate(over="ignore"):  # w * inv may overflow to inf, which clips to +-1
        expected = reference.pack_ternary(numpy_ternarize(w, np.float32(inv)), fmt)
    for path in native.available_isas():
        with native.forced_isa(path):
            np.testing.assert_array_equal(codecs.ternarize_pack(w, inv, fmt), expected)
