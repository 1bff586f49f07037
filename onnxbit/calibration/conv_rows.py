"""X^T X of a Conv layer's im2col rows, for GPTQ error compensation and the
ternary candidates' layer error.

A Conv is a MatMul of its im2col rows (one per output position and group,
each the K = C/group * prod(kernel) input values that output reads, in the
(c, kernel...) order of the layer kind's [K, N] view, onnxbit.layers.conv)
by the [K, N] weight. The rows are unfolded from the activation with numpy
sliding windows honouring pads (auto_pad included), strides and dilations,
a bounded chunk of output positions at a time, so memory stays at about
CHUNK_BYTES whatever the image size; only the [group, K, K] sums are kept.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from onnxbit.layers.conv import ConvSpec

# Above this K a float64 K x K matrix (and GPTQ's inverse of it) costs too much
# memory and time per layer (4608 = 512 channels x 3 x 3: 170 MB per matrix);
# a grouped Conv's group x K x K matrices are held to the same total.
MAX_GRAM_K = 4608
CHUNK_BYTES = 64 << 20  # float64 im2col rows unfolded at once


def conv_pads(spec: ConvSpec, spatial: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """(begin, end) pads per spatial axis for an input of `spatial` size, as ONNX Conv defines them."""
    rank = len(spatial)
    kernel = spec.weight_shape[2:]
    strides = list(spec.attrs.get("strides") or [1] * rank)
    dilations = list(spec.attrs.get("dilations") or [1] * rank)
    auto_pad = spec.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        return begin, end
    if auto_pad == "VALID":
        return [0] * rank, [0] * rank
    pads = list(spec.attrs.get("pads") or [0] * (2 * rank))
    return [int(p) for p in pads[:rank]], [int(p) for p in pads[rank:]]


def im2col_chunks(x: np.ndarray, spec: ConvSpec, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    """float64 rows [group, R, K] (each group's rows for the same R output
    positions) covering every output position of every sample in x
    [B, C, *spatial], a bounded number of rows at a time."""
    if spec.op != "Conv":
        raise ValueError(f"im2col rows are defined for Conv, not {spec.op}")
    x = np.asarray(x)
    rank = spec.spatial_rank
    if x.ndim != rank + 2:
        raise ValueError(f"a {rank}-D Conv input has {rank + 2} axes, got shape {x.shape}")
    group = spec.group
    per_group = spec.weight_shape[1]
    if x.shape[1] != per_group * group:
        raise ValueError(f"Conv input has {x.shape[1]} channels; the weight {spec.weight_shape} with group={group} "
                         f"reads {per_group * group}")
    kernel = spec.weight_shape[2:]
    strides = list(spec.attrs.get("strides") or [1] * rank)
    dilations = list(spec.attrs.get("dilations") or [1] * rank)
    begin, end = conv_pads(spec, tuple(x.shape[2:]))
    padded = np.pad(x, [(0, 0), (0, 0), *zip(begin, end)])
    spans = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
    windows = np.lib.stride_tricks.sliding_window_view(padded, spans, axis=tuple(range(2, 2 + rank)))
    # [B, C, *positions, *span] -> strided positions, dilated taps
    windows = windows[(slice(None), slice(None), *(slice(None, None, s) for s in strides),
                       *(slice(None, None, d) for d in dilations))]
    k = per_group * int(np.prod(kernel))
    positions = windows.shape[2:2 + rank]
    windows = windows.reshape(x.shape[0], group, per_group, *windows.shape[2:])
    # Chunks run along the first spatial output axis: rows of that many positions each.
    per_line = int(np.prod(positions[1:]))
    lines = max(1, chunk_bytes // max(1, 8 * group * k * per_line))
    # [group, *positions, C/group, *kernel]: each output position's window, channels first, as the weight's rows are
    order = (0, *range(2, 2 + rank), 1, *range(2 + rank, 2 + 2 * rank))
    for sample in range(x.shape[0]):
        for start in range(0, positions[0], lines):
            piece = windows[sample, :, :, start:start + lines].transpose(order)
            yield piece.reshape(group, -1, k).astype(np.float64)


def conv_gram(x: np.ndarray, spec: ConvSpec, chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """float64 [group, K, K]: each group's sum of r r^T over the im2col rows r of x."""
    k = spec.weight_shape[1] * int(np.prod(spec.weight_shape[2:]))
    gram = np.zeros((spec.group, k, k))
    for rows in im2col_chunks(x, spec, chunk_bytes):
        gram += np.matmul(rows.transpose(0, 2, 1), rows)
    return gram


def output_size(spec: ConvSpec, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """The Conv's output spatial size on an input of `spatial` size."""
    rank = len(spatial)
    kernel = spec.weight_shape[2:]
    strides = list(spec.attrs.get("strides") or [1] * rank)
    dilations = list(spec.attrs.get("dilations") or [1] * rank)
    begin, end = conv_pads(spec, spatial)
    return tuple((size + b + e - (k - 1) * d - 1) // s + 1
                 for size, b, e, k, s, d in zip(spatial, begin, end, kernel, strides, dilations))


def output_positions(spec: ConvSpec, spatial: tuple[int, ...]) -> int:
    """Output positions per sample and channel of the Conv on an input of `spatial` size."""
    return int(np.prod(output_size(spec, spatial)))
