"""Pure numpy reference of com.onnxbit::TernaryConv (csrc/include/onnxbit/tconv.h).

A convolution is an im2col matrix per (image, group) times the group's weight
rows, computed by the TernaryMatMul reference: so act_quant=1 shares one
activation scale per im2col row (one output position of one group, over
C/group channels times the kernel window, padding counted as 0), and the C
op must equal this bit for bit on that path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxbit.reference.ternary_matmul import ternary_matmul_reference

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


@dataclass(frozen=True)
class ConvGeometry:
    """Per spatial axis: output length and leading pad."""

    out: tuple[int, ...]
    pad_begin: tuple[int, ...]


def conv_geometry(in_spatial, kernel, strides, pads, dilations, auto_pad: str = "NOTSET") -> ConvGeometry:
    """ONNX Conv output size and leading pads (pads: begins then ends)."""
    rank = len(in_spatial)
    if auto_pad not in AUTO_PADS:
        raise ValueError(f"auto_pad={auto_pad!r} is not one of {', '.join(AUTO_PADS)}")
    out, begin = [], []
    for axis in range(rank):
        size, k, s, d = int(in_spatial[axis]), int(kernel[axis]), int(strides[axis]), int(dilations[axis])
        span = (k - 1) * d + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            length = -(-size // s)
            total = max(0, (length - 1) * s + span - size)
            out.append(length)
            begin.append(total // 2 if auto_pad == "SAME_UPPER" else (total + 1) // 2)
            continue
        lead, trail = (0, 0) if auto_pad == "VALID" else (int(pads[axis]), int(pads[axis + rank]))
        padded = size + lead + trail
        if padded < span:
            raise ValueError(f"spatial axis {axis}: the dilated kernel spans {span} but the padded input is "
                             f"{padded} long")
        out.append((padded - span) // s + 1)
        begin.append(lead)
    return ConvGeometry(tuple(out), tuple(begin))


def im2col(x: np.ndarray, kernel, strides, dilations, geometry: ConvGeometry, group: int) -> np.ndarray:
    """float32 [N, group, positions, C/group * prod(kernel)], rows in (c, k...) order."""
    n, c = x.shape[:2]
    rank = x.ndim - 2
    cg = c // group
    pads = [(0, 0), (0, 0)]
    for axis in range(rank):
        need = (geometry.out[axis] - 1) * strides[axis] + (kernel[axis] - 1) * dilations[axis] + 1
        lead = geometry.pad_begin[axis]
        pads.append((lead, max(0, need - lead - x.shape[2 + axis])))
    padded = np.pad(x, pads)
    windows = []
    for offsets in np.ndindex(*kernel):
        index = [slice(None), slice(None)]
        for axis in range(rank):
            start = offsets[axis] * dilations[axis]
            index.append(slice(start, start + (geometry.out[axis] - 1) * strides[axis] + 1, strides[axis]))
        windows.append(padded[tuple(index)])  # [N, C, *out]
    taps = np.stack(windows, axis=2)  # [N, C, taps, *out]
    positions = int(np.prod(geometry.out))
    taps = taps.reshape(n, group, cg, len(windows), positions)
    return np.ascontiguousarray(taps.transpose(0, 1, 4, 2, 3).reshape(n, group, positions, cg * len(windows)),
                                dtype=np.float32)


def ternary_conv_reference(x, codes, scales, *, weight_shape, group: int = 1, group_size: int = 0,
                           act_quant: int = 0, bias=None, strides=None, pads=None, dilations=None,
                           auto_pad: str = "NOTSET", act_scale=None) -> np.ndarray:
    """Y = Conv(X, codes * scales) (+ bias) for ternary codes of shape
    weight_shape [M, C/group, *kernel] (or [M, K]); scales [1], [M] or [M, groups].
    act_scale: the static activation scale of act_quant = 2."""
    x = np.asarray(x, dtype=np.float32)
    weight_shape = tuple(int(d) for d in weight_shape)
    m, cg, kernel = weight_shape[0], weight_shape[1], weight_shape[2:]
    rank = len(kernel)
    if x.ndim != rank + 2 or x.shape[1] != cg * group:
        raise ValueError(f"X has shape {x.shape}; weight_shape {weight_shape} with group {group} needs "
                         f"[N, {cg * group}, ...] of rank {rank + 2}")
    strides = list(strides or [1] * rank)
    dilations = list(dilations or [1] * rank)
    pads = list(pads or [0] * (2 * rank))
    geometry = conv_geometry(x.shape[2:], kernel, strides, pads, dilations, auto_pad)
    cols = im2col(x, kernel, strides, dilations, geometry, group)
    rows = np.asarray(codes, dtype=np.int8).reshape(m, -1)
    scales = np.asarray(scales, dtype=np.float32)
    per_group = m // group
    y = np.empty((x.shape[0], m, cols.shape[2]), dtype=np.float32)
    for g in range(group):
        channels = slice(g * per_group, (g + 1) * per_group)
        group_scales = scales.reshape(-1) if scales.size == 1 else scales.reshape(m, -1)[channels]
        if group_size == 0:
            group_scales = group_scales.reshape(-1)
        group_bias = None if bias is None else np.asarray(bias, np.float32)[channels]
        for image in range(x.shape[0]):
            y[image, channels] = ternary_matmul_reference(cols[image, g], rows[channels].T, group_scales,
                                                          group_size, act_quant, group_bias,
                                                          act_scale=act_scale).T
    return y.reshape(x.shape[0], m, *geometry.out)
