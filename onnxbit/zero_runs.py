"""The "zeroruns" storage format (layout: csrc/include/onnxbit/zero_runs.h):
ternary codes as the zero-run length before each nonzero code with its sign
in the low bit, one varint each. Small for mostly-zero tensors (about one
byte per nonzero while runs stay under 64 zeros). Encoder and decoder are
the library's (sessions decode to base3 rows at creation); the numpy ones in
onnxbit.reference.zero_runs are the test oracle."""

from __future__ import annotations

import numpy as np

from onnxbit import codecs, formats

NAME = "zeroruns"
ROW_FORMAT = "base3"  # what the stream decodes to, and what sessions repack from


class CorruptStreamError(ValueError):
    """A zeroruns stream that is malformed, truncated or corrupt."""


def pack_zero_runs(codes_nk: np.ndarray) -> np.ndarray:
    """int8 codes [N, K] in {-1, 0, 1} -> the zeroruns stream (uint8, 1-D)."""
    codes = np.atleast_2d(np.asarray(codes_nk, dtype=np.int8))
    if codes.size and (codes.min() < -1 or codes.max() > 1):
        raise ValueError("zeroruns codes must be in {-1, 0, 1}")
    return encode_base3(codecs.pack_ternary(codes, ROW_FORMAT), codes.shape[1])


def encode_base3(rows: np.ndarray, k: int) -> np.ndarray:
    """base3 rows [N, row_bytes] of K codes -> the zeroruns stream (the library's encoder)."""
    return codecs.encode_stream_base3(formats.ZERO_RUNS, rows, k)


def decode_base3(stream, n: int, k: int) -> np.ndarray:
    """The stream -> base3 rows [N, row_bytes] (the library's decoder); CorruptStreamError for bad data."""
    return codecs.decode_stream_base3(formats.ZERO_RUNS, stream, n, k, CorruptStreamError)


def unpack_zero_runs(stream, k: int, n: int) -> np.ndarray:
    """The stream -> int8 codes [N, K]."""
    return codecs.unpack_ternary(decode_base3(stream, n, k), k, ROW_FORMAT)
