"""Thin Python handle on the C ternary matmul (csrc/matmul/), for tests and benchmarks.

The onnxruntime custom op calls the same C functions; this wrapper only moves
numpy arrays across cffi and turns C error messages into ValueError. Sizes
are validated by the C library (obx_tmm_shape_init), the same check the op
runs.
"""

from __future__ import annotations

import threading

import numpy as np

from onnxbit import native

_ERR_LEN = 512
ACT_NONE = 0
ACT_INT8_TOKEN = 1
ACT_INT8_STATIC = 2


def formats() -> dict[str, int]:
    """The packed storage formats the C library knows, name -> id (formats.h)."""
    ffi, lib = native.ffi(), native.lib()
    return {ffi.string(lib.obx_format_name(fmt)).decode(): fmt for fmt in range(lib.OBX_FMT_COUNT)}


def format_code(fmt: int | str) -> int:
    """Packed-format id for a name ("2bit", "base3") or an id (passed through)."""
    if isinstance(fmt, str):
        raw = fmt.encode()
        code = native.lib().obx_format_from_name(raw, len(raw))
        if code < 0:
            raise ValueError(f"unknown packed format {fmt!r}; known: {sorted(formats())}")
        return code
    return int(fmt)


def _int64(name: str, value) -> int:
    """value as the C library's int64_t; the library itself judges the range."""
    value = int(value)
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f"{name} = {value} is out of range (the library takes 64-bit sizes)")
    return value


class TernaryWeights:
    """Prepacked ternary weights W[K, N] (stored packed as N rows of K codes).

    Safe to share between threads: any number of matmul calls may run at once
    (the C call releases the GIL), and close() waits for the running ones to
    return before it frees the C weights.
    """

    def __init__(self, packed, k: int, n: int, scales, fmt: int | str = "2bit",
                 group_size: int = 0):
        ffi, lib = native.ffi(), native.lib()
        packed = np.ascontiguousarray(np.frombuffer(bytes(packed), dtype=np.uint8)
                                      if isinstance(packed, (bytes, bytearray, memoryview))
                                      else np.asarray(packed, dtype=np.uint8).reshape(-1))
        scales = np.ascontiguousarray(np.asarray(scales, dtype=np.float32).reshape(-1))
        err = ffi.new("char[]", _ERR_LEN)
        handle = lib.obx_tmm_prepack(
            format_code(fmt), ffi.from_buffer("uint8_t[]", packed), packed.size, _int64("k", k),
            _int64("n", n), ffi.from_buffer("float[]", scales), scales.size,
            _int64("group_size", group_size), err, _ERR_LEN)
        if handle == ffi.NULL:
            raise ValueError(ffi.string(err).decode())
        self._handle = ffi.gc(handle, lib.obx_tmm_free)
        self._users = 0  # matmul calls inside the C library right now
        self._idle = threading.Condition()
        self.k = int(k)
        self.n = int(n)

    def close(self) -> None:
        """Free the C weights now instead of at garbage collection. Waits for
        matmul calls running on other threads; later calls raise ValueError."""
        with self._idle:
            handle, self._handle = self._handle, None
            self._idle.wait_for(lambda: self._users == 0)
        if handle is not None:
            native.ffi().release(handle)

    def _acquire(self):
        with self._idle:
            if self._handle is None:
                raise ValueError("the weights were closed")
            self._users += 1
            return self._handle

    def _release(self) -> None:
        with self._idle:
            self._users -= 1
            if self._users == 0:
                self._idle.notify_all()

    def compute_path(self, m: int, act_quant: int = ACT_NONE) -> str:
        """The compute path matmul takes for m rows with the active ISA's kernels
        (e.g. "f32_gemm", "i8_lut"; tmm_compute.h lists them)."""
        handle = self._acquire()
        try:
            return native.ffi().string(native.lib().obx_tmm_path_name(handle, m, act_quant)).decode()
        finally:
            self._release()

    def matmul(self, a, act_quant: int = ACT_NONE, bias=None, act_scale: float = 0.0) -> np.ndarray:
        """a: float32 [..., K] -> float32 [..., N] (serial; onnxruntime threads the op).

        act_scale is the fixed activation scale act_quant = ACT_INT8_STATIC needs."""
        ffi, lib = native.ffi(), native.lib()
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
        if a.ndim == 0 or a.shape[-1] != self.k:
            raise ValueError(f"a must have shape [..., {self.k}], got {a.shape}")
        lead = a.shape[:-1]
        m = int(np.prod(lead, dtype=np.int64))
        y = np.empty((*lead, self.n), dtype=np.float32)
        bias_ptr, bias = native.optional_float_vector(bias, self.n, "bias")
        err = ffi.new("char[]", _ERR_LEN)
        handle = self._acquire()
        try:
            status = lib.obx_tmm_compute_scaled(
                handle, ffi.from_buffer("float[]", a), m, bias_ptr, act_quant, float(act_scale),
                ffi.from_buffer("float[]", y), ffi.NULL, ffi.NULL, err, _ERR_LEN)
        finally:
            self._release()
        if status != 0:
            raise ValueError(ffi.string(err).decode())
        return y
