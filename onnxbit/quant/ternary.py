"""Ternary (1.58-bit) weight quantization: W ~ scale * Q with Q in {-1, 0, 1}.

BitNet b1.58 absmean, exactly as the PyTorch reference computes it::

    s = 1 / w.abs().mean().clamp(min=1e-5)
    q = (w * s).round().clamp(-1, 1)          # round half to even
    dequantized = q / s

Here: gamma = max(mean|W|, 1e-5) (float32), inv = float32(1) / gamma,
Q = clip(rint(W * inv), -1, 1) in float32, and the stored scale is gamma.
mean|W| is accumulated in float64 and then rounded to float32. torch reduces
float32 in its own blocked order, which numpy cannot reproduce, so torch's
float32 mean is not attainable anyway; the float64 sum is the value it
approximates (they agree to about one float32 ulp). The sum follows the
canonical order of the C primitive ``abs_sum_rows`` (per column, then over
columns for a per-tensor mean), so the numpy path and the fused C path of
:func:`quantize_pack_absmean` give the same gamma bit for bit. Where bit
identity with a particular exported graph matters, the converter evaluates its
QAT chain with onnxruntime itself instead of relying on this formula.

Threshold methods set Q = sign(W) * (|W| > delta) for a per-block delta:

* ``mean-factor``   delta = factor * gamma, gamma being mean|W| as absmean
  computes it (default factor 0.7, the TWN rule). factor 0.5 gives the
  absmean codes: |W| > gamma/2 is the same test as rint(|W|/gamma) >= 1 under
  round-half-to-even, including at the tie |W| = gamma/2 (both give 0). They
  differ only for |W| a few ulps above gamma/2 whose float32 product with
  1/gamma rounds down to exactly 0.5: absmean gives 0, the threshold gives 1.
* ``median-factor`` delta = factor * median|W| (default 0.9: for Gaussian
  weights the MSE-optimal threshold is 0.612 sigma and median|W| = 0.674 sigma).
* ``adaptive``      the threshold fitted to the weights by Lloyd iteration:
  start at 0.7 * mean|W|, then alternate alpha = mean of the |W| above delta
  (the least-squares scale) and delta = alpha / 2 (nearest-level codes) until
  the support stops changing. Works for any distribution shape and ends at a
  stationary point of ||W - alpha Q||^2; ``mse`` finds the global optimum.
* ``mse``           the threshold minimising ||W - alpha Q||^2 over every
  distinct |W| value: |W| is sorted once per block and cumulative sums give
  the error of all candidates at once (O(n log n)).

Scales: ``absmean`` (gamma, the BitNet scale) or ``lsq`` (alpha = W.Q / Q.Q,
the mean |W| over the support). Default: absmean for the absmean method, lsq
for the threshold methods. A block with empty support gets gamma.

Already-ternary input (every block exactly {-s, 0, +s}) is detected by default
and returned as codes sign(W) with scale s, so dequantize() reproduces it bit
for bit. The absmean formula alone would rescale it: gamma = s * (fraction of
non-zeros), which changes the weight the model computes with.
"""

from __future__ import annotations

import numpy as np

from onnxbit import codecs, formats
from onnxbit.quant.granularity import (
    BlockLayout,
    block_abs_means,
    non_finite_message,
    tensor_abs_mean,
    validate_weight,
)
from onnxbit.quant.result import QuantResult

GAMMA_FLOOR = np.float32(1e-5)  # torch's clamp(min=1e-5), as float32
METHODS = ("absmean", "mean-factor", "median-factor", "adaptive", "mse")
SCALES = ("absmean", "lsq")
DEFAULT_FACTORS = {"mean-factor": 0.7, "median-factor": 0.9}
ADAPTIVE_MAX_ITERATIONS = 100


def absmean_gamma(mean: np.ndarray) -> np.ndarray:
    """BitNet gamma from float64 mean|W| values: float32, floored at 1e-5."""
    return np.maximum(mean.astype(np.float32), GAMMA_FLOOR)


