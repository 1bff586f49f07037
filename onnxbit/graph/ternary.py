"""The proof that a weight is exactly ternary, carried by the weight itself.

A QAT folding pass that proves a MatMul/Gemm weight is codes * scales with
codes in {-1, 0, +1} replaces the weight input by a constant that holds the
proof (gs_adapter.ternary_constant): later passes ask the weight, never a
table keyed by node name, and the float values codes * scales are only
computed if something reads them (a layer kept float, error statistics).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TernaryProof:
    """codes: int8 [K, N] in {-1, 0, 1}, in the [K, N] orientation of A @ W;
    scales: float32 [1] or [N]. The weight the original graph used is
    codes * scales (per output column).
    act_quant: 1 when the BitNet per-token int8 activation chain in front of
    the layer was removed and must be applied by the op; 3 when a Conv's
    per-pixel chain (absmax over the channels) was (TernaryConv act_quant=3).
    source: the pass that proved it, for the report."""

    codes: np.ndarray
    scales: np.ndarray
    act_quant: int = 0
    source: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(d) for d in self.codes.shape)

    @property
    def granularity(self) -> str:
        return "tensor" if np.asarray(self.scales).size == 1 else "channel"

    def float_weight(self) -> np.ndarray:
        """codes * scales as float32 [K, N]."""
        return (self.codes.astype(np.float32) * np.asarray(self.scales, np.float32)[None, :]).astype(np.float32)
