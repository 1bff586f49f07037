"""The result every weight quantizer returns, and its error statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from onnxbit.quant.granularity import BlockLayout

SCALE_BITS = 32  # scales are stored as float32


@dataclass(frozen=True)
class QuantStats:
    """How far the dequantized weight is from the original, and what it costs.

    mse/mae: mean squared / absolute error over all elements.
    sqnr_db: 10*log10(sum w^2 / sum (w - dq)^2); +inf when the error is zero.
    cosine: cosine similarity of the flattened tensors (1.0 when both are zero,
      0.0 when exactly one is).
    bits_per_weight: code bits plus 32 bits per float32 scale plus code-width
      bits per zero point (MatMulNBits stores zero points at the code width),
      divided by the number of weights.
    compression_ratio: 32 / bits_per_weight (versus float32 storage).
    """

    mse: float
    mae: float
    sqnr_db: float
    cosine: float
    bits_per_weight: float
    compression_ratio: float

    def to_json(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


STATS_CHUNK_ELEMENTS = 1 << 18  # float64 work arrays stay ~2 MB for any tensor size


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # numpy's own sum-of-products loop: np.dot goes to a threaded BLAS whose
    # start-up and spinning cost more than the arithmetic at these sizes.
    return float(np.einsum("i,i->", a, b))


def compute_stats(original: np.ndarray, dequantized: np.ndarray, storage_bits: int) -> QuantStats:
    """Error statistics of ``dequantized`` against ``original`` (float64 sums,
    taken over row chunks so memory does not grow with the tensor)."""
    w_all = original.reshape(original.shape[0], -1)
    d_all = dequantized.reshape(w_all.shape)
    rows_per_chunk = max(1, STATS_CHUNK_ELEMENTS // max(1, w_all.shape[1]))
    sq_err = abs_err = signal = recon = cross = 0.0
    for start in range(0, w_all.shape[0], rows_per_chunk):
        w = w_all[start:start + rows_per_chunk].astype(np.float64).ravel()
        d = d_all[start:start + rows_per_chunk].astype(np.float64).ravel()
        signal += _dot(w, w)
        recon += _dot(d, d)
        cross += _dot(w, d)
        np.subtract(w, d, out=w)
        sq_err += _dot(w, w)
        abs_err += float(np.abs(w, out=w).sum())
    n = w_all.size
    if sq_err == 0.0:
        sqnr = float("inf")
    elif signal == 0.0:
        sqnr = float("-inf")
    else:
        sqnr = 10.0 * np.log10(signal / sq_err)
    norm_product = np.sqrt(signal) * np.sqrt(recon)
    if norm_product == 0.0:
        cosine = 1.0 if signal == 0.0 and recon == 0.0 else 0.0
    else:
        cosine = float(cross / norm_product)
    bpw = storage_bits / n
    return QuantStats(
        mse=sq_err / n,
        mae=abs_err / n,
        sqnr_db=float(sqnr),
        cosine=cosine,
        bits_per_weight=bpw,
        compression_ratio=32.0 / bpw,
    )


@dataclass(eq=False)
class QuantResult:
    """A quantized [K, N] weight: codes, per-block scales and zero points.

    kind: "ternary" | "binary" | "int".
    bits: code width in storage: 2 for ternary (2-bit packing; base-3 packing
      would be 1.6), 1 for binary, b for b-bit integers.
    codes: int8 [K, N] for ternary/binary/symmetric int, uint8 for asymmetric.
    scales: float32 [1] (tensor), [N] (channel) or [n_groups, N] (group).
    zero_points: uint8 shaped like scales for asymmetric int, else None.
    The dequantized weight is codes * scale, or (codes - zero_point) * scale.
    """

    kind: str
    bits: int
    codes: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    granularity: str
    group_size: int | None
    method: str
    original: np.ndarray = field(repr=False)

    @property
    def layout(self) -> BlockLayout:
        return BlockLayout.create(self.codes.shape, self.granularity, self.group_size)

    def dequantize(self) -> np.ndarray:
        """float32 [K, N] reconstruction."""
        layout = self.layout
        scale = layout.expand(self.scales)
        if self.zero_points is None:
            return self.codes.astype(np.float32) * scale
        zero = layout.expand(self.zero_points).astype(np.float32)
        return (self.codes.astype(np.float32) - zero) * scale

    @property
    def storage_bits(self) -> int:
        """Total bits: codes, float32 scales and code-width zero points."""
        bits = self.codes.size * self.bits + self.scales.size * SCALE_BITS
        if self.zero_points is not None:
            bits += self.zero_points.size * self.bits
        return bits

    @cached_property
    def stats(self) -> QuantStats:
        """Error statistics against the weight that was quantized."""
        return compute_stats(self.original, self.dequantize(), self.storage_bits)
