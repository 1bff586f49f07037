"""The "zeroruns" storage format (layout: csrc/include/onnxbit/zero_runs.h):
ternary codes as the zero-run length before each nonzero code with its sign
in the low bit, one varint each. Small for mostly-zero tensors (about one
byte per nonzero while runs stay under 64 zeros). The encoder is numpy; the
decoder is the library's (sessions decode to base3 rows at creation)."""

from __future__ import annotations

import numpy as np

from onnxbit import codecs, formats

NAME = "zeroruns"
ROW_FORMAT = "base3"  # what the stream decodes to, and what sessions repack from
VERSION = 1
VARINT_MAX_BYTES = 9


class CorruptStreamError(ValueError):
    """A zeroruns stream that is malformed, truncated or corrupt."""


def varints(values: np.ndarray) -> np.ndarray:
    """Unsigned LEB128 of each value (< 2^63), concatenated (uint8)."""
    values = np.asarray(values, dtype=np.uint64).reshape(-1)
    lengths = np.ones(values.size, dtype=np.int64)
    for i in range(1, VARINT_MAX_BYTES):
        lengths += (values >> np.uint64(7 * i)) > 0
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    for i in range(int(lengths.max(initial=0))):
        has = lengths > i
        group = ((values[has] >> np.uint64(7 * i)) & np.uint64(0x7F)).astype(np.uint8)
        more = np.where(lengths[has] > i + 1, 0x80, 0).astype(np.uint8)
        out[starts[has] + i] = group | more
    return out


def pack_zero_runs(codes_nk: np.ndarray) -> np.ndarray:
    """int8 codes [N, K] in {-1, 0, 1} -> the zeroruns stream (uint8, 1-D)."""
    flat = np.asarray(codes_nk, dtype=np.int8).reshape(-1)
    if flat.size and (flat.min() < -1 or flat.max() > 1):
        raise ValueError("zeroruns codes must be in {-1, 0, 1}")
    positions = np.flatnonzero(flat).astype(np.int64)
    zeros_before = np.diff(positions, prepend=-1) - 1
    entries = (zeros_before.astype(np.uint64) << np.uint64(1)) | (flat[positions] < 0).astype(np.uint64)
    return np.concatenate([np.array([VERSION], np.uint8), varints([positions.size]), varints(entries)])


def encode_base3(rows: np.ndarray, k: int) -> np.ndarray:
    """base3 rows [N, row_bytes] of K codes -> the zeroruns stream."""
    return pack_zero_runs(codecs.unpack_ternary(np.atleast_2d(rows), k, ROW_FORMAT))


def decode_base3(stream, n: int, k: int) -> np.ndarray:
    """The stream -> base3 rows [N, row_bytes] (the library's decoder); CorruptStreamError for bad data."""
    return codecs.decode_stream_base3(formats.ZERO_RUNS, stream, n, k, CorruptStreamError)


def unpack_zero_runs(stream, k: int, n: int) -> np.ndarray:
    """The stream -> int8 codes [N, K]."""
    return codecs.unpack_ternary(decode_base3(stream, n, k), k, ROW_FORMAT)