def absmean_codes(piece: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """clip(rint(W * (1/gamma)), -1, 1) in float32, as int8."""
    inv = (np.float32(1.0) / gamma)[:, None, :]
    scaled = piece * inv
    np.rint(scaled, out=scaled)
    np.clip(scaled, -1, 1, out=scaled)
    return scaled.astype(np.int8)


def ternary_blocks(piece: np.ndarray, sample: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Which blocks of a piece are exactly {-s, 0, +s}: (bool [B, N], s [B, N]).

    ``s`` is max|W| of each block (0 for an all-zero block). With ``sample``,
    only the first ``sample`` elements of each block are looked at: a False
    there is final, a True still needs the full check.
    """
    part = piece if sample is None else piece[:, :sample]
    mag = np.abs(part)
    top = mag.max(axis=1)
    ok = np.all((mag == 0) | (mag == top[:, None, :]), axis=1)
    return ok, top


def _ternary_blocks_checked(piece: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok, _ = ternary_blocks(piece, sample=16)
    if not ok.any():
        return ok, np.zeros(ok.shape, np.float32)
    return ternary_blocks(piece)


def is_ternary(w, granularity: str = "tensor", group_size: int | None = None):
    """Is every block of ``w`` exactly {-s, 0, +s}?

    Returns (True, scales) with scales shaped like a QuantResult's (an
    all-zero block gets the 1e-5 floor, as absmean would give it), or
    (False, None). -0.0 counts as 0 (and dequantizes to +0.0).
    """
    w = validate_weight(w)
    layout = BlockLayout.create(w.shape, granularity, group_size)
    scales = []
    for piece in layout.pieces(w):
        ok, top = _ternary_blocks_checked(piece)
        if not ok.all():
            return False, None
        scales.append(np.where(top > 0, top, GAMMA_FLOOR).astype(np.float32))
    return True, layout.assemble_scales(scales)


def bitnet_absmean(w, granularity: str = "tensor", group_size: int | None = None):
    """The BitNet b1.58 formula with no already-ternary detection.

    Returns (codes int8 [K, N], gamma float32 shaped [1], [N] or [n_groups, N]).
    """
    w = validate_weight(w)
    layout = BlockLayout.create(w.shape, granularity, group_size)
    codes, gammas = [], []
    for piece, mean in zip(layout.pieces(w), block_abs_means(layout, w)):
        gamma = absmean_gamma(mean)
        codes.append(absmean_codes(piece, gamma))
        gammas.append(gamma)
    return layout.assemble_codes(codes), layout.assemble_scales(gammas)


def _threshold_codes(piece: np.ndarray, delta: np.ndarray) -> np.ndarray:
    keep = np.abs(piece) > delta[:, None, :]
    return (np.sign(piece) * keep).astype(np.int8)


def _lsq_scale(piece: np.ndarray, codes: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    support = codes != 0
    count = support.sum(axis=1)
    total = np.where(support, np.abs(piece), 0).sum(axis=1, dtype=np.float64)
    alpha = (total / np.maximum(count, 1)).astype(np.float32)
    return np.where(count > 0, alpha, fallback)


class _SortedMagnitudes:
    """|W| of every block sorted ascending, [B, N, L] float32, with float64
    prefix sums, so "sum of the c largest" is one lookup for any c."""

    def __init__(self, piece: np.ndarray):
        blocks_last = np.ascontiguousarray(np.moveaxis(np.abs(piece), 1, -1))
        blocks_last.sort(axis=-1)  # in place: numpy sorts a contiguous copy faster than a strided view
        self.asc = blocks_last
        self.length = self.asc.shape[-1]
        self.prefix = np.cumsum(self.asc, axis=-1, dtype=np.float64)
        self.total = self.prefix[..., -1].copy()  # prefix may be reused in place

    def top_sum(self, count: np.ndarray) -> np.ndarray:
        """Sum of the ``count`` largest magnitudes of each block."""
        below = self.length - count - 1  # index of the last element left out
        left_out = np.take_along_axis(self.prefix, np.maximum(below, 0)[..., None], axis=-1)[..., 0]
        return self.total - np.where(below >= 0, left_out, 0.0)


def _adaptive_delta(piece: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Lloyd iteration from the TWN threshold 0.7 * mean|W| (float64 [B, N])."""
    mags = _SortedMagnitudes(piece)
    delta = 0.7 * mean
    count = (mags.asc > delta[..., None]).sum(axis=-1)
    for _ in range(ADAPTIVE_MAX_ITERATIONS):
        alpha = mags.top_sum(count) / np.maximum(count, 1)
        delta = np.where(count > 0, alpha / 2, delta)
        new_count = (mags.asc > delta[..., None]).sum(axis=-1)
        if np.array_equal(new_count, count):
            break
        count = new_count
    return delta


def _mse_delta(piece: np.ndarray, fixed_alpha: np.ndarray | None) -> np.ndarray:
    """Threshold minimising ||W - alpha Q||^2 per block (float64 [B, N]).

    Keeping the k largest |W| (sum S_k) gives error sum W^2 - S_k^2 / k with the
    least-squares alpha, or sum W^2 - 2 a S_k + a^2 k with a fixed alpha a; we
    maximise the subtracted gain. Only cuts between two distinct magnitudes,
    above zero, are candidates, so each is realisable as ``|W| > delta``.
    """
    mags = _SortedMagnitudes(piece)
    asc = mags.asc
    # Candidate j keeps asc[j:], k = L - j elements; gain is built in place.
    gain = mags.prefix
    np.subtract(gain, asc, out=gain)  # sum of asc[:j]
    np.subtract(mags.total[..., None], gain, out=gain)  # S = sum of asc[j:]
    kept = np.arange(mags.length, 0, -1, dtype=np.float64)
    if fixed_alpha is None:
        np.multiply(gain, gain, out=gain)
        np.divide(gain, kept, out=gain)
    else:
        a = fixed_alpha.astype(np.float64)[..., None]
        np.multiply(gain, 2 * a, out=gain)
        gain -= (a * a) * kept
    invalid = asc <= 0
    invalid[..., 1:] |= asc[..., 1:] == asc[..., :-1]
    gain[invalid] = -np.inf
    best = np.argmax(gain, axis=-1)
    best_gain = np.take_along_axis(gain, best[..., None], axis=-1)[..., 0]
    below = np.take_along_axis(asc, np.maximum(best - 1, 0)[..., None], axis=-1)[..., 0]
    delta = np.where(best > 0, below.astype(np.float64), 0.0)
    # Keeping nothing (gain 0) wins when no candidate reduces the error.
    return np.where(best_gain > 0, delta, np.inf)


def quantize_ternary(
    w,
    *,
    method: str = "absmean",
    granularity: str = "tensor",
    group_size: int | None = None,
    factor: float | None = None,
    scale: str | None = None,
    preserve_ternary: bool = True,
) -> QuantResult:
    """Quantize a [K, N] weight to ternary codes with per-block scales.

    See the module docstring for the methods, scales and ternary detection.
    """
    if method not in METHODS:
        raise ValueError(f"unknown ternary method {method!r}; choose one of {METHODS}")
    if factor is not None and method not in DEFAULT_FACTORS:
        raise ValueError(f"factor is only used by methods {tuple(DEFAULT_FACTORS)}, not {method!r}")
    if factor is not None and not (np.isfinite(factor) and factor >= 0):
        raise ValueError(f"factor must be a finite number >= 0, got {factor!r}")
    if scale is None:
        scale = "absmean" if method == "absmean" else "lsq"
    if scale not in SCALES:
        raise ValueError(f"unknown ternary scale {scale!r}; choose one of {SCALES}")
    if factor is None:
        factor = DEFAULT_FACTORS.get(method)
    w = validate_weight(w)
    layout = BlockLayout.create(w.shape, granularity, group_size)

    code_pieces, scale_pieces = [], []
    for piece, mean in zip(layout.pieces(w), block_abs_means(layout, w)):
        gamma = absmean_gamma(mean)
        if method == "absmean":
            codes = absmean_codes(piece, gamma)
        else:
            if method == "mean-factor":
                delta = factor * gamma.astype(np.float64)
            elif method == "median-factor":
                delta = factor * np.median(np.abs(piece), axis=1).astype(np.float64)
            elif method == "adaptive":
                delta = _adaptive_delta(piece, mean)
            else:
                delta = _mse_delta(piece, None if scale == "lsq" else gamma)
            codes = _threshold_codes(piece, delta)
        block_scale = gamma if scale == "absmean" else _lsq_scale(piece, codes, gamma)
        if preserve_ternary:
            ok, top = _ternary_blocks_checked(piece)
            if ok.any():
                exact = ok[:, None, :]
                codes = np.where(exact, np.sign(piece).astype(np.int8), codes)
                block_scale = np.where(ok & (top > 0), top, block_scale).astype(np.float32)
        code_pieces.append(codes)
        scale_pieces.append(block_scale.astype(np.float32))
    return QuantResult(
        kind="ternary",
        bits=2,
        codes=layout.assemble_codes(code_pieces),
        scales=layout.assemble_scales(scale_pieces),
        zero_points=None,
        granularity=granularity,
        group_size=layout.group_size,
        method=method,
        original=w,
    )


def quantize_pack_absmean(
    w,
    fmt: str = formats.DEFAULT,
    granularity: str = "tensor",
    preserve_ternary: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Absmean-quantize and pack in one go, for the TernaryMatMul layout.

    Returns (packed uint8 [N, row_bytes] = the packed rows of W^T, scales
    float32 [1] or [N]), identical to
    ``pack_ternary(quantize_ternary(w, granularity=...).codes.T, fmt)`` and its
    scales. The C column primitives read W [K, N] as it is: per-column |W|
    sums, then the fused round+pack of each column into a row of W^T.
    """
    if granularity not in ("tensor", "channel"):
        raise ValueError(f"quantize_pack_absmean supports granularity 'tensor' or 'channel', got {granularity!r}")
    arr = np.asarray(w)
    if arr.dtype.kind != "f" or arr.ndim != 2 or arr.size == 0:
        arr = validate_weight(arr)  # raises with the precise message
    formats.get(fmt)  # ValueError naming the known formats
    # A Gemm(transB=1) weight arrives as the transposed view of a contiguous
    # [N, K] array: pack its rows directly instead of copying W into [K, N].
    rows_layout = arr.dtype == np.float32 and arr.T.flags.c_contiguous and not arr.flags.c_contiguous
    w32 = arr if rows_layout else np.ascontiguousarray(arr, dtype=np.float32)
    k, n = w32.shape
    # float64 [N]; the two C paths sum in the same order, so the scales agree bit for bit.
    sums = codecs.abs_sum_rows(w32.T) if rows_layout else codecs.abs_sum_columns(w32)
    if not np.isfinite(sums).all():
        # float64 sums of float32 magnitudes cannot overflow: a non-finite sum
        # means a NaN or Inf in the input.
        raise ValueError(non_finite_message(w32))
    mean = tensor_abs_mean(sums, n * k) if granularity == "tensor" else sums / k
    gamma = absmean_gamma(mean)
    scales = gamma
    if preserve_ternary:
        # one block per tensor or per column; the check does not depend on element order
        flat = (w32.T if rows_layout else w32).reshape(1, k * n, 1)  # a view either way
        view = flat if granularity == "tensor" else w32.reshape(1, k, n)
        ok, top = _ternary_blocks_checked(view)
        scales = np.where(ok & (top > 0), top, gamma).reshape(gamma.shape).astype(np.float32)
    inv = np.float32(1.0) / gamma
    packed = codecs.ternarize_pack(w32.T, inv, fmt) if rows_layout else codecs.ternarize_pack_columns(w32, inv, fmt)
    return packed, scales
