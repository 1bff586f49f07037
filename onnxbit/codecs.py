"""Packed ternary weight codecs backed by the C library (csrc/codec/).

Formats (csrc/include/onnxbit/codec.h): ``2bit`` stores code w + 1 in two bits,
four a byte, least significant first; ``base3`` stores five base-3 digits
w + 1 a byte (1.6 bits a weight). 2-D tensors are packed row by row with each
row padded to whole bytes. Contiguous inputs are handed to C without copies.
"""

from __future__ import annotations

import numpy as np

from onnxbit import formats, native

FORMATS = formats.NAMES
_isa_checked = False


class CorruptPackedDataError(ValueError):
    """Packed data holds codes no ternary value encodes to."""

    def __init__(self, message: str, count: int, first_offset: int):
        super().__init__(message)
        self.count = count
        self.first_offset = first_offset


def _kernels():
    """The cffi handles, after making sure the ISA selection succeeded."""
    global _isa_checked
    if not _isa_checked:
        native.isa()  # raises NativeLibraryError for a bad ONNXBIT_ISA
        _isa_checked = True
    return native.ffi(), native.lib()


def format_id(fmt: str) -> int:
    """The C library's number for a format name (OBX_FMT_* in formats.h)."""
    return formats.get(fmt).id


def _check_length(k, name: str = "k") -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {k!r}")
    return int(k)


def packed_row_bytes(k: int, fmt: str = formats.DEFAULT) -> int:
    """Bytes of one packed row of ``k`` elements."""
    fmt_id = format_id(fmt)
    return int(native.lib().obx_packed_row_bytes(fmt_id, _check_length(k)))


def _where(offset: int, k: int) -> str:
    row, column = divmod(offset, k) if k else (0, offset)
    return f"element {offset} (row {row}, column {column})"


def _as_rows(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {array.shape}")
    return array.reshape(1, -1) if array.ndim == 1 else array


def _out_of_range_error(name: str, values: np.ndarray, count: int, first: int, k: int) -> ValueError:
    return ValueError(f"{name} has {count} values outside {{-1, 0, 1}}; first at "
                      f"{_where(first, k)}: {values.reshape(-1)[first]}")


def pack_ternary(codes, fmt: str = formats.DEFAULT) -> np.ndarray:
    """Values in {-1,0,1} ([K] or [rows, K], integer dtype) -> uint8 packed rows."""
    fmt_id = format_id(fmt)
    values = np.asarray(codes)
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"codes must be an integer array (int8), got dtype {values.dtype}")
    rows2d = _as_rows(values, "codes")
    rows, k = rows2d.shape
    if values.dtype != np.int8:
        outside = (rows2d < -1) | (rows2d > 1)
        if outside.any():
            flat = np.flatnonzero(outside)
            raise _out_of_range_error("codes", rows2d, int(flat.size), int(flat[0]), k)
        rows2d = rows2d.astype(np.int8)
    rows2d = np.ascontiguousarray(rows2d)
    ffi, lib = _kernels()
    out = np.empty((rows, lib.obx_packed_row_bytes(fmt_id, k)), dtype=np.uint8)
    first = ffi.new("size_t *")
    bad = lib.obx_encode_i8(fmt_id, ffi.from_buffer("int8_t[]", rows2d), rows, k,
                            ffi.from_buffer("uint8_t[]", out, require_writable=True), first)
    if bad:
        raise _out_of_range_error("codes", rows2d, int(bad), int(first[0]), k)
    return out[0] if values.ndim == 1 else out


def _packed_rows(packed, k: int, fmt: str) -> tuple[np.ndarray, bool]:
    data = np.asarray(packed)
    if data.dtype != np.uint8:
        raise TypeError(f"packed must be uint8, got dtype {data.dtype}")
    rows2d = _as_rows(data, "packed")
    expected = packed_row_bytes(k, fmt)
    if rows2d.shape[1] != expected:
        raise ValueError(f"packed rows of {k} {fmt} codes take {expected} bytes, "
                         f"got {rows2d.shape[1]} (shape {data.shape})")
    return np.ascontiguousarray(rows2d), data.ndim == 1


def _corrupt(fmt: str, count: int, first: int, k: int) -> CorruptPackedDataError:
    return CorruptPackedDataError(
        f"packed {fmt} data has {count} invalid codes; first at {_where(first, k)}", count, first)


