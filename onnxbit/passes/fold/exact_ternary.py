"""Split a float weight that is exactly ternary into codes and scales.

Exactly means every element is one of {-v, 0, +v} for a single v (per tensor)
or for one v per output column (per channel); nothing is rounded, so
codes * scales reproduces the weight bit for bit (signed zeros aside).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class NotTernaryError(ValueError):
    """The values are not exactly ternary; the message says how."""


@dataclass
class ExactTernary:
    codes: np.ndarray  # int8 [K, N] in {-1, 0, 1}
    scales: np.ndarray  # float32 [1] or [N]

    @property
    def per_channel(self) -> bool:
        return self.scales.size > 1


def split_exact_ternary(weight: np.ndarray) -> ExactTernary:
    """weight: float [K, N] (N = output columns). Per-tensor when one magnitude
    serves all columns, else per-column; raises NotTernaryError otherwise."""
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise NotTernaryError(f"weight has rank {weight.ndim}, expected a 2-D [K, N] matrix")
    if weight.dtype != np.float32:
        raise NotTernaryError(f"weight is {weight.dtype}, expected float32")
    _reject_from_first_rows(weight)
    if not np.isfinite(weight).all():
        raise NotTernaryError("weight holds NaN or Inf")
    magnitude = np.abs(weight)
    nonzero = magnitude != 0
    codes = np.sign(weight).astype(np.int8)
    if not nonzero.any():
        # All zero: any positive scale reproduces it; 1 keeps the op valid.
        return ExactTernary(codes, np.ones(1, np.float32))
    largest = magnitude.max()
    if np.all(magnitude[nonzero] == largest):
        return ExactTernary(codes, np.array([largest], np.float32))
    column_scale = magnitude.max(axis=0)
    # Columns with every weight zero get scale 1 (their codes are all 0).
    column_scale = np.where(column_scale == 0, np.float32(1), column_scale).astype(np.float32)
    per_column_ok = magnitude == column_scale[None, :]
    if np.all(per_column_ok | ~nonzero):
        return ExactTernary(codes, column_scale)
    distinct = np.unique(magnitude[nonzero])
    bad_column = int(np.argmax(~np.all(per_column_ok | ~nonzero, axis=0)))
    shown = ", ".join(f"{v:.6g}" for v in distinct[:4]) + (", ..." if distinct.size > 4 else "")
    raise NotTernaryError(
        f"weight is not exactly ternary: {distinct.size} distinct nonzero magnitudes ({shown}); "
        f"column {bad_column} alone has {np.unique(magnitude[:, bad_column][nonzero[:, bad_column]]).size}"
    )


def _reject_from_first_rows(weight: np.ndarray, rows: int = 16) -> None:
    """Every float weight goes through this check and almost none are ternary:
    a column whose first rows already hold two nonzero magnitudes settles it
    without a pass over the whole tensor."""
    head = np.abs(weight[:rows])
    if not np.isfinite(head).all():
        raise NotTernaryError("weight holds NaN or Inf")
    top = head.max(axis=0)
    mismatch = (head != 0) & (head != top)
    if mismatch.any():
        row, column = (int(i[0]) for i in np.nonzero(mismatch))
        raise NotTernaryError(
            f"weight is not exactly ternary: column {column} holds magnitudes "
            f"{head[row, column]:.6g} and {top[column]:.6g}")


def ternary_values(ternary: ExactTernary) -> np.ndarray:
    """codes * scales as float32 [K, N], the plain weight a folded MatMul reads."""
    return (ternary.codes.astype(np.float32) * ternary.scales[None, :]).astype(np.float32)
