"""Integer weight quantization with error compensation (the GPTQ method).

Round-to-nearest quantizes every weight on its own. For a layer y = x @ W
what matters is the output error E|x @ (W - Q)|^2 = tr((W-Q)^T H (W-Q)) with
H = X^T X over the calibration activations X [samples, K]. GPTQ quantizes
the rows of W (input features) one at a time and spreads each row's rounding
error over the rows not yet quantized, in the direction H says the inputs
are correlated, so later roundings cancel earlier ones:

    U = upper Cholesky factor of H^-1 (H^-1 = U^T U)
    for k in 0..K-1:  q_k = round(w_k);  e = (w_k - q_k) / U[k,k];
                      w_j -= U[k,j] * e   for j > k

Scales and zero points are computed exactly as `quantize_int` computes them,
per output channel from the whole (updated) column, or per group of
`group_size` rows when the group's first row is reached, so the result is
an ordinary QuantResult every target stores (MatMulNBits blocks,
DequantizeLinear). Updates are applied lazily per block of rows (one matrix
product per block) which gives the same result as row by row up to float
rounding.
"""

from __future__ import annotations

import numpy as np

from onnxbit.quant.granularity import BlockLayout, validate_weight
from onnxbit.quant.integer import quantize_int
from onnxbit.quant.result import QuantResult

BLOCK_ROWS = 128  # rows updated row by row before one matrix product carries the error further
DAMPING = 0.01  # fraction of mean(diag H) added to the diagonal: keeps H^-1 stable on few samples


def hessian(activations: np.ndarray) -> np.ndarray:
    """X^T X (float64 [K, K]) of activations [..., K]; sum these over batches."""
    x = np.asarray(activations, dtype=np.float64).reshape(-1, activations.shape[-1])
    return x.T @ x


def _inverse_cholesky(h: np.ndarray, damping: float) -> np.ndarray:
    h = h.copy()
    h[np.diag_indices_from(h)] += damping * float(np.mean(np.diag(h)))
    for attempt in range(6):  # more damping when H is not positive definite (too few samples)
        try:
            inverse = np.linalg.inv(np.linalg.cholesky(h))  # L^-1; H^-1 = L^-T L^-1
            return np.linalg.cholesky(inverse.T @ inverse).T  # upper U, H^-1 = U^T U
        except np.linalg.LinAlgError:
            h[np.diag_indices_from(h)] += 10.0 ** attempt * damping * float(np.mean(np.diag(h)) or 1.0)
    raise ValueError("the activations' X^T X is not positive definite even with damping")


def quantize_int_gptq(w, h: np.ndarray, bits: int = 4, *, symmetric: bool = True, granularity: str = "channel",
                      group_size: int | None = None, damping: float = DAMPING) -> QuantResult:
    """Quantize a [K, N] weight like `quantize_int`, choosing codes that keep
    x @ W close for the inputs whose X^T X is `h` ([K, K])."""
    w = validate_weight(w)
    k, n = w.shape
    h = np.asarray(h, dtype=np.float64)
    if h.shape != (k, k):
        raise ValueError(f"X^T X must be [{k}, {k}] for a weight of shape {w.shape}, got {h.shape}")
    if not np.isfinite(h).all():
        raise ValueError("X^T X holds NaN or Inf values")
    if granularity not in ("channel", "group"):
        raise ValueError(f"error compensation needs granularity 'channel' or 'group', got {granularity!r}")
    layout = BlockLayout.create(w.shape, granularity, group_size)
    work = w.astype(np.float64)
    h = h.copy()
    dead = np.diag(h) <= 0  # inputs that are always zero: their weights do not matter
    h[dead, dead] = 1.0
    work[dead] = 0.0
    u = _inverse_cholesky(h, damping)
    codes = np.empty((k, n), np.int8 if symmetric else np.uint8)
    groups = layout.n_groups
    scales = np.empty((groups, n), np.float32)
    zeros = np.empty((groups, n), np.uint8) if not symmetric else None
    top = 2 ** (bits - 1) - 1 if symmetric else 2**bits - 1
    low = -top if symmetric else 0
    scale = zero = None
    for start in range(0, k, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, k)
        errors = np.zeros((stop - start, n))
        for row in range(start, stop):
            if row == 0 or (granularity == "group" and row % layout.group_size == 0):
                g = 0 if granularity == "channel" else row // layout.group_size
                end = k if granularity == "channel" else min(k, row + layout.group_size)
                block = quantize_int(work[row:end].astype(np.float32), bits, symmetric=symmetric,
                                     granularity="channel")
                scale = block.scales.astype(np.float64)
                scales[g] = block.scales
                if not symmetric:
                    zero = block.zero_points.astype(np.float64)
                    zeros[g] = block.zero_points
            safe = np.where(scale > 0, scale, 1.0)
            q = np.where(scale > 0, np.rint(work[row] / safe), 0.0)
            if zero is not None:
                q += zero
            q = np.clip(q, low, top)
            codes[row] = q
            dequantized = (q - zero if zero is not None else q) * scale
            error = (work[row] - dequantized) / u[row, row]
            work[row + 1:stop] -= np.outer(u[row, row + 1:stop], error)
            errors[row - start] = error
        work[stop:] -= u[start:stop, stop:].T @ errors
    return QuantResult(kind="int", bits=bits, codes=codes, scales=layout.assemble_scales([scales]),
                       zero_points=layout.assemble_scales([zeros]) if zeros is not None else None,
                       granularity=granularity, group_size=layout.group_size,
                       method="gptq-symmetric" if symmetric else "gptq-asymmetric", original=w)


def quantize_int_gptq_column_groups(w, hs: np.ndarray, bits: int = 4, *, symmetric: bool = True,
                                    granularity: str = "channel", group_size: int | None = None,
                                    damping: float = DAMPING) -> QuantResult:
    """quantize_int_gptq for a [K, N] weight whose columns fall in len(hs)
    equal consecutive blocks, block g reading inputs whose X^T X is hs[g]
    (a grouped Conv: each group of output channels has its own input).
    Scales are per column or per K-group of a column, so the blocks are
    quantized independently and put side by side."""
    w = validate_weight(w)
    hs = np.asarray(hs, dtype=np.float64)
    k, n = w.shape
    if hs.ndim != 3 or hs.shape[1:] != (k, k) or n % hs.shape[0]:
        raise ValueError(f"X^T X per column group must be [groups, {k}, {k}] with groups dividing {n}, got {hs.shape}")
    width = n // hs.shape[0]
    parts = [quantize_int_gptq(w[:, g * width:(g + 1) * width], h, bits, symmetric=symmetric,
                               granularity=granularity, group_size=group_size, damping=damping)
             for g, h in enumerate(hs)]
    return QuantResult(kind="int", bits=bits, codes=np.concatenate([p.codes for p in parts], axis=1),
                       scales=np.concatenate([p.scales for p in parts], axis=-1),
                       zero_points=(np.concatenate([p.zero_points for p in parts], axis=-1)
                                    if parts[0].zero_points is not None else None),
                       granularity=granularity, group_size=parts[0].group_size, method=parts[0].method, original=w)
