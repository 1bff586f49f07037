"""How every target stores 8-bit integer weights, and the activation mode
MatMulNBits runs 2/4-bit weights in: the fastest standard choice onnxruntime
has for what the layer's settings allow (evidence in matmul_integer.py's
table and in the accuracy-level note below).

- int8, activations "int8", one scale per tensor or column:
  DynamicQuantizeLinear + MatMulInteger (1.8-6.5x faster than the float
  MatMul here).
- int8 otherwise: DequantizeLinear + MatMul (float activations; per-group
  scales need opset 21).
- MatMulNBits (2/4-bit) accuracy_level: 4 (int8 activations per block) when
  activations may be int8, else 0. Measured, 1 thread, Sapphire Rapids,
  ratio = fp32 MatMul time / this: 4-bit acc 0: 1.6x at 1x384x1536, 2.6x at
  1x4096x4096, 0.89-1.19x at 128 rows; acc 4: 2.5x, 6.2x, 0.83-1.33x.
  2-bit acc 0: 0.05-0.41x (a slow path), acc 4: 1.1-7.2x at one row.
"""

from __future__ import annotations

from onnxbit.errors import ConfigError
from onnxbit.targets import dequantize, matmul_integer, matmulnbits
from onnxbit.targets.base import PackedWeight, QuantizedWeight


def nbits_accuracy_level(settings) -> int:
    int8_activations = settings.act_quant or settings.activations == "int8"
    return matmulnbits.ACCURACY_INT8 if int8_activations else matmulnbits.ACCURACY_FP32


def uses_matmul_integer(settings) -> bool:
    return settings.activations in ("int8", "static") and matmul_integer.supports(settings)


def int8_opsets(settings) -> dict[str, int]:
    if uses_matmul_integer(settings):
        return {"": matmul_integer.OPSET}
    return {"": dequantize.required_opset(8, settings.granularity)}


def pack_int8(ctx, base: str, weight: QuantizedWeight, settings) -> PackedWeight:
    if uses_matmul_integer(settings):
        act_scale = None
        if settings.activations == "static":
            if settings.act_scale is None:
                raise ConfigError(f"weight '{base}': activations 'static' needs the layer's act_scale, which "
                                  "calibration measures: run `onnxbit calibrate MODEL --data ... --activations "
                                  "static -o calib.json`, then `onnxbit quantize --calibration calib.json`")
            act_scale = settings.act_scale
        return matmul_integer.pack_matmul_integer(ctx, base, codes=weight.codes, scales=weight.scales,
                                                  zero_points=weight.zero_points, granularity=weight.granularity,
                                                  act_scale=act_scale)
    return dequantize.pack_dequantize(ctx, base, precision=settings.precision, codes=weight.codes, bits=8,
                                      signed=weight.zero_points is None, scales=weight.scales,
                                      zero_points=weight.zero_points, granularity=weight.granularity,
                                      group_size=weight.group_size)


def emit_int8(ctx, site, packed: PackedWeight):
    if packed.storage.startswith("MatMulInteger/"):
        return matmul_integer.emit_matmul_integer(ctx, site, packed)
    return dequantize.emit_dequantize(ctx, site, packed)


def pack_integer(ctx, base: str, weight: QuantizedWeight, settings) -> PackedWeight:
    """int8 as above; int2/int4 as MatMulNBits (what targets onnxbit and ort share)."""
    if settings.precision == "int8":
        return pack_int8(ctx, base, weight, settings)
    return matmulnbits.pack_matmulnbits(
        ctx, base, precision=settings.precision, unsigned_codes=matmulnbits.unsigned_codes(weight, settings.bits),
        bits=settings.bits, scales=weight.scales, zero_points=weight.zero_points, granularity=weight.granularity,
        group_size=weight.group_size, accuracy_level=nbits_accuracy_level(settings))


def emit_integer(ctx, site, packed: PackedWeight):
    if packed.storage.startswith("MatMulNBits/"):
        return matmulnbits.emit_matmulnbits(ctx, site, packed)
    return emit_int8(ctx, site, packed)


SLOW_INT8_NOTE = (
    "int8 weights with float activations (DequantizeLinear + MatMul) can run slower than the float model in "
    "onnxruntime (up to 5x at batch 1 on this machine's measurements); with activations \"int8\" (the int8 "
    "preset) they become DynamicQuantizeLinear + MatMulInteger, 1.8-6.5x faster than float; check a model "
    "with `onnxbit bench model ORIGINAL CONVERTED`"
)
SLOW_NBITS2_NOTE = (
    "2-bit MatMulNBits with float activations (accuracy_level 0) is a slow path in onnxruntime: 0.05-0.4x the "
    "speed of the float model in this machine's measurements; target onnxbit (TernaryMatMul) or activations "
    "\"int8\" (accuracy_level 4) run it fast; check with `onnxbit bench model ORIGINAL CONVERTED`"
)
# Measured with `onnxbit bench model` (MiniLM-sized encoder, models/export_float_transformer.py,
# two runs, 1 and 2 threads) and `onnxbit bench llm` (0.7B BitNet-shaped LM, three runs), 2-vCPU
# Sapphire Rapids, onnxruntime 1.32: MLAS's float GEMM outruns MatMulNBits once a call has
# many rows, whatever accuracy_level.
SLOW_NBITS_PREFILL_NOTE = (
    "4-bit and 2-bit weights run as onnxruntime's MatMulNBits (on target onnx too: onnxruntime fuses "
    "DequantizeLinear + MatMul into it), which is faster than the float model on short inputs but slower on "
    "prefill-sized ones in this machine's measurements: at 128 tokens a MiniLM-sized encoder ran 1.24-1.35x "
    "slower with int4 (1.14-1.21x with 2-bit) and a 0.7B LM's prefill 1.09-1.25x slower, where 16 tokens ran "
    "1.12-1.41x and LM decode 3.2x faster; for prefill-heavy use the int8 preset ran 1.6-2.1x faster than "
    "float at 128 tokens, and target onnxbit runs ternary weights as TernaryMatMul (1.5-1.7x faster); check "
    "with `onnxbit bench model ORIGINAL CONVERTED`"
)
NBITS_STORAGES = ("MatMulNBits/4bit", "MatMulNBits/2bit", "DequantizeLinear/INT4", "DequantizeLinear/UINT4",
                  "DequantizeLinear/INT2", "DequantizeLinear/UINT2")


def slowdown_notes(packed: PackedWeight) -> list[str]:
    """Known slow paths a layer emitted this way takes, with what to do instead."""
    if packed.storage == "DequantizeLinear/INT8" or packed.storage == "DequantizeLinear/UINT8":
        return [SLOW_INT8_NOTE]
    if packed.storage == "MatMulNBits/2bit" and packed.attrs.get("accuracy_level") == matmulnbits.ACCURACY_FP32:
        return [SLOW_NBITS2_NOTE]
    if packed.storage in NBITS_STORAGES:
        return [SLOW_NBITS_PREFILL_NOTE]
    return []
