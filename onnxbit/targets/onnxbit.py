"""Target "onnxbit": com.onnxbit::TernaryMatMul for ternary and binary
weights (needs this library at run time), onnxruntime's MatMulNBits for
2/4/8-bit integer weights."""

from __future__ import annotations

import numpy as np

from onnxbit import formats, rans
from onnxbit.targets import matmulnbits, ternary_matmul
from onnxbit.targets.base import PackedWeight, QuantizedWeight, Target
from onnxbit.targets.checks import check_act_quant, check_block_size, is_ternary


class OnnxbitTarget(Target):
    name = "onnxbit"
    summary = "TernaryMatMul (needs the onnxbit library); MatMulNBits for int2/4/8"

    def check(self, settings, where: str) -> None:
        if settings.precision == "fp32":
            return
        check_act_quant(settings, where)
        if settings.granularity == "group" and settings.precision.startswith("int"):
            check_block_size(settings.group_size, where)

    def required_opsets(self, settings) -> dict[str, int]:
        if settings.precision == "fp32":
            return {}
        if is_ternary(settings):
            return {ternary_matmul.DOMAIN: ternary_matmul.OPSET}
        return {matmulnbits.DOMAIN: matmulnbits.OPSET}

    def fused_format(self, settings) -> str | None:
        """The row format codes are packed in; rans and auto start from base3 rows."""
        fmt = settings.format or formats.STORAGE_DEFAULT
        return fmt if fmt in formats.NAMES else rans.ROW_FORMAT

    def pack(self, ctx, base: str, weight: QuantizedWeight, settings) -> PackedWeight:
        k, n = weight.k, weight.n
        if weight.kind in ("ternary", "binary"):
            from onnxbit import codecs  # the native packer

            fmt = self.fused_format(settings)
            rows = weight.packed_rows if weight.packed_rows is not None else codecs.pack_ternary(
                np.ascontiguousarray(weight.codes.T), fmt)
            if settings.format in (formats.RANS, formats.AUTO):
                stream = rans.encode_base3(rows)
                if settings.format == formats.RANS or stream.nbytes < rows.nbytes:
                    rows, fmt = stream, formats.RANS
            return ternary_matmul.pack_ternary_matmul(
                ctx, base, precision=settings.precision, k=k, n=n, packed_rows=rows, scales=weight.scales,
                granularity=weight.granularity, group_size=weight.group_size, fmt=fmt,
                act_quant=settings.act_quant)
        return matmulnbits.pack_matmulnbits(
            ctx, base, precision=settings.precision, unsigned_codes=matmulnbits.unsigned_codes(weight, settings.bits),
            bits=settings.bits, scales=weight.scales, zero_points=weight.zero_points,
            granularity=weight.granularity, group_size=weight.group_size, accuracy_level=matmulnbits.ACCURACY_FP32)

    def emit(self, ctx, site, packed: PackedWeight):
        if packed.storage.startswith("TernaryMatMul/"):
            return ternary_matmul.emit_ternary_matmul(ctx, site, packed)
        return matmulnbits.emit_matmulnbits(ctx, site, packed)

