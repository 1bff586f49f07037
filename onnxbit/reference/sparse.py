"""The "sparse" format in pure Python/numpy (layout:
csrc/include/onnxbit/sparse.h): the references the C encoder and decoder
(csrc/codec/codec_sparse.c) must match, byte for byte and accept/reject
alike."""

from __future__ import annotations

import numpy as np

from onnxbit.reference.codecs import pack_ternary
from onnxbit.reference.zero_runs import _varint, varints

VERSION = 1


def encode(codes_nk: np.ndarray) -> np.ndarray:
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


def decode_codes(stream: bytes, n: int, k: int) -> np.ndarray:
    """The stream -> int8 codes [N, K]; ValueError for a malformed stream."""
    stream = bytes(stream)
    if not stream or stream[0] != VERSION:
        raise ValueError("sparse stream is empty or not version 1")
    nonzeros, pos = _varint(stream, 1)
    if nonzeros > n * k:
        raise ValueError("sparse stream claims more nonzeros than codes")
    sign_bytes = -(-nonzeros // 8)
    if pos + sign_bytes > len(stream):
        raise ValueError("sparse stream is truncated in its sign bytes")
    signs = np.unpackbits(np.frombuffer(stream[pos:pos + sign_bytes], np.uint8), bitorder="little")
    if signs[nonzeros:].any():
        raise ValueError("sparse stream has sign bits set past its nonzeros")
    pos += sign_bytes
    codes = np.zeros((n, k), dtype=np.int8)
    placed = 0
    for row in range(n):
        count, pos = _varint(stream, pos)
        if count > k or placed + count > nonzeros:
            raise ValueError("sparse stream: a row claims too many nonzeros")
        col = 0
        for _ in range(count):
            gap, pos = _varint(stream, pos)
            col += gap
            if col >= k:
                raise ValueError("sparse stream: a position is past K")
            codes[row, col] = -1 if signs[placed] else 1
            placed += 1
            col += 1
    if placed != nonzeros:
        raise ValueError("sparse stream: its rows do not hold its nonzero count")
    if pos != len(stream):
        raise ValueError("sparse stream has bytes after its last row")
    return codes


def decode(stream: bytes, n: int, k: int) -> np.ndarray:
    """The stream -> base3 rows [N, row_bytes]."""
    return pack_ternary(decode_codes(stream, n, k), "base3")
