"""The "sparse" storage format (layout: csrc/include/onnxbit/sparse.h):
compressed sparse rows, each row's nonzero columns as delta-coded varints and
one sign bit per nonzero, for mostly-zero tensors. Encoder and decoder are
the library's (sessions decode to base3 rows at creation); the numpy ones in
onnxbit.reference.sparse are the test oracle."""

from __future__ import annotations

import numpy as np

from onnxbit import codecs, formats

NAME = "sparse"
ROW_FORMAT = "base3"


class CorruptStreamError(ValueError):
    """A sparse stream that is malformed, truncated or corrupt."""


def pack_sparse(codes_nk: np.ndarray) -> np.ndarray:
    """int8 codes [N, K] in {-1, 0, 1} -> the sparse stream (uint8, 1-D)."""
    codes = np.atleast_2d(np.asarray(codes_nk, dtype=np.int8))
    if codes.size and (codes.min() < -1 or codes.max() > 1):
        raise ValueError("sparse codes must be in {-1, 0, 1}")
    return encode_base3(codecs.pack_ternary(codes, ROW_FORMAT), codes.shape[1])


def encode_base3(rows: np.ndarray, k: int) -> np.ndarray:
    """base3 rows [N, row_bytes] of K codes -> the sparse stream (the library's encoder)."""
    return codecs.encode_stream_base3(formats.SPARSE, rows, k)


def decode_base3(stream, n: int, k: int) -> np.ndarray:
    """The stream -> base3 rows [N, row_bytes] (the library's decoder); CorruptStreamError for bad data."""
    return codecs.decode_stream_base3(formats.SPARSE, stream, n, k, CorruptStreamError)
