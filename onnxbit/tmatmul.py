"""Thin Python handle on the C ternary matmul (csrc/matmul/), for tests and benchmarks.

The onnxruntime custom op calls the same C functions; this wrapper only moves
numpy arrays across cffi and turns C error messages into ValueError.
"""

from __future__ import annotations

import numpy as np

from onnxbit import native

_ERR_LEN = 512
FORMATS = {"2bit": 0, "base3": 1}
ACT_NONE = 0
ACT_INT8_TOKEN = 1


def format_code(fmt: int | str) -> int:
    """Packed-format number for a name ("2bit", "base3") or a number (passed through)."""
    if isinstance(fmt, str):
        if fmt not in FORMATS:
            raise ValueError(f"unknown packed format {fmt!r}; known: {sorted(FORMATS)}")
        return FORMATS[fmt]
    return int(fmt)


class TernaryWeights:
    """Prepacked ternary weights W[K, N] (stored packed as N rows of K codes)."""

    def __init__(self, packed, k: int, n: int, scales, fmt: int | str = "2bit",
                 group_size: int = 0):
        ffi, lib = native.ffi(), native.lib()
        packed = np.ascontiguousarray(np.frombuffer(bytes(packed), dtype=np.uint8)
                                      if isinstance(packed, (bytes, bytearray, memoryview))
                                      else np.asarray(packed, dtype=np.uint8).reshape(-1))
        scales = np.ascontiguousarray(np.asarray(scales, dtype=np.float32).reshape(-1))
        if k < 0 or n < 0 or group_size < 0:
            raise ValueError(f"k, n and group_size must be >= 0, got {k}, {n}, {group_size}")
        err = ffi.new("char[]", _ERR_LEN)
        handle = lib.obx_tmm_prepack(
            format_code(fmt), ffi.from_buffer("uint8_t[]", packed), packed.size, k, n,
            ffi.from_buffer("float[]", scales), scales.size, group_size, err, _ERR_LEN)
        if handle == ffi.NULL:
            raise ValueError(ffi.string(err).decode())
        self._handle = ffi.gc(handle, lib.obx_tmm_free)
        self.k = k
        self.n = n

    def close(self) -> None:
        """Free the C weights now instead of at garbage collection."""
        if self._handle is not None:
            native.ffi().release(self._handle)
            self._handle = None

    def matmul(self, a, act_quant: int = ACT_NONE, bias=None) -> np.ndarray:
        """a: float32 [..., K] -> float32 [..., N] (serial; onnxruntime threads the op)."""
        if self._handle is None:
            raise ValueError("the weights were closed")
        ffi, lib = native.ffi(), native.lib()
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
        if a.ndim == 0 or a.shape[-1] != self.k:
            raise ValueError(f"a must have shape [..., {self.k}], got {a.shape}")
        lead = a.shape[:-1]
        m = int(np.prod(lead, dtype=np.int64))
        y = np.empty((*lead, self.n), dtype=np.float32)
        bias_ptr = ffi.NULL
        if bias is not None:
            bias = np.ascontiguousarray(np.asarray(bias, dtype=np.float32))
            if bias.shape != (self.n,):
                raise ValueError(f"bias must have shape ({self.n},), got {bias.shape}")
            bias_ptr = ffi.from_buffer("float[]", bias)
        err = ffi.new("char[]", _ERR_LEN)
        status = lib.obx_tmm_compute(
            self._handle, ffi.from_buffer("float[]", a), m, bias_ptr, act_quant,
            ffi.from_buffer("float[]", y), ffi.NULL, ffi.NULL, err, _ERR_LEN)
        if status != 0:
            raise ValueError(ffi.string(err).decode())
        return y
