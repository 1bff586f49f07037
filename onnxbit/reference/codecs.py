"""Packed ternary formats in plain numpy (see csrc/include/onnxbit/codec.h).

2bit:  code = w + 1, four codes a byte, element i at bits 2*(i%4) of byte i//4.
base3: five digits d = w + 1 a byte, byte = sum d_j * 3**j.
2-D tensors are packed row by row, each row padded to whole bytes with code 0.
"""

from __future__ import annotations

import numpy as np

FORMATS = ("2bit", "base3")
_CODES_PER_BYTE = {"2bit": 4, "base3": 5}
_PLACE_VALUES = {
    "2bit": np.array([1, 4, 16, 64], dtype=np.int64),
    "base3": np.array([1, 3, 9, 27, 81], dtype=np.int64),
}


def _per_byte(fmt: str) -> int:
    if fmt not in _CODES_PER_BYTE:
        raise ValueError(f"unknown packed format {fmt!r}; expected one of {FORMATS}")
    return _CODES_PER_BYTE[fmt]


def packed_row_bytes(k: int, fmt: str = "2bit") -> int:
    per = _per_byte(fmt)
    return -(-int(k) // per)


def pack_ternary(codes: np.ndarray, fmt: str = "2bit") -> np.ndarray:
    """int8 values in {-1,0,1}, shape [K] or [rows, K] -> uint8 packed rows."""
    per = _per_byte(fmt)
    values = np.asarray(codes)
    if values.ndim not in (1, 2):
        raise ValueError(f"codes must be 1-D or 2-D, got shape {values.shape}")
    if values.size and (values.min() < -1 or values.max() > 1):
        raise ValueError("codes must all be in {-1, 0, 1}")
    rows2d = values.reshape(1, -1) if values.ndim == 1 else values
    rows, k = rows2d.shape
    n_bytes = packed_row_bytes(k, fmt)
    padded = np.zeros((rows, n_bytes * per), dtype=np.int64)
    padded[:, :k] = rows2d.astype(np.int64) + 1
    packed = (padded.reshape(rows, n_bytes, per) * _PLACE_VALUES[fmt]).sum(axis=2).astype(np.uint8)
    return packed[0] if values.ndim == 1 else packed


def unpack_ternary(packed: np.ndarray, k: int, fmt: str = "2bit") -> np.ndarray:
    """uint8 packed rows ([row_bytes] or [rows, row_bytes]) -> int8 [K] or [rows, K].

    Raises ValueError when a code inside the rows is invalid (2bit code 3,
    base3 byte >= 243)."""
    data = np.asarray(packed)
    if data.dtype != np.uint8:
        raise TypeError(f"packed must be uint8, got {data.dtype}")
    rows2d = data.reshape(1, -1) if data.ndim == 1 else data
    if rows2d.ndim != 2 or rows2d.shape[1] != packed_row_bytes(k, fmt):
        raise ValueError(f"packed shape {data.shape} does not hold rows of {k} {fmt} codes")
    radix = 4 if fmt == "2bit" else 3
    digits = (rows2d.astype(np.int64)[:, :, None] // _PLACE_VALUES[fmt]) % radix
    digits = digits.reshape(rows2d.shape[0], -1)[:, :k]
    if fmt == "2bit":  # code 3 inside the row; padding fields are ignored
        invalid = int(np.count_nonzero(digits == 3))
    else:
        invalid = int(np.count_nonzero(rows2d >= 243))
    if invalid:
        raise ValueError(f"packed {fmt} data has {invalid} invalid codes")
    values = (digits - 1).astype(np.int8)
    return values[0] if data.ndim == 1 else values
