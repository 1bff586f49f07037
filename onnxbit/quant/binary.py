"""Binary (1-bit) weight quantization: W ~ scale * sign(W).

scale = mean|W| per block, which is also the least-squares scale for sign
codes ((W . sign W) / (sign W . sign W) = sum|W| / n). sign(0) is taken as +1
so that every code is one bit; a zero weight then costs |scale| of error,
the same as any other weight of magnitude 0 or 2*scale.
"""

from __future__ import annotations

import numpy as np

from onnxbit.quant.granularity import BlockLayout, block_abs_means, validate_weight
from onnxbit.quant.result import QuantResult


def quantize_binary(w, *, granularity: str = "tensor", group_size: int | None = None) -> QuantResult:
    """Quantize a [K, N] weight to codes in {-1, +1} with per-block mean|W| scales."""
    w = validate_weight(w)
    layout = BlockLayout.create(w.shape, granularity, group_size)
    code_pieces, scale_pieces = [], []
    for piece, mean in zip(layout.pieces(w), block_abs_means(layout, w)):
        scale_pieces.append(mean.astype(np.float32))
        code_pieces.append(np.where(piece < 0, np.int8(-1), np.int8(1)))
    return QuantResult(
        kind="binary",
        bits=1,
        codes=layout.assemble_codes(code_pieces),
        scales=layout.assemble_scales(scale_pieces),
        zero_points=None,
        granularity=granularity,
        group_size=layout.group_size,
        method="absmean-sign",
        original=w,
    )
