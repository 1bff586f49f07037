"""Input validation and the block views every quantizer works on.

Weights use the ONNX MatMul layout W [K, N]: axis 0 is the reduction axis and
each column is one output channel. A quantizer shares one scale (and zero
point) per *block*:

* ``tensor``  one block, the whole matrix;
* ``channel`` one block per column (N blocks of K elements);
* ``group``   blocks of ``group_size`` consecutive elements along K inside a
  column; the last group of a column is shorter when K % group_size != 0.

:class:`BlockLayout` presents W as at most two 3-D *pieces* [B, L, N] in which
each block is one ``[b, :, n]`` fibre, so a quantizer reduces over axis 1 and is
written once for all granularities: per-tensor is [1, K*N, 1], per-channel is
[1, K, N], per-group is [K//G, G, N] plus a [1, K%G, N] tail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRANULARITIES = ("tensor", "channel", "group")


def validate_weight(w, name: str = "weight") -> np.ndarray:
    """Return ``w`` as a C-contiguous float32 [K, N] array, or raise ValueError.

    float16/32/64 are accepted (computed in float32); empty, non-2-D, non-float
    and non-finite input is rejected with a message that locates the problem.
    """
    arr = np.asarray(w)
    if arr.dtype.kind != "f":
        raise ValueError(f"{name} must be a float16/32/64 array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D [K, N] (MatMul layout: K reduction rows, N output columns), "
            f"got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        raise ValueError(non_finite_message(arr, finite, name))
    return arr


def non_finite_message(arr: np.ndarray, finite: np.ndarray | None = None, name: str = "weight") -> str:
    """Describe the non-finite values of ``arr``: counts and the first position."""
    if finite is None:
        finite = np.isfinite(arr)
    nan = np.isnan(arr)
    n_nan = int(nan.sum())
    n_inf = int((~finite).sum()) - n_nan
    parts = []
    if n_nan:
        parts.append(f"{n_nan} NaN value{'s' if n_nan != 1 else ''}")
    if n_inf:
        parts.append(f"{n_inf} Inf value{'s' if n_inf != 1 else ''}")
    first = tuple(int(i) for i in np.argwhere(~finite)[0])
    return f"{name} contains {' and '.join(parts)}; first at {list(first)}"


@dataclass(frozen=True)
class BlockLayout:
    """How a [K, N] weight is cut into scale-sharing blocks."""

    granularity: str
    group_size: int | None
    shape: tuple[int, int]

    @classmethod
    def create(cls, shape: tuple[int, int], granularity: str, group_size: int | None) -> BlockLayout:
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if granularity == "group":
            if group_size is None or isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)):
                raise ValueError(f"granularity 'group' needs an integer group_size, got {group_size!r}")
            if group_size < 1:
                raise ValueError(f"group_size must be >= 1, got {group_size}")
            group_size = int(group_size)
        elif group_size in (None, 0):  # 0 is how configs spell "not grouped"
            group_size = None
        else:
            raise ValueError(f"group_size is only used with granularity 'group' (got granularity {granularity!r})")
        return cls(granularity, group_size, (int(shape[0]), int(shape[1])))

    @property
    def n_groups(self) -> int:
        """Number of groups along K (1 unless granularity is 'group')."""
        if self.granularity != "group":
            return 1
        return -(-self.shape[0] // self.group_size)

    @property
    def scale_shape(self) -> tuple[int, ...]:
        n = self.shape[1]
        return {"tensor": (1,), "channel": (n,), "group": (self.n_groups, n)}[self.granularity]

    def pieces(self, w: np.ndarray) -> list[np.ndarray]:
        """W as 3-D views [B, L, N]; each block is one [b, :, n] fibre."""
        k, n = self.shape
        if self.granularity == "tensor":
            return [w.reshape(1, k * n, 1)]
        if self.granularity == "channel":
            return [w.reshape(1, k, n)]
        g = self.group_size
        full = k // g
        out = []
        if full:
            out.append(w[: full * g].reshape(full, g, n))
        if k % g:
            out.append(w[full * g:].reshape(1, k % g, n))
        return out

    def assemble_codes(self, pieces: list[np.ndarray]) -> np.ndarray:
        """Inverse of :meth:`pieces` for arrays of codes."""
        k, n = self.shape
        if len(pieces) == 1:
            return pieces[0].reshape(k, n)
        return np.concatenate([p.reshape(-1, n) for p in pieces], axis=0)

    def assemble_scales(self, per_piece: list[np.ndarray]) -> np.ndarray:
        """Per-piece [B, N] block values -> the public scale shape."""
        return np.concatenate(per_piece, axis=0).reshape(self.scale_shape)

    def expand(self, values: np.ndarray) -> np.ndarray:
        """Per-block values (scale shape) -> an array broadcastable to [K, N]."""
        k, n = self.shape
        if self.granularity == "tensor":
            return values.reshape(1, 1)
        if self.granularity == "channel":
            return values.reshape(1, n)
        return np.repeat(values, self.group_size, axis=0)[:k]


ABS_SUM_LANES = 8


def abs_sums(piece: np.ndarray) -> np.ndarray:
    """Sum of |W| over each block of a [B, L, N] piece, float64 [B, N].

    Accumulated in the canonical order of the C primitive ``abs_sum_rows``
    (csrc/codec): element i goes to lane i % 8 for the whole 8-element chunks,
    the lanes are combined as ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)), and the
    tail is added in order. Matching that order bit for bit is what lets the
    fused quantize+pack path and the numpy quantizers agree exactly on gamma.
    Reductions over axis 1 of these views are not along numpy's fast axis, so
    numpy adds them in index order (no pairwise summation).
    """
    b, length, n = piece.shape
    whole = length - length % ABS_SUM_LANES
    if whole:
        chunks = piece[:, :whole].reshape(b, whole // ABS_SUM_LANES, ABS_SUM_LANES, n)
        lanes = np.abs(chunks).sum(axis=1, dtype=np.float64)  # [B, 8, N]
        total = (lanes[:, 0] + lanes[:, 4]) + (lanes[:, 1] + lanes[:, 5])
        total += (lanes[:, 2] + lanes[:, 6]) + (lanes[:, 3] + lanes[:, 7])
    else:
        total = np.zeros((b, n))
    for i in range(whole, length):
        total += np.abs(piece[:, i]).astype(np.float64)
    return total


def tensor_abs_mean(column_sums: np.ndarray, count: int) -> np.ndarray:
    """Per-tensor mean|W| from the per-column sums, float64 [1]."""
    return column_sums.reshape(1, -1).sum(axis=1) / count


def block_abs_means(layout: BlockLayout, w: np.ndarray) -> list[np.ndarray]:
    """mean|W| of every block, float64 [B, N] per piece of ``layout.pieces(w)``.

    Per tensor it is the sum of the per-column sums (the order the fused path
    can compute from the columns of W), divided by K*N.
    """
    k, n = layout.shape
    if layout.granularity == "tensor":
        return [tensor_abs_mean(abs_sums(w.reshape(1, k, n)), k * n).reshape(1, 1)]
    return [abs_sums(piece) / piece.shape[1] for piece in layout.pieces(w)]
