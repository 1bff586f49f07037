"""CRC32C of packed weights (csrc/include/onnxbit/checksum.h).

A TernaryMatMul or TernaryConv node's ``crc32c`` attribute is the CRC32C of its B bytes
followed by its scales bytes, exactly as the initializers store them
(row-major, float32 little-endian). onnxruntime checks it when the session is
created (session config entry ``onnxbit.verify_checksums``, default "1") and
``onnxbit verify MODEL`` checks it offline.
"""

from __future__ import annotations

import numpy as np

from onnxbit import native

ATTRIBUTE = "crc32c"
CONFIG_ENTRY = "onnxbit.verify_checksums"


def _bytes_of(buffer) -> np.ndarray:
    if isinstance(buffer, np.ndarray):
        if buffer.dtype.byteorder == ">":
            buffer = buffer.astype(buffer.dtype.newbyteorder("<"))
        return np.ascontiguousarray(buffer).reshape(-1).view(np.uint8)
    return np.frombuffer(memoryview(buffer).cast("B"), dtype=np.uint8)


def crc32c(*buffers) -> int:
    """CRC32C of the buffers' bytes one after another (arrays as stored, little-endian)."""
    ffi, lib = native.ffi(), native.lib()
    crc = 0
    for buffer in buffers:
        data = _bytes_of(buffer)
        if data.size:
            crc = int(lib.obx_crc32c(crc, ffi.from_buffer("uint8_t[]", data), data.size))
    return crc


def packed_weight_crc32c(packed: np.ndarray, scales: np.ndarray) -> int:
    """The ``crc32c`` attribute of a TernaryMatMul or TernaryConv node with these B and scales."""
    return crc32c(np.asarray(packed, dtype=np.uint8), np.asarray(scales, dtype=np.float32))
