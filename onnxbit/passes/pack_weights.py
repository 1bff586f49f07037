"""Quantize, pack and emit every weight find_weights located.

Per layer: settings (the config's, or a QAT fold's proof, which wins) ->
quantize -> target.pack -> target.emit. The target (onnxbit.targets) decides
which op stores and computes the weight. A weight shared by several nodes is
quantized and packed once. Each layer gets a LayerRecord with bits per
weight (scales and zero points included), bytes before/after and weight error.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from onnxbit.config import LayerSettings, QuantConfig
from onnxbit.errors import LayerError
from onnxbit.graph.ternary import TernaryProof
from onnxbit.layers.base import WeightSite
from onnxbit.passes.base import Pass, PassContext, PassResult
from onnxbit.passes.rewrite import requantize_float_layer
from onnxbit.quant import quantize_binary, quantize_int, quantize_pack_absmean, quantize_ternary
from onnxbit.targets.base import PackedWeight, QuantizedWeight


# Why a float layer stays float under float_weights="keep" (the bitnet preset).
KEPT_FLOAT = "float weight, not proven ternary by a QAT fold"
# A converted layer whose weight SQNR is below this lost much of its weight
# (int8 gives about 40 dB, int4 about 20, ternary of a float weight 5-10):
# flagged in the report, an error with strict=True.
LOW_SQNR_DB = 15.0


def kept_float_note(count: int, preset: str | None, as_bf16: int = 0) -> str:
    """What a user converting a float model with a QAT-only config should run instead
    (as_bf16 of the layers kept float were stored as bfloat16, their values unchanged)."""
    by = f"the {preset} preset" if preset else "float_weights=\"keep\""
    stored = f" ({as_bf16} of them stored as bfloat16, losslessly)" if as_bf16 else ""
    return (f"{count} float layer(s) kept float{stored}: {by} converts only layers a QAT fold proves ternary, and "
            "this model's weights are float; for a float model use --preset int8 (near-lossless, 4x smaller "
            "weights) or --preset int4 (8x), or --preset ternary (16x, large accuracy loss without ternary "
            "training); or let `onnxbit calibrate MODEL --data SAMPLES --budget \"cosine>=0.99\" -o calib.json` "
            "pick each layer's precision on your data, then quantize with --calibration calib.json")


def stored_twice_note(forms: dict[str, tuple[str, str]]) -> str:
    """A weight several layers read, stored once per form they were given
    (forms: form -> (first layer, weight name))."""
    weight = next(iter(forms.values()))[1]
    layers = ", ".join(f"'{layer}' as {form}" for form, (layer, _) in forms.items())
    return (f"weight '{weight}' is read by layers stored differently ({layers}), so the file stores it "
            f"{len(forms)} times, once per form; give those layers one precision (--config) to store it once")


class PackWeightsPass(Pass):
    name = "pack_weights"
    requires = frozenset({"weight-sites"})
    ensures = frozenset({"weights-packed"})
    must_precede = frozenset({"weights-packed"})
    contract = (
        "For each WeightSite: picks the layer's settings (a QAT-proven ternary weight is packed from the codes its "
        "proof carries, never re-quantized); checks the target can express them (ConfigError otherwise); "
        "quantizes and packs once per distinct weight; replaces the node by the target's op; records each layer. "
        "Layers whose weight holds NaN/Inf are left unchanged with the reason; so are fp32 layers, unless the "
        "target stores their weight losslessly in fewer bytes (bfloat16 values as bfloat16: BFloat16MatMul on "
        "target onnxbit, bfloat16 + Cast on the others)."
    )

    def __init__(self, measure_error: bool = True):
        self.measure_error = measure_error

    def run(self, ctx: PassContext) -> PassResult:
        config: QuantConfig = ctx.config if ctx.config is not None else QuantConfig()
        target = ctx.target
        cache: dict[tuple, tuple[PackedWeight, str]] = {}
        forms: dict[str, dict[str, tuple[str, str]]] = {}  # weight_key -> {form: (first layer so stored, weight)}
        converted = 0
        kept_float = kept_as_bf16 = 0
        total = len(ctx.weight_sites)
        for index, site in enumerate(ctx.weight_sites):
            name = site.node.name
            proven = site.proof
            settings, origin = layer_settings(config, site)
            non_finite = 0 if proven is not None or settings.precision == "fp32" else _non_finite_count(site.weight)
            if non_finite:
                # Decided: a layer whose weight holds NaN or Inf has no
                # meaningful scale; it stays float (computing what the original
                # computes) and the report says why, instead of failing the model.
                ctx.record(node=name, op_type=site.node.op, action="skipped", pass_name=self.name, precision="fp32",
                           reason=f"weight holds {non_finite} NaN/Inf value(s); kept float",
                           bytes_before=site.source_bytes, bytes_after=site.source_bytes, bits_per_weight=32.0)
            elif settings.precision == "fp32":
                kept_float += origin == KEPT_FLOAT
                if proven is not None and proven.act_quant:
                    requantize_float_layer(ctx, site)
                    stored, shared_with = None, None
                else:
                    stored, shared_with = self._store_float(ctx, site, cache, config.float_storage)
                if stored is not None:
                    kept_as_bf16 += origin == KEPT_FLOAT
                    ctx.record(node=name, op_type=site.node.op, action="converted", pass_name=self.name,
                               reason=f"shares the stored weight of '{shared_with}'" if shared_with else
                               f"kept float ({origin}); {stored.notes[0]}", precision=stored.precision,
                               storage=stored.storage, bits_per_weight=stored.bits_per_weight,
                               bytes_before=0 if shared_with else site.source_bytes,
                               bytes_after=0 if shared_with else stored.bytes_after,
                               weight_error=dict(stored.weight_error))
                    converted += 1
                else:
                    ctx.record(node=name, op_type=site.node.op, action="skipped", reason=f"kept float ({origin})",
                               pass_name=self.name, precision="fp32", bytes_before=site.source_bytes,
                               bytes_after=site.source_bytes, bits_per_weight=32.0)
            else:
                target.check(settings, f"layer '{name}'")
                key = (site.weight_key, settings, proven is not None)
                shared_with = None
                if key in cache:
                    packed, shared_with = cache[key]
                else:
                    try:
                        packed = self._pack(ctx, site, settings)
                    except ValueError as exc:
                        raise LayerError(f"layer '{name}' ({site.node.op}): {exc}") from None
                    cache[key] = (packed, name)
                if site.conv is not None:
                    target.emit_conv(ctx, site, packed)
                    notes = target.conv_notes(settings, packed)
                else:
                    target.emit(ctx, site, packed)
                    notes = target.notes(settings, packed)
                for note in notes:
                    if note not in ctx.notes:
                        ctx.notes.append(note)
                reason = "QAT ternary weight, packed from the fold's exact codes" if proven is not None else ""
                if proven is not None and packed.weight_error.get("mse", 0.0) != 0.0:
                    # The fold promised codes * scales == the weight the MatMul reads.
                    ctx.notes.append(f"layer '{name}': the folded ternary codes differ from the weight the graph "
                                     f"used (mse {packed.weight_error['mse']:.3g}); check the QAT fold")
                if shared_with is not None:
                    reason = f"shares the packed weight of '{shared_with}'"
                sqnr = packed.weight_error.get("sqnr_db")
                # A calibrated config measured the model's output error instead.
                flag = (f"weight SQNR {sqnr:.1f} dB < {LOW_SQNR_DB:g} dB: this layer lost much of its weight"
                        if sqnr is not None and sqnr < LOW_SQNR_DB and config.calibrated is None else "")
                ctx.record(node=name, op_type=site.node.op, action="converted", reason=reason, pass_name=self.name,
                           precision=packed.precision, storage=packed.storage,
                           bits_per_weight=packed.bits_per_weight,
                           bytes_before=0 if shared_with else site.source_bytes,
                           bytes_after=0 if shared_with else packed.bytes_after,
                           weight_error=dict(packed.weight_error), flag=flag)
                converted += 1
            record = ctx.records[-1]
            form = f"{record.precision} {record.storage}" if record.action == "converted" else "float, as it was"
            forms.setdefault(site.weight_key, {}).setdefault(form, (name, site.weight_name))
            site.release()
            if ctx.progress is not None:
                ctx.progress(name, index + 1, total)
        for stored in forms.values():
            if len(stored) > 1:
                ctx.notes.append(stored_twice_note(stored))
        if kept_float:
            ctx.notes.append(kept_float_note(kept_float, config.preset, kept_as_bf16))
        if config.calibrated is not None:
            ctx.notes.append(f"precisions chosen by `onnxbit calibrate` for {config.calibrated} on sample data "
                             "(the model's output error was measured, so low weight SQNR is not flagged)")
        return PassResult(modified=converted > 0, summary=f"{converted}/{total} layer(s) converted")

    def _store_float(self, ctx: PassContext, site: WeightSite, cache: dict,
                     storage: str) -> tuple[PackedWeight | None, str | None]:
        """A float layer in a lossless smaller form (config float_storage: "bf16" the
        target's, "bf16-cast" bfloat16 + Cast on any target), emitted, and the layer whose
        stored weight it shares (a weight several nodes read is stored once); (None, None)
        leaves the node as it is ("fp32", or weights that are not bfloat16 numbers)."""
        if storage == "fp32":
            return None, None
        from onnxbit.targets import bf16_cast

        # "bf16-cast": bfloat16 + Cast, whatever the target's own form is
        pack, emit = ((ctx.target.pack_float, ctx.target.emit_float) if storage == "bf16" else
                      (bf16_cast.pack_bf16_cast, bf16_cast.emit_bf16_cast))
        key = (site.weight_key, "float")
        shared_with = None
        if key in cache:
            packed, shared_with = cache[key]
        else:
            packed = pack(ctx, _base_name(site), site)
            cache[key] = (packed, site.node.name)
        if packed is not None:
            emit(ctx, site, packed)
        return packed, shared_with

    def _pack(self, ctx: PassContext, site: WeightSite, settings: LayerSettings) -> PackedWeight:
        q = quantize_site(site, settings, ctx.target.fused_format(settings))
        if q.kind in ("ternary", "binary"):
            q = _positive_scales(q)
        if site.conv is not None:
            q.conv = site.conv
            packed = ctx.target.pack_conv(ctx, _base_name(site), q, settings)
        else:
            packed = ctx.target.pack(ctx, _base_name(site), q, settings)
        if self.measure_error:
            if q.codes is None and q.packed_rows is not None:
                from onnxbit import codecs

                q.codes = codecs.unpack_ternary(q.packed_rows, q.k, ctx.target.fused_format(settings)).T  # W^T view
            if q.codes is not None:
                packed.weight_error = _weight_error(site.weight, q, packed)
        return packed


def layer_settings(config: QuantConfig, site: WeightSite) -> tuple[LayerSettings, str]:
    """The settings of one layer and where they came from. A proven ternary
    weight is stored losslessly as ternary; only a rule naming the layer
    explicitly can keep it float."""
    settings, origin = config.settings_for(site.node.name, site.node.op, set(site.position), site.k * site.n)
    proven = site.proof
    if proven is None:
        if config.float_weights == "keep" and settings.precision != "fp32":
            return dataclasses.replace(settings, precision="fp32"), KEPT_FLOAT
        return settings, origin
    rule = config.matching_rule(site.node.name, site.node.op, set(site.position), site.k * site.n)
    if rule is not None and rule.name is not None and settings.precision == "fp32":
        return settings, origin
    return dataclasses.replace(settings, precision="ternary", granularity=proven.granularity, group_size=0,
                               act_quant=int(proven.act_quant)), "QAT fold"


def quantize_site(site: WeightSite, s: LayerSettings, fused_format: str | None) -> QuantizedWeight:
    """The layer's weight quantized as `s` asks (a proof's codes as they are).
    fused_format: the target packs absmean ternary straight from floats in
    that storage format (one C pass), so the codes are never materialized."""
    group = s.group_size if s.granularity == "group" else None
    k, n = site.k, site.n
    proven: TernaryProof | None = site.proof
    if proven is not None:
        if site.node.op == "Gemm" and float(site.node.attrs.get("alpha", 1.0)) != 1.0:
            raise ValueError("a QAT fold recorded ternary codes for a Gemm with alpha != 1; the codes would miss "
                             "the alpha factor")
        codes = np.asarray(proven.codes, dtype=np.int8)
        if site.conv is not None and codes.shape == site.conv.weight_shape:
            codes = site.conv.rows_of(codes).T  # the layer's [K, N] view
        if codes.shape != (k, n):
            raise ValueError(f"the QAT fold recorded codes of shape {codes.shape} for a weight of shape {(k, n)}")
        scales = np.asarray(proven.scales, dtype=np.float32).reshape(-1)
        return QuantizedWeight("ternary", k, n, codes, scales, None, s.granularity, 0, proven=True)
    if s.precision == "ternary":
        if fused_format is not None and s.method == "absmean" and s.granularity in ("tensor", "channel"):
            packed_rows, scales = quantize_pack_absmean(site.weight, fmt=fused_format, granularity=s.granularity)
            return QuantizedWeight("ternary", k, n, None, scales, None, s.granularity, 0, packed_rows=packed_rows)
        result = quantize_ternary(site.weight, method=s.method, granularity=s.granularity, group_size=group,
                                  scale=s.scale)
    elif s.precision == "binary":
        result = quantize_binary(site.weight, granularity=s.granularity, group_size=group)
    elif s.codes is not None:  # chosen by calibration with error compensation
        from onnxbit.calibration.codes import load_codes

        codes, scales, zeros = load_codes(s.codes, _base_name(site), site.weight, s.bits, s.symmetric,
                                          s.granularity, group)
        return QuantizedWeight("int", k, n, codes, scales, zeros, s.granularity, group or 0)
    else:
        result = quantize_int(site.weight, s.bits, symmetric=s.symmetric, granularity=s.granularity,
                              group_size=group)
    return QuantizedWeight(result.kind, k, n, result.codes, result.scales, result.zero_points, s.granularity,
                           s.group_size if s.granularity == "group" else 0)


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


def _positive_scales(q: QuantizedWeight) -> QuantizedWeight:
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
    codes = q.codes * _expand(sign, q.granularity, q.group_size, q.k, q.n).astype(np.int8)
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


def _weight_error(weight: np.ndarray, q: QuantizedWeight, packed: PackedWeight,
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