def unpack_ternary(packed, k: int, fmt: str = formats.DEFAULT) -> np.ndarray:
    """uint8 packed rows ([row_bytes] or [rows, row_bytes]) -> int8 [K] or [rows, K]."""
    fmt_id = format_id(fmt)
    k = _check_length(k)
    rows2d, one_d = _packed_rows(packed, k, fmt)
    rows = rows2d.shape[0]
    ffi, lib = _kernels()
    out = np.empty((rows, k), dtype=np.int8)
    first = ffi.new("size_t *")
    bad = lib.obx_decode_i8(fmt_id, ffi.from_buffer("uint8_t[]", rows2d), rows, k,
                            ffi.from_buffer("int8_t[]", out, require_writable=True), first)
    if bad:
        raise _corrupt(fmt, int(bad), int(first[0]), k)
    return out[0] if one_d else out


def _scale_vector(scales, rows: int, name: str, per: str = "rows") -> np.ndarray:
    vector = np.ascontiguousarray(np.asarray(scales, dtype=np.float32).reshape(-1))
    if vector.size not in (1, rows):
        raise ValueError(f"{name} must have 1 or {rows} ({per}) entries, got {vector.size}")
    return vector


def unpack_ternary_f32(packed, k: int, fmt: str, scales) -> np.ndarray:
    """Packed rows -> float32 w * scale, with one scale or one per row."""
    fmt_id = format_id(fmt)
    k = _check_length(k)
    rows2d, one_d = _packed_rows(packed, k, fmt)
    rows = rows2d.shape[0]
    scale_vector = _scale_vector(scales, rows, "scales")
    ffi, lib = _kernels()
    out = np.empty((rows, k), dtype=np.float32)
    first = ffi.new("size_t *")
    bad = lib.obx_decode_f32(fmt_id, ffi.from_buffer("uint8_t[]", rows2d), rows, k,
                             ffi.from_buffer("float[]", scale_vector), scale_vector.size,
                             ffi.from_buffer("float[]", out, require_writable=True), first)
    if bad:
        raise _corrupt(fmt, int(bad), int(first[0]), k)
    return out[0] if one_d else out


def _float_matrix(w, name: str, layout: str = "[rows, K]") -> np.ndarray:
    array = np.asarray(w)
    if array.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D {layout}, got shape {array.shape}")
    return np.ascontiguousarray(array)


def ternarize_pack(w, inv_scales, fmt: str = formats.DEFAULT) -> np.ndarray:
    """Fused BitNet quantize + pack: q = clip(rint(w * inv_scale), -1, 1) in float32
    (round half to even), packed as uint8 [rows, row_bytes]."""
    fmt_id = format_id(fmt)
    matrix = _float_matrix(w, "w")
    rows, k = matrix.shape
    inv = _scale_vector(inv_scales, rows, "inv_scales")
    if not np.isfinite(inv).all():
        raise ValueError(f"inv_scales must be finite, got {inv}")
    ffi, lib = _kernels()
    out = np.empty((rows, lib.obx_packed_row_bytes(fmt_id, k)), dtype=np.uint8)
    first = ffi.new("size_t *")
    bad = lib.obx_ternarize_pack_f32(fmt_id, ffi.from_buffer("float[]", matrix), rows, k,
                                     ffi.from_buffer("float[]", inv), inv.size,
                                     ffi.from_buffer("uint8_t[]", out, require_writable=True),
                                     first)
    if bad:
        offset = int(first[0])
        raise ValueError(f"w has {int(bad)} non-finite values; first at {_where(offset, k)}: "
                         f"{matrix.reshape(-1)[offset]}")
    return out


def abs_sum_rows(w) -> np.ndarray:
    """Sum of |w| per row of a float32 [rows, K] matrix, accumulated in double."""
    matrix = _float_matrix(w, "w")
    rows, k = matrix.shape
    ffi, lib = _kernels()
    out = np.empty(rows, dtype=np.float64)
    lib.obx_abs_sum_rows_f32(ffi.from_buffer("float[]", matrix), rows, k,
                             ffi.from_buffer("double[]", out, require_writable=True))
    return out


