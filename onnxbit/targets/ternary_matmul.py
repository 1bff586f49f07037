"""com.onnxbit::TernaryMatMul (target "onnxbit") for ternary and binary
weights: B = W^T packed row by row in a storage format (onnxbit.formats),
scales [1] | [N] | [N, groups]."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxbit import checksum
from onnxbit.errors import ConfigError
from onnxbit.layers.base import WeightSite
from onnxbit.passes.base import PassContext
from onnxbit.passes.rewrite import array_constant, emit_op
from onnxbit.targets.base import LayerInfo, ModelIndex, PackedWeight, bits_per_weight, int_attribute

DOMAIN = "com.onnxbit"
OPSET = 1


def op_scales(scales: np.ndarray, granularity: str) -> np.ndarray:
    """QuantResult scales -> the op's layout: group scales go from [groups, N] to [N, groups]."""
    scales = np.asarray(scales, dtype=np.float32)
    if granularity == "group":
        return np.ascontiguousarray(scales.T)
    return scales.reshape(-1)


ACT_INT8_STATIC = 2


def activation_attributes(settings, base: str) -> dict:
    """act_quant (and act_scale) of the op for a layer's settings: 2 with the
    calibrated scale for activations "static", else the settings' act_quant."""
    if settings.activations != "static":
        return {"act_quant": settings.act_quant}
    if settings.act_scale is None:
        raise ConfigError(f"weight '{base}': activations 'static' needs the layer's act_scale, which calibration "
                          "measures: run `onnxbit calibrate MODEL --data ... --activations static -o calib.json`, "
                          "then `onnxbit quantize --calibration calib.json`")
    return {"act_quant": ACT_INT8_STATIC, "act_scale": float(settings.act_scale)}


def pack_ternary_matmul(ctx: PassContext, base: str, *, precision: str, k: int, n: int, packed_rows: np.ndarray,
                        scales: np.ndarray, granularity: str, group_size: int, fmt: str,
                        act_quant: int, act_scale: float | None = None) -> PackedWeight:
    """packed_rows: uint8 [N, row_bytes], W^T packed in row format `fmt`, or the
    1-D stream of fmt "rans"; scales as QuantResult holds them."""
    op_scale = op_scales(scales, granularity)
    if not (np.isfinite(op_scale).all() and (op_scale > 0).all()):
        raise ValueError(f"weight '{base}': TernaryMatMul needs finite scales > 0 "
                         f"(min {float(op_scale.min())!r})")
    constants = [array_constant(ctx, f"{base}_packed_{fmt}", packed_rows),
                 array_constant(ctx, f"{base}_scales", op_scale)]
    attrs = {"K": k, "N": n, "format": fmt, "group_size": group_size if granularity == "group" else 0,
             "act_quant": int(act_quant), checksum.ATTRIBUTE: checksum.packed_weight_crc32c(packed_rows, op_scale)}
    if act_quant == ACT_INT8_STATIC:
        attrs["act_scale"] = float(np.float32(act_scale))
    return PackedWeight(precision=precision, storage=f"TernaryMatMul/{fmt}", constants=constants, attrs=attrs, k=k, n=n)


def emit_ternary_matmul(ctx: PassContext, site: WeightSite, packed: PackedWeight) -> gs.Node:
    return emit_op(ctx, site, packed, "TernaryMatMul", DOMAIN, OPSET, bias_input=3)


def recognize(node: onnx.NodeProto, attrs: dict, index: ModelIndex) -> LayerInfo | None:
    if node.domain != DOMAIN or node.op_type != "TernaryMatMul":
        return None
    k, n = int_attribute(attrs, "K"), int_attribute(attrs, "N")
    size = index.constant_bytes(node.input[1:3])
    fmt = attrs.get("format", b"2bit")
    fmt = fmt.decode(errors="replace") if isinstance(fmt, bytes) else str(fmt)
    details = {"group_size": int_attribute(attrs, "group_size", 0), "act_quant": int_attribute(attrs, "act_quant", 0)}
    if "act_scale" in attrs:
        details["act_scale"] = attrs["act_scale"]
    return LayerInfo(node.name, node.op_type, "ternary", f"TernaryMatMul/{fmt}", k, n, size,
                     bits_per_weight(size, k * n if k and n else None), details)
