"""Pure numpy reference of the ternary matmul arithmetic (csrc/include/onnxbit/tmatmul.h).

The act_quant=1 and 2 paths follow the header's formula step by step in float32, so
the C kernels on every ISA must equal it bit for bit (act_quant=2 differs
only in the scale: one fixed act_scale for every row); the act_quant=0 path is
plain float32 matmul per scale group (the C summation order differs, so tests
compare it with a tolerance).
"""

from __future__ import annotations

import numpy as np

ACT_NONE = 0
ACT_INT8_TOKEN = 1
ACT_INT8_STATIC = 2


def _scale_table(scales: np.ndarray, k: int, n: int, group_size: int) -> tuple[np.ndarray, int]:
    """Scales as a float32 [n, groups] table, plus the effective group size."""
    scales = np.asarray(scales, dtype=np.float32).reshape(-1)
    if group_size == 0:
        if scales.size == 1:
            return np.full((n, 1), scales[0], dtype=np.float32), max(k, 1)
        if scales.size == n:
            return scales.reshape(n, 1), max(k, 1)
        raise ValueError(f"{scales.size} scales, expected 1 or n = {n} when group_size is 0")
    groups = -(-k // group_size)
    if scales.size != n * groups:
        raise ValueError(f"{scales.size} scales, expected n * ceil(k / group_size) = {n * groups}")
    return scales.reshape(n, groups), group_size


def quantize_activations(a2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row int8 quantization of float32 rows [M, K]: (q int8, s float32 [M], finite [M])."""
    finite = np.all(np.isfinite(a2), axis=1)
    safe = np.where(finite[:, None], a2, np.float32(0))
    amax = np.max(np.abs(safe), axis=1, initial=np.float32(0)).astype(np.float32)
    s = (np.float32(127.0) * (np.float32(1.0) / np.maximum(amax, np.float32(1e-5)))).astype(np.float32)
    scaled = (safe * s[:, None]).astype(np.float32)
    q = np.clip(np.rint(scaled), np.float32(-128), np.float32(127)).astype(np.int8)
    return q, s, finite


def quantize_activations_static(a2: np.ndarray, act_scale) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows [M, K] to int8 with one fixed scale (act_quant = 2): the rounding and
    range of quantize_activations, s = act_scale for every row. Same return shape."""
    s = np.float32(act_scale)
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"act_scale must be finite and > 0, got {act_scale}")
    finite = np.all(np.isfinite(a2), axis=1)
    safe = np.where(finite[:, None], a2, np.float32(0))
    scaled = (safe * s).astype(np.float32)
    q = np.clip(np.rint(scaled), np.float32(-128), np.float32(127)).astype(np.int8)
    return q, np.full(a2.shape[0], s, dtype=np.float32), finite


def ternary_matmul_reference(a, codes_kn, scales, group_size: int = 0, act_quant: int = 0,
                             bias=None, act_scale=None) -> np.ndarray:
    """Y = A @ (W * scale) (+ bias) for ternary codes_kn (int8 [K, N], values -1/0/1).

    a is float32 [..., K]; the result is float32 [..., N]. act_scale is the
    fixed activation scale of act_quant = 2 (required there, unused otherwise).
    """
    a = np.asarray(a, dtype=np.float32)
    w = np.asarray(codes_kn, dtype=np.int8)
    if w.ndim != 2:
        raise ValueError(f"codes_kn must be 2-D [K, N], got shape {w.shape}")
    k, n = w.shape
    if a.shape[-1] != k:
        raise ValueError(f"a has K = {a.shape[-1]}, codes_kn has K = {k}")
    if act_quant not in (ACT_NONE, ACT_INT8_TOKEN, ACT_INT8_STATIC):
        raise ValueError(f"unknown act_quant {act_quant}")
    if act_quant == ACT_INT8_STATIC and act_scale is None:
        raise ValueError("act_quant 2 (static int8 activations) needs act_scale")
    table, gs = _scale_table(scales, k, n, group_size)
    lead = a.shape[:-1]
    a2 = a.reshape(-1, k)
    m = a2.shape[0]
    groups = table.shape[1]
    acc = np.zeros((m, n), dtype=np.float32)

    if act_quant in (ACT_INT8_TOKEN, ACT_INT8_STATIC):
        if act_quant == ACT_INT8_TOKEN:
            q, s, finite = quantize_activations(a2)
        else:
            q, s, finite = quantize_activations_static(a2, act_scale)
        q64 = q.astype(np.int64)
        w64 = w.astype(np.int64)
        for g in range(groups):
            lo, hi = g * gs, min(k, (g + 1) * gs)
            isum = q64[:, lo:hi] @ w64[lo:hi, :]
            acc = (acc + isum.astype(np.float32) * table[:, g][None, :]).astype(np.float32)
        y = (acc / s[:, None]).astype(np.float32)
        if bias is not None:
            y = (y + np.asarray(bias, dtype=np.float32)[None, :]).astype(np.float32)
        y[~finite, :] = np.float32(np.nan)
    else:
        wf = w.astype(np.float32)
        for g in range(groups):
            lo, hi = g * gs, min(k, (g + 1) * gs)
            with np.errstate(invalid="ignore"):  # Inf * 0 -> NaN, as in any float matmul
                part = (a2[:, lo:hi] @ wf[lo:hi, :]).astype(np.float32)
            acc = (acc + part * table[:, g][None, :]).astype(np.float32)
        y = acc
        if bias is not None:
            y = (y + np.asarray(bias, dtype=np.float32)[None, :]).astype(np.float32)
    return y.reshape(*lead, n)
