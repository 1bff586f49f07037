"""Pure numpy reference of the bfloat16-weight matmul (csrc/include/onnxbit/bf16matmul.h)
and the bfloat16 conversions the converter uses.

bfloat16 is the high half of a float32: a float32 whose low 16 bits are zero is exactly
a bfloat16 number (every weight of a bf16 checkpoint exported to float32 is). The C
kernels run one fmaf chain per output in k order; numpy has no fused multiply-add, so
this reference sums in float64 and rounds once, and tests compare it with a tolerance
(the C paths are compared with each other bit for bit).
"""

from __future__ import annotations

import numpy as np


def exact_bf16_count(weight: np.ndarray, band_elements: int = 1 << 22) -> int:
    """How many values of a float32 array are not bfloat16 numbers (low 16 bits set),
    counted a band at a time (no full-size temporary)."""
    weight = np.asarray(weight, dtype=np.float32)
    flat = weight.ravel(order="K").view(np.uint32)  # a view for either memory order
    inexact = 0
    for start in range(0, flat.size, band_elements):
        inexact += int(np.count_nonzero(flat[start:start + band_elements] & np.uint32(0xFFFF)))
    return inexact


def _float32_bands(values: np.ndarray, band_elements: int = 1 << 22):
    """values (float32) in row order, a band of whole rows at a time: a transposed view
    is copied a band at a time, never whole."""
    rows = values.reshape(values.shape[0], -1) if values.ndim >= 2 else values.reshape(1, -1)
    step = max(1, band_elements // max(1, rows.shape[1]))
    for start in range(0, rows.shape[0], step):
        yield np.ascontiguousarray(rows[start:start + step]).reshape(-1)


def bf16_bits_of_chunks(chunks, shape: tuple[int, ...]) -> np.ndarray | None:
    """The bfloat16 bits (in `shape`) of float32 values given a chunk at a time, or None
    as soon as a value is not a bfloat16 number."""
    out = np.empty(int(np.prod(shape)), dtype=np.uint16)
    done = 0
    for chunk in chunks:
        bits = np.asarray(chunk, dtype=np.float32).view(np.uint32)
        if done + bits.size > out.size or np.count_nonzero(bits & np.uint32(0xFFFF)):
            return None
        out[done:done + bits.size] = bits >> np.uint32(16)
        done += bits.size
    return out.reshape(shape) if done == out.size else None


def bf16_bits_or_none(values: np.ndarray) -> np.ndarray | None:
    """The bfloat16 bits of a float32 array (in its shape), or None when it is not float32
    or holds a value that is not a bfloat16 number; one pass, a band at a time."""
    values = np.asarray(values)
    if values.dtype != np.float32:
        return None
    return bf16_bits_of_chunks(_float32_bands(values), values.shape)


def bf16_bits(weight: np.ndarray) -> np.ndarray:
    """bf16_bits_or_none for an array that must be all bfloat16 numbers (ValueError otherwise)."""
    bits = bf16_bits_or_none(np.asarray(weight, dtype=np.float32))
    if bits is None:
        raise ValueError("the array holds values that are not bfloat16 numbers (low 16 bits set)")
    return bits


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bits -> the float32 values they are (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def bf16_matmul_reference(a: np.ndarray, w_bits: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """a: float32 [..., K]; w_bits: uint16 [K, N]; bias: float32 [N] or None -> float32 [..., N]."""
    w = bf16_to_float32(w_bits).astype(np.float64)
    y = (np.asarray(a, dtype=np.float32).astype(np.float64) @ w).astype(np.float32)
    if bias is not None:
        y = (y + np.asarray(bias, dtype=np.float32)).astype(np.float32)
    return y
