"""The "zeroruns" format decoded in pure Python/numpy (layout:
csrc/include/onnxbit/zero_runs.h): the reference the C decoder
(csrc/codec/codec_zero_runs.c) must match, output and accept/reject alike."""

from __future__ import annotations

import numpy as np

from onnxbit.reference.codecs import pack_ternary

VERSION = 1
VARINT_MAX_BYTES = 9


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
