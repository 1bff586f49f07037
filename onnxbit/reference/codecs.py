"""Packed ternary formats in plain numpy, from their layouts in
onnxbit.formats: byte = sum d_j * radix**j over codes_per_byte digits
d = w + 1 (2bit: radix 4, four a byte; base3: radix 3, five a byte).
2-D tensors are packed row by row, each row padded to whole bytes with code 0.
"""

from __future__ import annotations

import numpy as np

from onnxbit import formats
from onnxbit.formats import NAMES as FORMATS  # noqa: F401  (re-exported)


def _place_values(fmt: formats.StorageFormat) -> np.ndarray:
    return fmt.radix ** np.arange(fmt.codes_per_byte, dtype=np.int64)


def packed_row_bytes(k: int, fmt: str = formats.DEFAULT) -> int:
    return formats.get(fmt).row_bytes(int(k))


def pack_ternary(codes: np.ndarray, fmt: str = formats.DEFAULT) -> np.ndarray:
    """int8 values in {-1,0,1}, shape [K] or [rows, K] -> uint8 packed rows."""
    layout = formats.get(fmt)
    per = layout.codes_per_byte
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
    packed = (padded.reshape(rows, n_bytes, per) * _place_values(layout)).sum(axis=2).astype(np.uint8)
    return packed[0] if values.ndim == 1 else packed


def unpack_ternary(packed: np.ndarray, k: int, fmt: str = formats.DEFAULT) -> np.ndarray:
    """uint8 packed rows ([row_bytes] or [rows, row_bytes]) -> int8 [K] or [rows, K].

    Raises ValueError when a code inside the rows is invalid (2bit code 3,
    base3 byte >= 243)."""
    data = np.asarray(packed)
    if data.dtype != np.uint8:
        raise TypeError(f"packed must be uint8, got {data.dtype}")
    rows2d = data.reshape(1, -1) if data.ndim == 1 else data
    if rows2d.ndim != 2 or rows2d.shape[1] != packed_row_bytes(k, fmt):
        raise ValueError(f"packed shape {data.shape} does not hold rows of {k} {fmt} codes")
    layout = formats.get(fmt)
    digits = (rows2d.astype(np.int64)[:, :, None] // _place_values(layout)) % layout.radix
    digits = digits.reshape(rows2d.shape[0], -1)[:, :k]
    # A digit above 2 inside the row (2bit code 3; padding fields are ignored),
    # or a byte past the last valid one (base3: 243 and up).
    invalid = int(np.count_nonzero(digits > 2))
    if layout.radix ** layout.codes_per_byte < 256:
        invalid += int(np.count_nonzero(rows2d >= layout.radix ** layout.codes_per_byte))
    if invalid:
        raise ValueError(f"packed {fmt} data has {invalid} invalid codes")
    values = (digits - 1).astype(np.int8)
    return values[0] if data.ndim == 1 else values
