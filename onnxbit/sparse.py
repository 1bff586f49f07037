"""The "sparse" storage format (layout: csrc/include/onnxbit/sparse.h):
compressed sparse rows, each row's nonzero columns as delta-coded varints and
one sign bit per nonzero, for mostly-zero tensors. The encoder is numpy; the
decoder is the library's (sessions decode to base3 rows at creation)."""

from __future__ import annotations

import numpy as np

from onnxbit import codecs, formats
from onnxbit.zero_runs import varints

NAME = "sparse"
ROW_FORMAT = "base3"
VERSION = 1


class CorruptStreamError(ValueError):
    """A sparse stream that is malformed, truncated or corrupt."""


def pack_sparse(codes_nk: np.ndarray) -> np.ndarray:
    """int8 codes [N, K] in {-1, 0, 1} -> the sparse stream (uint8, 1-D)."""
    codes = np.atleast_2d(np.asarray(codes_nk, dtype=np.int8))
    if codes.size and (codes.min() < -1 or codes.max() > 1):
        raise ValueError("sparse codes must be in {-1, 0, 1}")
    rows, cols = np.nonzero(codes)  # row-major: rows ascending, columns ascending within a row
    counts = np.bincount(rows, minlength=codes.shape[0])
    first_in_row = np.ones(rows.size, dtype=bool)
    first_in_row[1:] = rows[1:] != rows[:-1]
    previous = np.concatenate([[-1], cols[:-1]]).astype(np.int64)
    gaps = np.where(first_in_row, cols, cols - previous - 1)
    signs = np.packbits(codes[rows, cols] < 0, bitorder="little")
    # Each row: its count, then its gaps; rows concatenated.
    pieces = np.split(gaps, np.cumsum(counts)[:-1])
    body = [np.concatenate([varints([count]), varints(piece)]) for count, piece in zip(counts, pieces)]
    return np.concatenate([np.array([VERSION], np.uint8), varints([rows.size]), signs, *body])


def encode_base3(rows: np.ndarray, k: int) -> np.ndarray:
    """base3 rows [N, row_bytes] of K codes -> the sparse stream."""
    return pack_sparse(codecs.unpack_ternary(np.atleast_2d(rows), k, ROW_FORMAT))


def decode_base3(stream, n: int, k: int) -> np.ndarray:
    """The stream -> base3 rows [N, row_bytes] (the library's decoder); CorruptStreamError for bad data."""
    return codecs.decode_stream_base3(formats.SPARSE, stream, n, k, CorruptStreamError)
