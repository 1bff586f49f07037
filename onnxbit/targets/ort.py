"""Target "ort": stock onnxruntime only. Every precision becomes
com.microsoft::MatMulNBits; ternary and binary weights as 2-bit codes w + 1
with zero point 1."""

from __future__ import annotations

import numpy as np

from onnxbit.targets import matmulnbits
from onnxbit.targets.base import PackedWeight, QuantizedWeight, Target
from onnxbit.targets.checks import check_act_quant, check_block_size, check_two_bit_storage

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
        if settings.granularity == "group":
            check_block_size(settings.group_size, where)

    def required_opsets(self, settings) -> dict[str, int]:
        return {} if settings.precision == "fp32" else {matmulnbits.DOMAIN: matmulnbits.OPSET}

    def pack(self, ctx, base: str, weight: QuantizedWeight, settings) -> PackedWeight:
        if weight.kind in ("ternary", "binary"):
            return matmulnbits.pack_matmulnbits(
                ctx, base, precision=settings.precision, unsigned_codes=(weight.codes + 1).astype(np.uint8), bits=2,
                scales=weight.scales, zero_points=np.ones_like(weight.scales, dtype=np.uint8),
                granularity=weight.granularity, group_size=weight.group_size,
                accuracy_level=matmulnbits.ACCURACY_INT8 if settings.act_quant else matmulnbits.ACCURACY_FP32)
        return matmulnbits.pack_matmulnbits(
            ctx, base, precision=settings.precision, unsigned_codes=matmulnbits.unsigned_codes(weight, settings.bits),
            bits=settings.bits, scales=weight.scales, zero_points=weight.zero_points,
            granularity=weight.granularity, group_size=weight.group_size, accuracy_level=matmulnbits.ACCURACY_FP32)

    def emit(self, ctx, site, packed: PackedWeight):
        return matmulnbits.emit_matmulnbits(ctx, site, packed)

    def notes(self, settings, packed: PackedWeight) -> list[str]:
        return [ACT_QUANT_NOTE] if settings.act_quant else []



