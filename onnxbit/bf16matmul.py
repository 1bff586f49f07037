"""Thin Python handle on the C bfloat16-weight matmul (csrc/bf16/), for tests and
benchmarks; the onnxruntime op com.onnxbit::BFloat16MatMul calls the same C functions."""

from __future__ import annotations

import numpy as np

from onnxbit import native

_ERR_LEN = 512


class BFloat16Weights:
    """Prepacked bfloat16 weights W[K, N] (uint16 bits, row-major as ONNX stores them)."""

    def __init__(self, bits):
        ffi, lib = native.ffi(), native.lib()
        bits = np.ascontiguousarray(np.asarray(bits, dtype=np.uint16))
        if bits.ndim != 2:
            raise ValueError(f"bfloat16 weights must be 2-D [K, N], got shape {bits.shape}")
        k, n = bits.shape
        err = ffi.new("char[]", _ERR_LEN)
        handle = lib.obx_bf16_prepack(ffi.from_buffer("uint16_t[]", bits), bits.size, k, n, err, _ERR_LEN)
        if handle == ffi.NULL:
            raise ValueError(ffi.string(err).decode())
        self._handle = ffi.gc(handle, lib.obx_bf16_free)
        self.k, self.n = int(k), int(n)

    def matmul(self, a, bias=None) -> np.ndarray:
        """a: float32 [..., K] -> float32 [..., N] (serial; onnxruntime threads the op)."""
        ffi, lib = native.ffi(), native.lib()
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
        if a.ndim == 0 or a.shape[-1] != self.k:
            raise ValueError(f"a must have shape [..., {self.k}], got {a.shape}")
        lead = a.shape[:-1]
        y = np.empty((*lead, self.n), dtype=np.float32)
        bias_ptr, bias = native.optional_float_vector(bias, self.n, "bias")
        err = ffi.new("char[]", _ERR_LEN)
        status = lib.obx_bf16_compute(self._handle, ffi.from_buffer("float[]", a), int(np.prod(lead, dtype=np.int64)),
                                      bias_ptr, ffi.from_buffer("float[]", y), ffi.NULL, ffi.NULL, err, _ERR_LEN)
        if status != 0:
            raise ValueError(ffi.string(err).decode())
        return y
