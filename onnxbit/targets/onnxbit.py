"""Target "onnxbit": com.onnxbit::TernaryMatMul for ternary and binary
weights (needs this library at run time), onnxruntime's MatMulNBits for
2/4-bit integer weights, for 8-bit ones the fastest standard ops
(integer_layers), and com.onnxbit::BFloat16MatMul for float layers whose
weights are bfloat16 numbers (bf16_matmul)."""

from __future__ import annotations

import numpy as np

from onnxbit import formats
from onnxbit.targets import bf16_matmul, dequantize, integer_layers, matmulnbits, ternary_conv, ternary_matmul
from onnxbit.targets.base import PackedWeight, QuantizedWeight, Target
from onnxbit.targets.checks import check_act_quant, check_static_activations, check_block_size, is_ternary


class OnnxbitTarget(Target):
    name = "onnxbit"
    summary = "TernaryMatMul (needs the onnxbit library); MatMulNBits for int2/4/8"

    def check(self, settings, where: str) -> None:
        if settings.precision == "fp32":
            return
        check_act_quant(settings, where)
        check_static_activations(settings, self.name, where)
        if settings.granularity == "group" and settings.precision in ("int2", "int4"):
            check_block_size(settings.group_size, where)

    def required_opsets(self, settings) -> dict[str, int]:
        if settings.precision == "fp32":
            return {}
        if is_ternary(settings):
            return {ternary_matmul.DOMAIN: ternary_matmul.OPSET}
        if settings.precision == "int8":
            return integer_layers.int8_opsets(settings)
        return {matmulnbits.DOMAIN: matmulnbits.OPSET}

    def fused_format(self, settings) -> str | None:
        """The row format codes are packed in; stream formats and auto start from base3 rows."""
        fmt = settings.format or formats.STORAGE_DEFAULT
        return fmt if fmt in formats.NAMES else formats.STREAM_ROW_FORMAT

    def _stored_rows(self, weight: QuantizedWeight, settings) -> tuple[np.ndarray, str]:
        """W^T's rows as stored, and the op's format attribute: a row format, or
        a stream of base3 rows (a stream format; for auto, the smallest).
        TernaryMatMul and TernaryConv store the same way."""
        from onnxbit import codecs, streams  # the native packer and stream codecs

        fmt = self.fused_format(settings)
        rows = weight.packed_rows if weight.packed_rows is not None else codecs.pack_ternary(
            np.ascontiguousarray(weight.codes.T), fmt)
        if settings.format in formats.STREAMS or settings.format == formats.AUTO:
            return streams.stored(settings.format, rows, weight.k)
        return rows, fmt

    def pack(self, ctx, base: str, weight: QuantizedWeight, settings) -> PackedWeight:
        k, n = weight.k, weight.n
        if weight.kind in ("ternary", "binary"):
            rows, fmt = self._stored_rows(weight, settings)
            return ternary_matmul.pack_ternary_matmul(
                ctx, base, precision=settings.precision, k=k, n=n, packed_rows=rows, scales=weight.scales,
                granularity=weight.granularity, group_size=weight.group_size, fmt=fmt,
                **ternary_matmul.activation_attributes(settings, base))
        return integer_layers.pack_integer(ctx, base, weight, settings)

    def pack_float(self, ctx, base: str, site) -> PackedWeight | None:
        """Large bfloat16 weights run by BFloat16MatMul: half the bytes read, not only stored.
        Smaller ones (bf16_matmul.MIN_WEIGHT_BYTES) and Convs (no bfloat16 conv op) take the
        base class's bfloat16 + Cast."""
        if not bf16_matmul.runs_as_op(site):
            return super().pack_float(ctx, base, site)
        bits = bf16_matmul.weight_bits(site)
        if bits is None:
            return None
        ctx.require_opset(bf16_matmul.DOMAIN, bf16_matmul.OPSET)
        return bf16_matmul.pack_bf16_matmul(ctx, base, bits)

    def emit_float(self, ctx, site, packed: PackedWeight):
        if packed.storage == bf16_matmul.STORAGE:
            return bf16_matmul.emit_bf16_matmul(ctx, site, packed)
        return super().emit_float(ctx, site, packed)

    def emit(self, ctx, site, packed: PackedWeight):
        if packed.storage.startswith("TernaryMatMul/"):
            return ternary_matmul.emit_ternary_matmul(ctx, site, packed)
        return integer_layers.emit_integer(ctx, site, packed)

    def notes(self, settings, packed: PackedWeight) -> list[str]:
        return dequantize.notes(packed) + integer_layers.slowdown_notes(packed)

    def required_conv_opsets(self, settings, op_type: str, spatial_rank: int) -> dict[str, int]:
        if is_ternary(settings) and op_type == "Conv" and spatial_rank in (1, 2):
            opsets = {ternary_matmul.DOMAIN: ternary_matmul.OPSET}
            # Layers may take INT2 + Cast + Conv: dense ones with float activations, and (act_quant=1, not
            # QAT-folded) few-channel and large depthwise ones (ternary_conv.activation_quant).
            if settings.activations != "static":
                opsets.update(super().required_conv_opsets(settings, op_type, spatial_rank))
            return opsets
        return super().required_conv_opsets(settings, op_type, spatial_rank)

    def pack_conv(self, ctx, base: str, weight: QuantizedWeight, settings) -> PackedWeight:
        # Integer precisions: integer codes made float in the graph + Conv (the
        # base class), which onnxruntime folds once and runs at fp32 Conv speed;
        # ConvInteger / QLinearConv with dynamic activation quantization measured
        # slower (targets/dequantize_conv.py).
        if weight.kind not in ("ternary", "binary") or not ternary_conv.supports(weight.conv):
            return super().pack_conv(ctx, base, weight, settings)
        activation = ternary_matmul.activation_attributes(settings, base)
        if activation["act_quant"] != ternary_matmul.ACT_INT8_STATIC:
            activation["act_quant"] = ternary_conv.activation_quant(weight.conv, activation["act_quant"],
                                                                    weight.proven)
        if ternary_conv.float_as_standard(weight.conv, activation["act_quant"], settings.format):
            return super().pack_conv(ctx, base, weight, settings)
        rows, fmt = self._stored_rows(weight, settings)
        return ternary_conv.pack_ternary_conv(
            ctx, base, precision=settings.precision, conv=weight.conv, packed_rows=rows, scales=weight.scales,
            granularity=weight.granularity, group_size=weight.group_size, fmt=fmt, **activation)

    def conv_notes(self, settings, packed: PackedWeight) -> list[str]:
        from onnxbit.targets.dequantize_conv import CAST_STORAGE

        if packed.precision in ("ternary", "binary") and packed.storage.startswith(CAST_STORAGE + "/"):
            # int8 activations asked for and not given: activation_quant chose float ones (the base class's
            # note, that only TernaryConv has them, would mislead here)
            chosen = [ternary_conv.FLOAT_ACTIVATIONS_CHOSEN_NOTE] if settings.act_quant else []
            return [ternary_conv.DENSE_AS_STANDARD_NOTE, *chosen]
        if packed.storage.startswith(ternary_conv.OP + "/"):
            if settings.act_quant and not packed.attrs["act_quant"]:
                return [ternary_conv.FLOAT_ACTIVATIONS_CHOSEN_NOTE]
            if ternary_conv.dense_with_act_quant(packed, 0):
                return [ternary_conv.DENSE_FLOAT_ACTIVATIONS_NOTE]
            if ternary_conv.dense_with_act_quant(packed, 3):
                return [ternary_conv.PER_PIXEL_DENSE_NOTE]
            return []
        return super().conv_notes(settings, packed)

    def emit_conv(self, ctx, site, packed: PackedWeight):
        if packed.storage.startswith(ternary_conv.OP + "/"):
            return ternary_conv.emit_ternary_conv(ctx, site, packed)
        return super().emit_conv(ctx, site, packed)
