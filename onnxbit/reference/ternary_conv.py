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


ACT_INT8_PIXEL = 3


def quantize_pixels(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """act_quant = 3's quantizer: x [N, C, *spatial] -> (q int8 of x's shape,
    inverse float32 [N, 1, *spatial] = 1 / s per pixel), with
    s = 127 * (1 / max(absmax over all C channels, 1e-5)) as
    quantize_activations computes it; a pixel holding NaN or Inf gets q = 0
    and inverse = NaN."""
    finite = np.all(np.isfinite(x), axis=1, keepdims=True)
    safe = np.where(finite, x, np.float32(0))
    amax = np.max(np.abs(safe), axis=1, keepdims=True).astype(np.float32)
    s = (np.float32(127.0) * (np.float32(1.0) / np.maximum(amax, np.float32(1e-5)))).astype(np.float32)
    q = np.clip(np.rint((safe * s).astype(np.float32)), np.float32(-128), np.float32(127)).astype(np.int8)
    inverse = np.where(finite, (np.float32(1.0) / s).astype(np.float32), np.float32(np.nan))
    return q, inverse


def _tap_windows(values: np.ndarray, kernel, strides, dilations, geometry: ConvGeometry, fill):
    """Per kernel tap in (k...) order: values [N, C, *spatial] read at that tap
    of every output position, [N, C, positions], padding read as fill."""
    rank = values.ndim - 2
    pads = [(0, 0), (0, 0)]
    for axis in range(rank):
        need = (geometry.out[axis] - 1) * strides[axis] + (kernel[axis] - 1) * dilations[axis] + 1
        lead = geometry.pad_begin[axis]
        pads.append((lead, max(0, need - lead - values.shape[2 + axis])))
    padded = np.pad(values, pads, constant_values=fill)
    positions = int(np.prod(geometry.out))
    for offsets in np.ndindex(*kernel):
        index = [slice(None), slice(None)]
        for axis in range(rank):
            start = offsets[axis] * dilations[axis]
            index.append(slice(start, start + (geometry.out[axis] - 1) * strides[axis] + 1, strides[axis]))
        yield padded[tuple(index)].reshape(values.shape[0], values.shape[1], positions)


def per_pixel_conv(x, rows, scales, bias, kernel, strides, dilations, geometry: ConvGeometry,
                   group: int) -> np.ndarray:
    """act_quant = 3 (tconv.h): y [N, M, positions]. Each input pixel is
    quantized once over all its C channels (quantize_pixels). Per output
    position and channel, in float32: acc = 0; for each tap in (k...) order
    whose pixel is not padding, acc = acc + float32(exact integer dot over the
    group's channels of the pixel's q with the tap's codes) * inverse[pixel];
    then y = acc * scale (+ bias)."""
    n, c = x.shape[:2]
    m, cg = rows.shape[0], c // group
    per_group = m // group
    taps = int(np.prod(kernel))
    codes = rows.reshape(m, cg, taps).astype(np.int64)
    q, inverse = quantize_pixels(x)
    inside = np.ones((n, 1, *x.shape[2:]), np.float32)
    q_taps = _tap_windows(q, kernel, strides, dilations, geometry, 0)
    inverse_taps = _tap_windows(inverse, kernel, strides, dilations, geometry, 0)
    inside_taps = _tap_windows(inside, kernel, strides, dilations, geometry, 0)
    positions = int(np.prod(geometry.out))
    acc = np.zeros((n, m, positions), np.float32)
    for t, (qt, it, valid) in enumerate(zip(q_taps, inverse_taps, inside_taps)):
        valid = valid[:, 0][:, None, :] != 0  # [N, 1, positions]
        for g in range(group):
            channels = slice(g * per_group, (g + 1) * per_group)
            dot = np.einsum("ncp,mc->nmp", qt[:, g * cg:(g + 1) * cg].astype(np.int64), codes[channels, :, t])
            term = (dot.astype(np.float32) * it[:, 0][:, None, :]).astype(np.float32)
            acc[:, channels] = np.where(valid, (acc[:, channels] + term).astype(np.float32), acc[:, channels])
    scales = np.asarray(scales, np.float32).reshape(-1)
    if scales.size not in (1, m):
        raise ValueError(f"act_quant 3 needs scales [1] or [M = {m}] (one group along K), got {scales.size}")
    y = (acc * np.broadcast_to(scales, (m,))[None, :, None]).astype(np.float32)
    if bias is not None:
        y = (y + np.asarray(bias, np.float32)[None, :, None]).astype(np.float32)
    return y


def ternary_conv_reference(x, codes, scales, *, weight_shape, group: int = 1, group_size: int = 0,
                           act_quant: int = 0, bias=None, strides=None, pads=None, dilations=None,
                           auto_pad: str = "NOTSET", act_scale=None) -> np.ndarray:
    """Y = Conv(X, codes * scales) (+ bias) for ternary codes of shape
    weight_shape [M, C/group, *kernel] (or [M, K]); scales [1], [M] or [M, groups].
    act_scale: the static activation scale of act_quant = 2; act_quant = 3 is
    per_pixel_conv (one scale per input pixel)."""
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
    rows = np.asarray(codes, dtype=np.int8).reshape(m, -1)
    scales = np.asarray(scales, dtype=np.float32)
    if act_quant == ACT_INT8_PIXEL:
        if group_size and group_size < rows.shape[1]:
            raise ValueError(f"act_quant 3 needs one scale group along K = {rows.shape[1]}, got group_size "
                             f"{group_size}")
        y = per_pixel_conv(x, rows, scales, bias, kernel, strides, dilations, geometry, group)
        return y.reshape(x.shape[0], m, *geometry.out)
    cols = im2col(x, kernel, strides, dilations, geometry, group)
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
