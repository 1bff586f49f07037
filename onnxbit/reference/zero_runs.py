"""The "zeroruns" format in pure Python/numpy (layout:
csrc/include/onnxbit/zero_runs.h): the references the C encoder and decoder
(csrc/codec/codec_zero_runs.c) must match, byte for byte and accept/reject
alike."""

from __future__ import annotations

import numpy as np

from onnxbit.reference.codecs import pack_ternary

VERSION = 1
VARINT_MAX_BYTES = 9


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


def encode(codes_nk: np.ndarray) -> np.ndarray:
    """int8 codes [N, K] in {-1, 0, 1} -> the zeroruns stream (uint8, 1-D)."""
    flat = np.asarray(codes_nk, dtype=np.int8).reshape(-1)
    if flat.size and (flat.min() < -1 or flat.max() > 1):
        raise ValueError("zeroruns codes must be in {-1, 0, 1}")
    positions = np.flatnonzero(flat).astype(np.int64)
    zeros_before = np.diff(positions, prepend=-1) - 1
    entries = (zeros_before.astype(np.uint64) << np.uint64(1)) | (flat[positions] < 0).astype(np.uint64)
    return np.concatenate([np.array([VERSION], np.uint8), varints([positions.size]), varints(entries)])


def _varint(stream: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(VARINT_MAX_BYTES):
        if pos >= len(stream):
            raise ValueError("zeroruns stream is truncated inside a varint")
        byte = stream[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise ValueError("zeroruns stream has a varint longer than 9 bytes")


def decode_codes(stream: bytes, n: int, k: int) -> np.ndarray:
    """The stream -> int8 codes [N, K]; ValueError for a malformed stream."""
    stream = bytes(stream)
    if not stream or stream[0] != VERSION:
        raise ValueError("zeroruns stream is empty or not version 1")
    total = n * k
    nonzeros, pos = _varint(stream, 1)
    if nonzeros > total:
        raise ValueError("zeroruns stream claims more nonzeros than codes")
    codes = np.zeros(total, dtype=np.int8)
    position = 0
    for _ in range(nonzeros):
        entry, pos = _varint(stream, pos)
        position += entry >> 1
        if position >= total:
            raise ValueError("zeroruns stream runs past the codes")
        codes[position] = -1 if entry & 1 else 1
        position += 1
    if pos != len(stream):
        raise ValueError("zeroruns stream has bytes after its last nonzero")
    return codes.reshape(n, k)


def decode(stream: bytes, n: int, k: int) -> np.ndarray:
    """The stream -> base3 rows [N, row_bytes]."""
    return pack_ternary(decode_codes(stream, n, k), "base3")
