"""Quantize, pack and emit every weight find_weights located.

Per layer: the config (or a QAT folding pass's proof, which wins) picks the
precision; the target picks the op: "onnxbit" -> TernaryMatMul for ternary /
binary and MatMulNBits for int2/4/8; "ort" -> MatMulNBits for everything;
"onnx" -> DequantizeLinear + MatMul. A weight shared by several nodes is
quantized and packed once. Each layer gets a LayerRecord with bits per weight
(scales and zero points included), bytes before/after and weight error.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from onnxbit.config import LayerSettings, QuantConfig, check_settings_for_target
from onnxbit.errors import LayerError
from onnxbit.passes.base import Pass, PassContext, PassResult, TernaryWeight, WeightSite
from onnxbit.passes.emit_dequantize import emit_dequantize, pack_dequantize
from onnxbit.passes.emit_matmulnbits import ACCURACY_FP32, ACCURACY_INT8, emit_matmulnbits, pack_matmulnbits
from onnxbit.passes.emit_ternary_matmul import emit_ternary_matmul, pack_ternary_matmul
from onnxbit.passes.packed_weight import PackedWeight
from onnxbit.passes.rewrite import requantize_float_layer
from onnxbit.quant import quantize_binary, quantize_int, quantize_pack_absmean, quantize_ternary

ORT_ACT_QUANT_NOTE = (
    "target 'ort': BitNet per-token int8 activations are approximated by MatMulNBits accuracy_level=4, which "
    "quantizes activations to int8 per block of K with per-block scales; results differ slightly from the "
    "per-token scheme the model was trained with (use target 'onnxbit' for the exact arithmetic)"
)

ONNX_FUSION_NOTE = (
    "target 'onnx': onnxruntime fuses DequantizeLinear + MatMul on 2/4-bit weights into MatMulNBits with int8 "
    "activations by default; set the session config entry session.qdq_matmulnbits_accuracy_level=0 for float32 "
    "activations"
)


@dataclasses.dataclass
class _Quantized:
    """Codes and scales of one weight before packing (codes None on the fused fast path)."""

    kind: str  # "ternary" | "binary" | "int"
    codes: np.ndarray | None
    scales: np.ndarray
    zero_points: np.ndarray | None
    granularity: str
    group_size: int
    packed_rows: np.ndarray | None = None  # fast path: W^T already packed in settings.format


class PackWeightsPass(Pass):
    name = "pack_weights"
    contract = (
        "For each WeightSite: picks the layer's settings (a QAT-proven ternary weight is packed from its recorded "
        "codes, never re-quantized); checks the target can express them (ConfigError otherwise); quantizes and "
        "packs once per distinct weight; replaces the MatMul/Gemm by TernaryMatMul, MatMulNBits or "
        "DequantizeLinear+MatMul; records each layer. Layers whose precision is fp32 are left unchanged."
    )

    def __init__(self, measure_error: bool = True):
        self.measure_error = measure_error

    def run(self, ctx: PassContext) -> PassResult:
        config: QuantConfig = ctx.config if ctx.config is not None else QuantConfig()
        cache: dict[tuple, tuple[PackedWeight, str]] = {}
        converted = 0
        total = len(ctx.weight_sites)
        ort_note_added = False
        low_bit_dequantize = False
        for index, site in enumerate(ctx.weight_sites):
            name = site.node.name
            proven = ctx.ternary_weights.get(name)
            settings, origin = self._settings(config, site, proven)
            non_finite = 0 if proven is not None or settings.precision == "fp32" else _non_finite_count(site.weight)
            if non_finite:
                # Decided: a layer whose weight holds NaN or Inf has no
                # meaningful scale; it stays float (computing what the original
                # computes) and the report says why, instead of failing the model.
                ctx.record(node=name, op_type=site.node.op, action="skipped", pass_name=self.name, precision="fp32",
                           reason=f"weight holds {non_finite} NaN/Inf value(s); kept float",
                           bytes_before=site.source_bytes, bytes_after=site.source_bytes, bits_per_weight=32.0)
            elif settings.precision == "fp32":
                if proven is not None and proven.act_quant:
                    requantize_float_layer(ctx, site)
                ctx.record(node=name, op_type=site.node.op, action="skipped", reason=f"kept float ({origin})",
                           pass_name=self.name, precision="fp32", bytes_before=site.source_bytes,
                           bytes_after=site.source_bytes, bits_per_weight=32.0)
            else:
                check_settings_for_target(settings, ctx.target, f"layer '{name}'")
                key = (site.weight_key, settings, ctx.target, proven is not None)
                shared_with = None
                if key in cache:
                    packed, shared_with = cache[key]
                else:
                    try:
                        packed = self._pack(ctx, site, settings, proven)
                    except ValueError as exc:
                        raise LayerError(f"layer '{name}' ({site.node.op}): {exc}") from None
                    cache[key] = (packed, name)
                low_bit_dequantize |= ctx.target == "onnx" and packed.precision != "int8"
                self._emit(ctx, site, packed)
                if settings.act_quant and ctx.target == "ort" and not ort_note_added:
                    ctx.notes.append(ORT_ACT_QUANT_NOTE)
                    ort_note_added = True
                reason = "QAT ternary weight, packed from the fold's exact codes" if proven is not None else ""
                if proven is not None and packed.weight_error.get("mse", 0.0) != 0.0:
                    # The fold promised codes * scales == the weight the MatMul reads.
                    ctx.notes.append(f"layer '{name}': the folded ternary codes differ from the weight the graph "
                                     f"used (mse {packed.weight_error['mse']:.3g}); check the QAT fold")
                if shared_with is not None:
                    reason = f"shares the packed weight of '{shared_with}'"
                ctx.record(node=name, op_type=site.node.op, action="converted", reason=reason, pass_name=self.name,
                           precision=packed.precision, storage=packed.storage,
                           bits_per_weight=packed.bits_per_weight,
                           bytes_before=0 if shared_with else site.source_bytes,
                           bytes_after=0 if shared_with else packed.bytes_after,
                           weight_error=dict(packed.weight_error))
                converted += 1
            site.release()
            if ctx.progress is not None:
                ctx.progress(name, index + 1, total)
        if low_bit_dequantize:
            ctx.notes.append(ONNX_FUSION_NOTE)
        return PassResult(modified=converted > 0, summary=f"{converted}/{total} layer(s) converted")

    # -- settings -----------------------------------------------------------

    @staticmethod
    def _settings(config: QuantConfig, site: WeightSite, proven: TernaryWeight | None) -> tuple[LayerSettings, str]:
        settings, origin = config.settings_for(site.node.name, site.node.op, set(site.position), site.k * site.n)
        if proven is None:
            return settings, origin
        # A proven ternary weight is stored losslessly as ternary; only a rule
        # naming the layer explicitly can keep it float.
        rule = config.matching_rule(site.node.name, site.node.op, set(site.position), site.k * site.n)
        if rule is not None and rule.name is not None and settings.precision == "fp32":
            return settings, origin
        granularity = "tensor" if np.asarray(proven.scales).size == 1 else "channel"
        return dataclasses.replace(settings, precision="ternary", granularity=granularity, group_size=0,
                                   act_quant=int(proven.act_quant)), "QAT fold"

    # -- quantize -----------------------------------------------------------

    def _quantize(self, ctx: PassContext, site: WeightSite, s: LayerSettings,
                  proven: TernaryWeight | None) -> _Quantized:
        group = s.group_size if s.granularity == "group" else None
        if proven is not None:
            if site.node.op == "Gemm" and float(site.node.attrs.get("alpha", 1.0)) != 1.0:
                raise ValueError(f"layer '{site.node.name}': a QAT fold recorded ternary codes for a Gemm "
                                 "with alpha != 1; the codes would miss the alpha factor")
            codes = np.asarray(proven.codes, dtype=np.int8)
            if codes.shape != (site.k, site.n):
                raise ValueError(f"layer '{site.node.name}': the QAT fold recorded codes of shape {codes.shape} "
                                 f"for a weight of shape {(site.k, site.n)}")
            scales = np.asarray(proven.scales, dtype=np.float32).reshape(-1)
            return _Quantized("ternary", codes, scales, None, s.granularity, 0)
        if s.precision == "ternary":
            fast = (s.method == "absmean" and s.granularity in ("tensor", "channel") and ctx.target == "onnxbit")
            if fast:
                packed_rows, scales = quantize_pack_absmean(site.weight, fmt=s.format, granularity=s.granularity)
                return _Quantized("ternary", None, scales, None, s.granularity, 0, packed_rows=packed_rows)
            result = quantize_ternary(site.weight, method=s.method, granularity=s.granularity, group_size=group)
        elif s.precision == "binary":
            result = quantize_binary(site.weight, granularity=s.granularity, group_size=group)
        else:
            result = quantize_int(site.weight, s.bits, symmetric=s.symmetric, granularity=s.granularity,
                                  group_size=group)
        return _Quantized(result.kind, result.codes, result.scales, result.zero_points, s.granularity,
                          s.group_size if s.granularity == "group" else 0)

    # -- pack ---------------------------------------------------------------

    def _pack(self, ctx: PassContext, site: WeightSite, s: LayerSettings, proven: TernaryWeight | None) -> PackedWeight:
        q = self._quantize(ctx, site, s, proven)
        base = _base_name(site)
        k, n = site.k, site.n
        if q.kind in ("ternary", "binary"):
            q = _positive_scales(q, k, n)
        if q.kind in ("ternary", "binary") and ctx.target == "onnxbit":
            from onnxbit import codecs  # the native packer (only this target needs it)

            rows = q.packed_rows if q.packed_rows is not None else codecs.pack_ternary(
                np.ascontiguousarray(q.codes.T), s.format)
            packed = pack_ternary_matmul(ctx, base, precision=s.precision, k=k, n=n, packed_rows=rows,
                                         scales=q.scales, granularity=q.granularity, group_size=q.group_size,
                                         fmt=s.format, act_quant=s.act_quant)
            if q.codes is None and self.measure_error:
                q.codes = codecs.unpack_ternary(rows, k, s.format).T  # a view: error stats read it as W^T
        elif q.kind in ("ternary", "binary") and ctx.target == "ort":
            packed = pack_matmulnbits(ctx, base, precision=s.precision, unsigned_codes=(q.codes + 1).astype(np.uint8),
                                      bits=2, scales=q.scales, zero_points=np.ones_like(q.scales, dtype=np.uint8),
                                      granularity=q.granularity, group_size=q.group_size,
                                      accuracy_level=ACCURACY_INT8 if s.act_quant else ACCURACY_FP32)
        elif q.kind in ("ternary", "binary"):
            packed = pack_dequantize(ctx, base, precision=s.precision, codes=q.codes, bits=2, signed=True,
                                     scales=q.scales, zero_points=None, granularity=q.granularity,
                                     group_size=q.group_size, act_quant=s.act_quant)
        elif ctx.target in ("onnxbit", "ort"):
            bits = s.bits
            unsigned = q.codes if q.zero_points is not None else (q.codes.astype(np.int16) + (1 << (bits - 1)))
            packed = pack_matmulnbits(ctx, base, precision=s.precision, unsigned_codes=unsigned.astype(np.uint8),
                                      bits=bits, scales=q.scales, zero_points=q.zero_points,
                                      granularity=q.granularity, group_size=q.group_size,
                                      accuracy_level=ACCURACY_FP32)
        else:
            packed = pack_dequantize(ctx, base, precision=s.precision, codes=q.codes, bits=s.bits,
                                     signed=q.zero_points is None, scales=q.scales, zero_points=q.zero_points,
                                     granularity=q.granularity, group_size=q.group_size)
        if self.measure_error and q.codes is not None:
            packed.weight_error = _weight_error(site.weight, q, packed)
        return packed

    @staticmethod
    def _emit(ctx: PassContext, site: WeightSite, packed: PackedWeight) -> None:
        storage = packed.storage.split("/")[0]
        if storage == "TernaryMatMul":
            emit_ternary_matmul(ctx, site, packed)
        elif storage == "MatMulNBits":
            emit_matmulnbits(ctx, site, packed)
        else:
            emit_dequantize(ctx, site, packed)


def _non_finite_count(weight: np.ndarray, band_elements: int = 1 << 22) -> int:
    """NaN/Inf values in the weight, counted a band at a time (no full-size temporary)."""
    flat = weight.ravel(order="K")  # a view for either memory order
    total = 0
    for start in range(0, flat.size, band_elements):
        band = flat[start:start + band_elements]
        total += int(band.size - np.count_nonzero(np.isfinite(band)))
    return total


def _base_name(site: WeightSite) -> str:
    return site.weight_name or f"{site.node.name}_weight"


def _expand(values: np.ndarray, granularity: str, group_size: int, k: int, n: int) -> np.ndarray:
    if granularity == "tensor":
        return values.reshape(1, 1)
    if granularity == "channel":
        return values.reshape(1, n)
    return np.repeat(values.reshape(-1, n), group_size, axis=0)[:k]


def _positive_scales(q: _Quantized, k: int, n: int) -> _Quantized:
    """Blocks with scale <= 0 (an all-zero block) become codes 0 with scale 1,
    and negative scales flip their codes: the ops require scales > 0."""
    scales = np.asarray(q.scales, dtype=np.float32)
    if (scales > 0).all():
        return q
    if not np.isfinite(scales).all():
        raise ValueError("a ternary/binary scale is not finite")
    if q.codes is None:  # fused path: absmean scales are floored at 1e-5, never <= 0
        raise ValueError("non-positive scale on the fused ternary path")
    sign = np.where(scales < 0, -1, np.where(scales > 0, 1, 0)).astype(np.int8)
    codes = q.codes * _expand(sign, q.granularity, q.group_size, k, n).astype(np.int8)
    fixed = np.where(scales == 0, np.float32(1), np.abs(scales)).astype(np.float32)
    return dataclasses.replace(q, codes=codes.astype(np.int8), scales=fixed)


def _tiled_contiguous(matrix: np.ndarray, tile: int = 64) -> np.ndarray:
    """A C-contiguous copy of a 2-D array (e.g. the transposed view of the
    unpacked codes), copied in square tiles: numpy's one-shot transposing
    copy walks a new page per element and is several times slower."""
    if matrix.flags.c_contiguous:
        return matrix
    out = np.empty(matrix.shape, dtype=matrix.dtype)
    rows, cols = matrix.shape
    for r in range(0, rows, tile):
        for c in range(0, cols, tile):
            out[r:r + tile, c:c + tile] = matrix[r:r + tile, c:c + tile]
    return out


def _weight_error(weight: np.ndarray, q: _Quantized, packed: PackedWeight,
                  band_elements: int = 1 << 16) -> dict[str, float]:
    """MSE, SQNR and cosine of the dequantized weight, in float64, a band of
    rows at a time (einsum keeps BLAS threads out of it). Bands of ~64K
    elements keep the float64 temporaries about L2-sized. Works in whichever
    orientation the weight is contiguous in; codes stored the other way round
    are transposed once (int8) rather than read strided in every band."""
    codes = q.codes
    scale = _expand(np.asarray(q.scales, np.float32), q.granularity, q.group_size, packed.k, packed.n)
    zero = None
    if q.zero_points is not None:
        zero = _expand(np.asarray(q.zero_points, np.float32), q.granularity, q.group_size, packed.k, packed.n)
    if not weight.flags.c_contiguous and weight.T.flags.c_contiguous:
        weight, codes, scale = weight.T, codes.T, scale.T
        zero = None if zero is None else zero.T
    codes = _tiled_contiguous(codes)
    band = max(1, band_elements // max(1, weight.shape[1]))

    def rows_of(values: np.ndarray, rows: slice) -> np.ndarray:
        return values if values.shape[0] == 1 else values[rows]

    err2 = sig2 = deq2 = cross = 0.0
    for start in range(0, weight.shape[0], band):
        rows = slice(start, start + band)
        levels = codes[rows].astype(np.float32)
        if zero is not None:
            levels -= rows_of(zero, rows)
        deq = (levels * rows_of(scale, rows)).astype(np.float64).ravel()
        w = weight[rows].astype(np.float64).ravel()
        err = w - deq
        err2 += float(np.einsum("i,i->", err, err))
        sig2 += float(np.einsum("i,i->", w, w))
        deq2 += float(np.einsum("i,i->", deq, deq))
        cross += float(np.einsum("i,i->", w, deq))
    count = packed.k * packed.n
    if err2 == 0.0:
        sqnr = float("inf")
    elif sig2 == 0.0:
        sqnr = float("-inf")
    else:
        sqnr = 10.0 * float(np.log10(sig2 / err2))
    norm = np.sqrt(sig2) * np.sqrt(deq2)
    cosine = float(cross / norm) if norm > 0 else (1.0 if sig2 == 0.0 and deq2 == 0.0 else 0.0)
    return {"mse": err2 / count, "sqnr_db": sqnr, "cosine": cosine}
