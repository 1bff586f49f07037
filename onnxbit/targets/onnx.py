"""Target "onnx": standard ONNX ops only. DequantizeLinear on INT2 / INT4 /
INT8 initializers, then MatMul; ternary and binary weights as INT2, with
BitNet's per-token activation quantization written in standard ops."""

from __future__ import annotations

from onnxbit.targets import dequantize
from onnxbit.targets.base import PackedWeight, QuantizedWeight, Target
from onnxbit.targets.checks import check_act_quant, check_two_bit_storage, is_ternary

FUSION_NOTE = (
    "target 'onnx': onnxruntime fuses DequantizeLinear + MatMul on 2/4-bit weights into MatMulNBits with int8 "
    "activations by default; set the session config entry session.qdq_matmulnbits_accuracy_level=0 for float32 "
    "activations"
)


class OnnxTarget(Target):
    name = "onnx"
    summary = "standard ONNX ops only: DequantizeLinear on INT2/INT4/INT8 initializers + MatMul"

    def check(self, settings, where: str) -> None:
        if settings.precision == "fp32":
            return
        check_two_bit_storage(settings, self.name, where)
        check_act_quant(settings, where)

    def required_opsets(self, settings) -> dict[str, int]:
        if settings.precision == "fp32":
            return {}
        bits = 2 if is_ternary(settings) else settings.bits
        return {"": dequantize.required_opset(bits, settings.granularity)}

    def pack(self, ctx, base: str, weight: QuantizedWeight, settings) -> PackedWeight:
        if weight.kind in ("ternary", "binary"):
            return dequantize.pack_dequantize(
                ctx, base, precision=settings.precision, codes=weight.codes, bits=2, signed=True, scales=weight.scales,
                zero_points=None, granularity=weight.granularity, group_size=weight.group_size,
                act_quant=settings.act_quant)
        return dequantize.pack_dequantize(
            ctx, base, precision=settings.precision, codes=weight.codes, bits=settings.bits,
            signed=weight.zero_points is None, scales=weight.scales, zero_points=weight.zero_points,
            granularity=weight.granularity, group_size=weight.group_size)

    def emit(self, ctx, site, packed: PackedWeight):
        return dequantize.emit_dequantize(ctx, site, packed)

    def notes(self, settings, packed: PackedWeight) -> list[str]:
        return [FUSION_NOTE] if packed.precision != "int8" else []
