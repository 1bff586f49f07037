"""Target "onnx": standard ONNX ops only. DequantizeLinear on INT2 / INT4 /
INT8 initializers, then MatMul; ternary and binary weights as INT2, with
BitNet's per-token activation quantization written in standard ops."""

from __future__ import annotations

from onnxbit.targets import dequantize, integer_layers
from onnxbit.targets.base import PackedWeight, QuantizedWeight, Target
from onnxbit.targets.checks import check_act_quant, check_static_activations, check_two_bit_storage, is_ternary



class OnnxTarget(Target):
    name = "onnx"
    summary = "standard ONNX ops only: DequantizeLinear on INT2/INT4/INT8 initializers + MatMul"

    def check(self, settings, where: str) -> None:
        if settings.precision == "fp32":
            return
        check_two_bit_storage(settings, self.name, where)
        check_act_quant(settings, where)
        check_static_activations(settings, self.name, where)

    def required_opsets(self, settings) -> dict[str, int]:
        if settings.precision == "fp32":
            return {}
        if settings.precision == "int8":
            return integer_layers.int8_opsets(settings)
        bits = 2 if is_ternary(settings) else settings.bits
        return {"": dequantize.required_opset(bits, settings.granularity)}

    def pack(self, ctx, base: str, weight: QuantizedWeight, settings) -> PackedWeight:
        if weight.kind in ("ternary", "binary"):
            return dequantize.pack_dequantize(
                ctx, base, precision=settings.precision, codes=weight.codes, bits=2, signed=True, scales=weight.scales,
                zero_points=None, granularity=weight.granularity, group_size=weight.group_size,
                act_quant=settings.act_quant)
        if settings.precision == "int8":
            return integer_layers.pack_int8(ctx, base, weight, settings)
        return dequantize.pack_dequantize(
            ctx, base, precision=settings.precision, codes=weight.codes, bits=settings.bits,
            signed=weight.zero_points is None, scales=weight.scales, zero_points=weight.zero_points,
            granularity=weight.granularity, group_size=weight.group_size)

    def emit(self, ctx, site, packed: PackedWeight):
        if packed.storage.startswith("DequantizeLinear/"):
            return dequantize.emit_dequantize(ctx, site, packed)
        return integer_layers.emit_int8(ctx, site, packed)

    def notes(self, settings, packed: PackedWeight) -> list[str]:
        return dequantize.notes(packed) + integer_layers.slowdown_notes(packed)
