"""b-bit integer weight quantization (b in 2, 4, 8), symmetric or asymmetric.

Symmetric: codes in the restricted range [-(2^(b-1)-1), 2^(b-1)-1] (int8),
scale = max|W| / (2^(b-1)-1). The range is chosen symmetric so that W and -W
quantize to negated codes and max|W| of either sign is hit exactly; the cost
is one unused code (-2^(b-1)). At b = 2 this is ternary with a max-abs scale.

Asymmetric (MatMulNBits style): uint8 codes in [0, 2^b-1] with a zero point,
  lo = min(min W, 0), hi = max(max W, 0), scale = (hi - lo) / (2^b-1),
  zp = clip(rint(-lo / scale), 0, 2^b-1), code = clip(rint(W / scale) + zp).
Widening the range to include 0 and rounding the zero point to an integer
make 0.0 exactly representable (code zp). An all-zero block gets scale 0 and
dequantizes to zeros, as onnxruntime's own block quantizer does.

Codes are rounded half to even in float64 against the stored float32 scale,
so |W - dequantized| <= scale / 2 (up to float32 rounding of the product).
Codes are stored one per byte; packing them is the codecs' job.
"""

from __future__ import annotations

import numpy as np

from onnxbit.quant.granularity import BlockLayout, validate_weight
from onnxbit.quant.result import QuantResult

SUPPORTED_BITS = (2, 4, 8)


def _divide_or_zero(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    safe = np.where(scale > 0, scale, 1).astype(np.float64)
    return np.where(scale > 0, values / safe, 0.0)


BAND_ELEMENTS = 1 << 20


def _bands(piece: np.ndarray):
    """Index pairs (blocks, rows) covering a [B, L, N] piece in bands of
    about BAND_ELEMENTS elements: whole blocks when there are several, else
    runs of rows of the one block."""
    blocks, length, n = piece.shape
    if blocks > 1:
        step = max(1, BAND_ELEMENTS // max(1, length * n))
        for start in range(0, blocks, step):
            yield slice(start, start + step), slice(None)
    else:
        step = max(1, BAND_ELEMENTS // max(1, n))
        for start in range(0, length, step):
            yield slice(None), slice(start, start + step)


def quantize_int(
    w,
    bits: int = 4,
    *,
    symmetric: bool = True,
    granularity: str = "tensor",
    group_size: int | None = None,
) -> QuantResult:
    """Quantize a [K, N] weight to b-bit integers with per-block scales (and zero points)."""
    if bits not in SUPPORTED_BITS or isinstance(bits, bool):
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits!r}")
    w = validate_weight(w)
    layout = BlockLayout.create(w.shape, granularity, group_size)
    code_pieces, scale_pieces, zero_pieces = [], [], []
    for piece in layout.pieces(w):
        if symmetric:
            top = 2 ** (bits - 1) - 1
            scale = (np.abs(piece).max(axis=1).astype(np.float64) / top).astype(np.float32)
            zero = None
            codes = np.empty(piece.shape, np.int8)
            low = -top
        else:
            top = 2**bits - 1
            lo = np.minimum(piece.min(axis=1), 0).astype(np.float64)
            hi = np.maximum(piece.max(axis=1), 0).astype(np.float64)
            scale = ((hi - lo) / top).astype(np.float32)
            zero = np.clip(np.rint(_divide_or_zero(-lo, scale)), 0, top)
            codes = np.empty(piece.shape, np.uint8)
            low = 0
            zero_pieces.append(zero.astype(np.uint8))
        # Elementwise, so the float64 work runs a band at a time (bounded
        # temporaries on big layers) with the same result as all at once.
        for blocks, rows in _bands(piece):
            q = np.rint(_divide_or_zero(piece[blocks, rows].astype(np.float64), scale[blocks, None, :]))
            if zero is not None:
                q += zero[blocks, None, :]
            codes[blocks, rows] = np.clip(q, low, top)
        code_pieces.append(codes)
        scale_pieces.append(scale)
    return QuantResult(
        kind="int",
        bits=bits,
        codes=layout.assemble_codes(code_pieces),
        scales=layout.assemble_scales(scale_pieces),
        zero_points=layout.assemble_scales(zero_pieces) if zero_pieces else None,
        granularity=granularity,
        group_size=layout.group_size,
        method="symmetric" if symmetric else "asymmetric",
        original=w,
    )
