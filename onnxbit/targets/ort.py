"""Target "ort": stock onnxruntime only. 2/4-bit weights become
com.microsoft::MatMulNBits (ternary and binary as 2-bit codes w + 1 with
zero point 1); 8-bit weights the fastest standard ops (integer_layers)."""

from __future__ import annotations

import numpy as np

from onnxbit.targets import dequantize, integer_layers, matmulnbits
from onnxbit.targets.base import PackedWeight, QuantizedWeight, Target
from onnxbit.targets.checks import check_act_quant, check_static_activations, check_block_size, check_two_bit_storage

ACT_QUANT_NOTE = (
    "target 'ort': BitNet per-token int8 activations are approximated by MatMulNBits accuracy_level=4, which "
    "quantizes activations to int8 per block of K with per-block scales; results differ slightly from the "
    "per-token scheme the model was trained with (use target 'onnxbit' for the exact arithmetic)"
)


class OrtTarget(Target):
    name = "ort"
    summary = "stock onnxruntime: MatMulNBits for every precision (ternary as 2-bit)"

    def check(self, settings, where: str) -> None:
        if settings.precision == "fp32":
            return
        check_two_bit_storage(settings, self.name, where)
        check_act_quant(settings, where)
        check_static_activations(settings, self.name, where)
        if settings.granularity == "group" and settings.precision != "int8":
            check_block_size(settings.group_size, where)

    def required_opsets(self, settings) -> dict[str, int]:
        if settings.precision == "fp32":
            return {}
        if settings.precision == "int8":
            return integer_layers.int8_opsets(settings)
        return {matmulnbits.DOMAIN: matmulnbits.OPSET}

    def pack(self, ctx, base: str, weight: QuantizedWeight, settings) -> PackedWeight:
        if weight.kind in ("ternary", "binary"):
            return matmulnbits.pack_matmulnbits(
                ctx, base, precision=settings.precision, unsigned_codes=(weight.codes + 1).astype(np.uint8), bits=2,
                scales=weight.scales, zero_points=np.ones_like(weight.scales, dtype=np.uint8),
                granularity=weight.granularity, group_size=weight.group_size,
                accuracy_level=integer_layers.nbits_accuracy_level(settings))
        return integer_layers.pack_integer(ctx, base, weight, settings)

    def emit(self, ctx, site, packed: PackedWeight):
        return integer_layers.emit_integer(ctx, site, packed)

    def notes(self, settings, packed: PackedWeight) -> list[str]:
        return (([ACT_QUANT_NOTE] if settings.act_quant else []) + dequantize.notes(packed)
                + integer_layers.slowdown_notes(packed))