def ternarize_pack_columns(w_kn, inv_scales, fmt: str = formats.DEFAULT) -> np.ndarray:
    """Fused quantize + pack of the columns of a float32 [K, N] matrix.

    Returns uint8 [N, row_bytes(K)]: row j is column j quantized with
    inv_scales[j] (or the single inv_scale), byte for byte what
    ``ternarize_pack(w_kn.T, inv_scales, fmt)`` gives, without the transposed copy.
    """
    fmt_id = format_id(fmt)
    matrix = _float_matrix(w_kn, "w_kn", "[K, N]")
    k, n = matrix.shape
    inv = _scale_vector(inv_scales, n, "inv_scales", "columns")
    if not np.isfinite(inv).all():
        raise ValueError(f"inv_scales must be finite, got {inv}")
    ffi, lib = _kernels()
    out = np.empty((n, lib.obx_packed_row_bytes(fmt_id, k)), dtype=np.uint8)
    first = ffi.new("size_t *")
    bad = lib.obx_ternarize_pack_cols_f32(fmt_id, ffi.from_buffer("float[]", matrix), k, n,
                                          ffi.from_buffer("float[]", inv), inv.size,
                                          ffi.from_buffer("uint8_t[]", out, require_writable=True),
                                          first)
    if bad < 0:
        raise MemoryError("ternarize_pack_columns could not allocate its tile buffer")
    if bad:
        offset = int(first[0])  # row-major index into w_kn
        raise ValueError(f"w_kn has {int(bad)} non-finite values; first at {_where(offset, n)}: "
                         f"{matrix.reshape(-1)[offset]}")
    return out


def abs_sum_columns(w_kn) -> np.ndarray:
    """Sum of |w| per column of a float32 [K, N] matrix, accumulated in double,
    bit-identical to ``abs_sum_rows(w_kn.T)``."""
    matrix = _float_matrix(w_kn, "w_kn", "[K, N]")
    k, n = matrix.shape
    ffi, lib = _kernels()
    out = np.empty(n, dtype=np.float64)
    lib.obx_abs_sum_cols_f32(ffi.from_buffer("float[]", matrix), k, n,
                             ffi.from_buffer("double[]", out, require_writable=True))
    return out


def decode_stream_base3(name: str, stream, n: int, k: int, error: type[Exception] = ValueError) -> np.ndarray:
    """A stream format's bytes -> base3 rows [N, row_bytes], with the library's
    decoder (the one sessions run); `error` with its message for bad data."""
    ffi, lib = _kernels()
    raw = name.encode()
    stream_id = lib.obx_stream_from_name(raw, len(raw))
    if stream_id < 0:
        raise ValueError(f"unknown stream format {name!r}; expected one of {formats.STREAMS}")
    data = np.ascontiguousarray(np.asarray(stream, dtype=np.uint8).reshape(-1))
    out = np.empty((n, formats.get(formats.STREAM_ROW_FORMAT).row_bytes(k)), dtype=np.uint8)
    err = ffi.new("char[256]")
    status = lib.obx_stream_decode_base3(stream_id, ffi.from_buffer("uint8_t[]", data), data.size, n, k,
                                         ffi.from_buffer("uint8_t[]", out, require_writable=True), err, 256)
    if status != 0:
        raise error(ffi.string(err).decode())
    return out


# The library's stream encoders by format: (worst-case size, encoder), both named obx_<prefix>_*.
_STREAM_ENCODERS = {formats.ZERO_RUNS: "zero_runs", formats.SPARSE: "sparse"}


def encode_stream_base3(name: str, rows, k: int) -> np.ndarray:
    """base3 rows [N, row_bytes] of K codes -> the 1-D uint8 stream of format `name`
    (zeroruns or sparse), with the library's encoder; ValueError for invalid rows."""
    prefix = _STREAM_ENCODERS.get(name)
    if prefix is None:
        raise ValueError(f"no library encoder for stream format {name!r}; expected one of {tuple(_STREAM_ENCODERS)}")
    data = np.ascontiguousarray(np.atleast_2d(np.asarray(rows, dtype=np.uint8)))
    n = data.shape[0]
    if data.shape[1] != formats.get(formats.STREAM_ROW_FORMAT).row_bytes(k):
        raise ValueError(f"base3 rows of {data.shape[1]} bytes do not hold K={k} codes")
    ffi, lib = _kernels()
    capacity = int(getattr(lib, f"obx_{prefix}_max_bytes")(n, k))
    out = np.empty(max(capacity, 1), dtype=np.uint8)
    err = ffi.new("char[256]")
    written = getattr(lib, f"obx_{prefix}_encode_base3")(ffi.from_buffer("uint8_t[]", data), n, k,
                                                         ffi.from_buffer("uint8_t[]", out, require_writable=True),
                                                         capacity, err, 256)
    if written == 0:
        raise ValueError(ffi.string(err).decode())
    return out[:written].copy()
