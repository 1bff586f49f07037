"""CRC32C in pure Python, from its definition (reflected polynomial
0x82F63B78, initial and final value 0xFFFFFFFF): a byte table built bit by
bit, one table step a byte. The reference the C kernels (csrc/integrity/)
must match on every ISA, and what the numpy reference op checks with."""

from __future__ import annotations

import numpy as np

POLYNOMIAL = 0x82F63B78


def _byte_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        state = byte
        for _ in range(8):
            state = (state >> 1) ^ (POLYNOMIAL if state & 1 else 0)
        table.append(state)
    return tuple(table)


_TABLE = _byte_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32C of `data` continuing from the CRC32C `crc` of earlier bytes."""
    state = crc ^ 0xFFFFFFFF
    table = _TABLE
    for byte in bytes(data):
        state = (state >> 8) ^ table[(state ^ byte) & 0xFF]
    return state ^ 0xFFFFFFFF


def packed_weight_crc32c(packed: np.ndarray, scales: np.ndarray) -> int:
    """A TernaryMatMul node's crc32c attribute: B's bytes, then the scales' (float32 little-endian)."""
    b = np.ascontiguousarray(packed, dtype=np.uint8).tobytes()
    s = np.ascontiguousarray(scales, dtype="<f4").tobytes()
    return crc32c(s, crc32c(b))
