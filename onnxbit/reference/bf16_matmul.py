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


def is_exact_bf16(weight: np.ndarray) -> bool:
    return weight.dtype == np.float32 and exact_bf16_count(weight) == 0


def bf16_bits(weight: np.ndarray, band_elements: int = 1 << 22) -> np.ndarray:
    """The uint16 bfloat16 bits of a float32 array whose values are all bfloat16 numbers
    (in its shape), made a band at a time: no full-size temporary beside the result."""
    flat = np.ascontiguousarray(weight, dtype=np.float32).reshape(-1).view(np.uint32)
    out = np.empty(flat.size, dtype=np.uint16)
    for start in range(0, flat.size, band_elements):
        band = flat[start:start + band_elements]
        if np.count_nonzero(band & np.uint32(0xFFFF)):
            raise ValueError("the array holds values that are not bfloat16 numbers (low 16 bits set)")
        out[start:start + band_elements] = band >> np.uint32(16)
    return out.reshape(np.shape(weight))


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
