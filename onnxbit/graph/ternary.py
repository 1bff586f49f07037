"""The proof that a weight is exactly ternary, carried by the weight itself.

A QAT folding pass that proves a MatMul/Gemm weight is codes * scales with
codes in {-1, 0, +1} replaces the weight input by a constant that holds the
proof (gs_adapter.ternary_constant): later passes ask the weight, never a
table keyed by node name, and the float values codes * scales are only
computed if something reads them (a layer kept float, error statistics).

Every weight of a model is folded before any is packed, so the proofs of a
whole model are alive at once: large codes wait in a temporary spill file
(written, read back once per use, never mapped), which keeps conversion
memory near one layer instead of one byte per weight of the model.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

# Codes at least this big wait on disk; smaller ones (tests, small models) stay in memory.
SPILL_BYTES = 1 << 20


class _SpillFile:
    """One anonymous temporary file per process, appended to, read with pread."""

    def __init__(self):
        self._file = None
        self._end = 0

    def put(self, array: np.ndarray) -> int:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="onnxbit-codes-")
        data = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        offset = self._end
        written = 0
        while written < data.size:
            written += os.pwrite(self._file.fileno(), data[written:], offset + written)
        self._end += data.size
        return offset

    def get(self, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        out = np.empty(shape, dtype)
        view = out.view(np.uint8).reshape(-1)
        done = 0
        while done < view.size:
            chunk = os.preadv(self._file.fileno(), [view[done:]], offset + done)
            if chunk <= 0:
                raise OSError("the spilled ternary codes were truncated")
            done += chunk
        return out


_SPILL = _SpillFile()


class TernaryProof:
    """codes: int8 [K, N] in {-1, 0, 1}, in the [K, N] orientation of A @ W;
    scales: float32 [1] or [N]. The weight the original graph used is
    codes * scales (per output column).
    act_quant: 1 when the BitNet per-token int8 activation chain in front of
    the layer was removed and must be applied by the op; 3 when a Conv's
    per-pixel chain (absmax over the channels) was (TernaryConv act_quant=3).
    source: the pass that proved it, for the report.

    ``codes`` returns a fresh array each time when the codes were spilled;
    read it once per use."""

    def __init__(self, codes: np.ndarray, scales: np.ndarray, act_quant: int = 0, source: str = "",
                 _spilled: tuple[int, tuple[int, ...]] | None = None):
        self.scales = scales
        self.act_quant = act_quant
        self.source = source
        if _spilled is not None:
            self._codes, self._spilled = None, _spilled
        elif codes.nbytes >= SPILL_BYTES:
            codes = np.asarray(codes, np.int8)
            self._codes, self._spilled = None, (_SPILL.put(codes), tuple(int(d) for d in codes.shape))
        else:
            self._codes, self._spilled = codes, None

    @property
    def codes(self) -> np.ndarray:
        if self._spilled is None:
            return self._codes
        offset, shape = self._spilled
        return _SPILL.get(offset, shape, np.dtype(np.int8))

    def with_changes(self, **changes) -> "TernaryProof":
        """The same codes (not copied, not re-spilled) with other scales / act_quant / source."""
        fields = {"scales": self.scales, "act_quant": self.act_quant, "source": self.source, **changes}
        if self._spilled is not None:
            return TernaryProof(None, _spilled=self._spilled, **fields)
        return TernaryProof(self._codes, **fields)

    @property
    def shape(self) -> tuple[int, int]:
        if self._spilled is not None:
            return self._spilled[1]
        return tuple(int(d) for d in self._codes.shape)

    @property
    def granularity(self) -> str:
        return "tensor" if np.asarray(self.scales).size == 1 else "channel"

    def float_weight(self) -> np.ndarray:
        """codes * scales as float32 [K, N]."""
        return (self.codes.astype(np.float32) * np.asarray(self.scales, np.float32)[None, :]).astype(np.float32)
