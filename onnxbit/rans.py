"""The "rans" storage format through the C codec (csrc/include/onnxbit/rans.h):
base3 rows entropy-coded per tensor, below log2(3) bits a weight when the
codes are skewed. :func:`pack_rans` / :func:`unpack_rans` go between int8
codes [N, K] and the stream; :func:`encode_base3` / :func:`decode_base3`
between base3 rows and the stream."""

from __future__ import annotations

import numpy as np

from onnxbit import codecs, formats, native

NAME = "rans"
ROW_FORMAT = formats.RANS_ROW_FORMAT  # what the stream codes, and what sessions repack from
DEFAULT_BLOCK_ROWS = 0  # blocks of about 64 KiB of base3 bytes


class CorruptStreamError(ValueError):
    """A rans stream that is malformed, truncated or corrupt."""


def encode_base3(rows: np.ndarray, k: int, block_rows: int = DEFAULT_BLOCK_ROWS) -> np.ndarray:
    """base3 rows [N, row_bytes] of K codes -> the rans stream (block_rows 0: automatic)."""
    data = np.ascontiguousarray(rows, dtype=np.uint8)
    if data.ndim != 2:
        raise ValueError(f"base3 rows must be 2-D [N, row_bytes], got shape {data.shape}")
    n, row_bytes = data.shape
    if k <= 0 or row_bytes != formats.get(ROW_FORMAT).row_bytes(k):
        raise ValueError(f"base3 rows of {row_bytes} bytes do not hold K={k} codes")
    if block_rows < 0:
        raise ValueError(f"block_rows={block_rows} must be >= 0 (0: automatic)")
    ffi, lib = native.ffi(), native.lib()
    capacity = int(lib.obx_rans_max_bytes(n, k, block_rows))
    out = np.empty(capacity, dtype=np.uint8)
    err = ffi.new("char[256]")
    written = lib.obx_rans_encode_base3(ffi.from_buffer("uint8_t[]", data), n, k, block_rows,
                                        ffi.from_buffer("uint8_t[]", out, require_writable=True), capacity, err, 256)
    if written == 0:
        raise ValueError(ffi.string(err).decode())
    return out[:written].copy()


def decode_base3(stream, n: int, row_bytes: int) -> np.ndarray:
    data = np.ascontiguousarray(np.asarray(stream, dtype=np.uint8).reshape(-1))
    out = np.empty((n, row_bytes), dtype=np.uint8)
    ffi, lib = native.ffi(), native.lib()
    err = ffi.new("char[256]")
    status = lib.obx_rans_decode_base3(ffi.from_buffer("uint8_t[]", data), data.size, n, row_bytes,
                                       ffi.from_buffer("uint8_t[]", out, require_writable=True), err, 256)
    if status != 0:
        raise CorruptStreamError(ffi.string(err).decode())
    return out


def pack_rans(codes_nk: np.ndarray, block_rows: int = DEFAULT_BLOCK_ROWS) -> np.ndarray:
    """int8 codes [N, K] -> the rans stream (uint8, 1-D)."""
    codes_nk = np.atleast_2d(codes_nk)
    return encode_base3(codecs.pack_ternary(codes_nk, ROW_FORMAT), codes_nk.shape[1], block_rows)


def unpack_rans(stream, k: int, n: int) -> np.ndarray:
    """The rans stream -> int8 codes [N, K]; CorruptStreamError / CorruptPackedDataError for bad data."""
    rows = decode_base3(stream, n, formats.get(ROW_FORMAT).row_bytes(k))
    return codecs.unpack_ternary(rows, k, ROW_FORMAT)
