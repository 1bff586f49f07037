"""Choose each layer's precision under an accuracy budget, on sample data.

1. Every candidate layer's weight becomes an input of one onnxruntime
   session (a copy of the model), so any mix of float and quantized weights
   (quantized, then dequantized with onnxbit.quant, exactly the values the
   converted model will use) runs without rebuilding anything.
2. Sensitivity: the model's output error, on the calibration samples, when
   that layer alone is quantized at each candidate precision.
3. Search: starting from all float, lower one layer at a time in order of
   error per byte saved, keeping a change only when the whole model still
   meets the budget on the calibration samples.
4. Check on the held-out samples; while the budget is missed there, raise
   the most sensitive lowered layer one step. Every change is reported.

The result is a config (name rules per layer) that `onnxbit quantize
--calibration` applies. Activations stay float in it (the simulation does not
quantize them), so the converted model computes what was measured.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from onnxbit.calibration.budget import Budget, parse_budget
from onnxbit.calibration.data import CalibrationData, load_calibration_data
from onnxbit.calibration.probe import Probe
from onnxbit.calibration.result import (COMPENSATED, DEFAULT_PRECISIONS, LADDER, SETTINGS, CalibratedLayer,
                                        CalibrationResult, load_calibration, weight_bytes)
from onnxbit.errors import ConfigError

__all__ = ["calibrate", "CalibrationResult", "CalibratedLayer", "load_calibration", "weight_bytes", "LADDER",
           "DEFAULT_PRECISIONS", "SETTINGS", "COMPENSATED"]

METHODS = ("gptq", "rtn")  # error compensation, or round to nearest
# Ternary threshold rules tried per layer; the one with the smallest output
# error on the calibration samples is kept (not the smallest weight error).
TERNARY_METHODS = ("absmean", "mse", "adaptive")
# With X^T X known a candidate costs no model run, so more are tried: every
# threshold rule x scale rule x granularity (one scale per tensor or per
# output channel: the same bytes to within 4 per column).
TERNARY_CANDIDATES = tuple((method, scale, granularity)
                           for method in ("absmean", "median-factor", "adaptive", "mse")
                           for scale in ("absmean", "lsq") for granularity in ("tensor", "channel"))
MAX_SEARCH_SAMPLES = 128  # calibration samples the search runs on (the held-out check uses all)
SENSITIVITY_SAMPLES = 16  # samples ranking the layers (each layer x precision is one run over them)
SCREEN_SAMPLES = 8  # the hardest samples a cosine budget is checked on before all of them


def calibrate(model: onnx.ModelProto | str | os.PathLike, data: CalibrationData | Any, budget: str | Budget,
              precisions: Sequence[str] = DEFAULT_PRECISIONS, samples: int | None = None,
              progress: Callable[[str, int, int], None] | None = None, method: str = "gptq",
              preset: str | None = None, speed: Callable[[dict, int, int, int], float] | None = None,
              int8_activations: bool = False) -> CalibrationResult:
    """Choose per-layer precisions (from `precisions`, plus float) meeting
    `budget` on held-out samples with the smallest weights the greedy search finds.
    method "gptq": int codes chosen with error compensation on the calibration
    samples' activations (stored in the codes file); "rtn": rounded to nearest.
    preset: a preset that keeps float weights float (bitnet) leaves nothing
    to search: the result applies that preset, whose QAT folds are exact.
    speed: (settings, k, n, rows) -> times faster than float (calibration.speed.LayerSpeed);
    given, a precision measured slower than float for a layer's shape is not
    considered for that layer (the `performance` goal).
    int8_activations: converted layers quantize their activations to int8 (the
    fast integer ops).
    The budget is finally checked on the converted model run in onnxruntime,
    on the held-out samples, raising layers until it holds."""
    from onnxbit.convert import load_model

    budget = parse_budget(budget)
    unknown = [p for p in precisions if p not in LADDER[:-1]]
    if unknown:
        raise ConfigError(f"unknown calibration precision(s) {unknown}; choose from {', '.join(LADDER[:-1])}")
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    ladder = [p for p in LADDER if p in precisions or p == "fp32"]
    proto, path = load_model(model)
    if path is not None and any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
    inputs = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if not isinstance(data, CalibrationData):
        data = load_calibration_data(data, inputs, samples)
    # The conversion folds BatchNormalization into Convs before it quantizes: measure (and choose codes
    # for) those folded weights, under the names the conversion gives them.
    from onnxbit.passes.fold_batch_norm import fold_batch_norms

    if any(node.op_type == "BatchNormalization" for node in proto.graph.node):
        proto = fold_batch_norms(proto)
    layers, skipped, transposed, weights = _candidate_layers(proto)
    if preset is not None:
        from onnxbit.config import PRESETS

        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if PRESETS[preset].get("float_weights") == "keep":
            why = (f"the {preset} preset keeps float weights float; QAT-proven ternary layers are folded exactly "
                   "by the conversion")
            skipped = {**skipped, **{l.node: why for l in layers}}
            perfect = budget.measure([[np.ones(1)]], [[np.ones(1)]])
            return CalibrationResult(budget, [], skipped, perfect, perfect, [], (len(data.calibration),
                                     len(data.holdout)), [(1.0, perfect)], preset=preset)
    if not layers:
        raise ConfigError("no layer to calibrate: " + ("; ".join(f"{k}: {v}" for k, v in skipped.items())
                                                       or "the model has no MatMul/Gemm/Conv with a constant weight")
                          + " (a QAT export's fake-quant layers are folded exactly: calibrate with --preset bitnet "
                            "or convert with `onnxbit quantize`)")
    for layer in layers:
        layer.int8_activations = int8_activations
    probe = Probe(proto, layers, transposed, weights)
    float_assignment = {l.node: "fp32" for l in layers}
    calib = data.calibration[:MAX_SEARCH_SAMPLES]
    if method == "gptq":
        _compensate(proto, layers, probe, calib)
    reference = probe.run(float_assignment, calib)
    allowed = {l.node: set(ladder[:-1]) for l in layers}
    speedups: dict[str, dict[str, float]] = {}
    if speed is not None:
        allowed, speedups = _fast_enough(proto, layers, ladder[:-1], speed, calib[0], progress)
    # Sensitivity ranks layers; a few samples do that, the budget checks below use all.
    sensitivity_feeds = calib[:SENSITIVITY_SAMPLES]
    sensitivity_reference = reference[:len(sensitivity_feeds)]
    total = len(layers) * (len(ladder) - 1)
    done = 0
    for layer in layers:
        for precision in ladder[:-1]:
            if precision not in allowed[layer.node]:
                done += 1
                continue
            if precision == "ternary" and layer.node in probe.hessians:
                # The layer's own output error picks the rule, scale and granularity (no model runs),
                # then one run.
                layer.method_errors = {
                    f"{m}/{sc}/{g}": probe.layer_error(layer.node, {**SETTINGS["ternary"], "method": m, "scale": sc,
                                                                     "granularity": g})
                    for m, sc, g in TERNARY_CANDIDATES}
                best = min(layer.method_errors, key=layer.method_errors.get)
                layer.ternary_method, layer.ternary_scale, layer.ternary_granularity = best.split("/")
                methods: tuple[str, ...] = ("",)
            else:
                methods = TERNARY_METHODS if precision == "ternary" else ("",)
            for method in methods:
                if method:
                    layer.ternary_method = method
                outputs = probe.run({**float_assignment, layer.node: precision}, sensitivity_feeds)
                error = budget.shortfall(budget.measure(sensitivity_reference, outputs))
                if method:
                    layer.method_errors[method] = error
            if methods != ("",):
                layer.ternary_method = min(layer.method_errors, key=layer.method_errors.get)
                error = layer.method_errors[layer.ternary_method]
            layer.sensitivity[precision] = error
            done += 1
            if progress is not None:
                progress(f"{layer.node} @ {precision}", done, total)

    adjustments: list[dict[str, str]] = []
    fp32_bytes = sum(l.weight_bytes("fp32") for l in layers)

    def size_of(chosen: dict[str, str]) -> float:
        return sum(l.weight_bytes(chosen[l.node]) for l in layers) / fp32_bytes

    check = _BudgetCheck(budget, probe, calib, reference)
    trajectory = [(1.0, budget.measure(reference, reference))]
    moves = sorted(((layer, p) for layer in layers for p in ladder[:-1] if p in allowed[layer.node]),
                   key=lambda m: m[0].sensitivity[m[1]] / (m[0].weight_bytes("fp32") - m[0].weight_bytes(m[1])))

    def after(count: int) -> dict[str, str]:
        """Every layer at the lowest precision among the first `count` moves."""
        chosen = dict(float_assignment)
        for layer, precision in moves[:count]:
            if ladder.index(precision) < ladder.index(chosen[layer.node]):
                chosen[layer.node] = precision
        return chosen

    # 1. The longest run of cheapest moves that fits, by bisection (the error
    # grows with the run), instead of one model run per move.
    fits, misses = 0, len(moves) + 1
    probe_count = len(moves)
    while misses - fits > 1:
        value = check(after(probe_count))
        if value is not None:
            fits = probe_count
            trajectory.append((size_of(after(fits)), value))
        else:
            misses = probe_count
        probe_count = (fits + misses) // 2
    assignment = after(fits)
    for layer in layers:
        if assignment[layer.node] != "fp32":
            adjustments.append({"layer": layer.node, "from": "fp32", "to": assignment[layer.node],
                                "why": f"among the {fits} cheapest moves (error per byte saved) that fit the budget "
                                       f"together on calibration samples (alone: error "
                                       f"{layer.sensitivity[assignment[layer.node]]:.2e})"})
    # 2. Then each further move on its own, kept when the budget still holds.
    for layer, precision in moves[fits:]:
        if ladder.index(precision) >= ladder.index(assignment[layer.node]):
            continue  # already at this precision or lower
        trial = {**assignment, layer.node: precision}
        value = check(trial)
        if value is not None:
            trajectory.append((size_of(trial), value))
            adjustments.append({"layer": layer.node, "from": assignment[layer.node], "to": precision,
                                "why": f"fits the budget on calibration samples (alone: error "
                                       f"{layer.sensitivity[precision]:.2e})"})
            assignment = trial
    calibration_value = check.value(assignment)

    holdout_reference = probe.run(float_assignment, data.holdout)
    holdout_value = budget.measure(holdout_reference, probe.run(assignment, data.holdout))
    while not budget.met(holdout_value):
        lowered = [l for l in layers if assignment[l.node] != "fp32"]
        if not lowered:
            break
        worst = max(lowered, key=lambda l: l.sensitivity[assignment[l.node]])
        higher = next(p for p in ladder[ladder.index(assignment[worst.node]) + 1:]
                      if p == "fp32" or p in allowed[worst.node])
        adjustments.append({"layer": worst.node, "from": assignment[worst.node], "to": higher,
                            "why": f"held-out {budget.metric} {holdout_value:.5g} missed the budget; the most "
                                   "sensitive lowered layer goes up one step"})
        assignment[worst.node] = higher
        holdout_value = budget.measure(holdout_reference, probe.run(assignment, data.holdout))
    def set_precision(layer: CalibratedLayer, precision: str) -> None:
        layer.precision = precision
        layer.quantized = probe.quantized(layer.node, precision) if layer.uses_codes() else None

    for layer in layers:
        set_precision(layer, assignment[layer.node])
    # Always on the converted model too, as onnxruntime will run it: besides
    # int8 activations, onnxruntime fuses DequantizeLinear + MatMul of 8-bit
    # weights into MatMulNBits with int8 activations by default, which the
    # float probe does not see (PP-OCRv4 recognizer: probe top1 0.917,
    # converted 0.875 under a 0.9 budget).
    holdout_value = _check_converted(model, layers, budget, holdout_reference, data.holdout, ladder, allowed,
                                     adjustments, set_precision)
    return CalibrationResult(budget, layers, skipped, calibration_value, holdout_value, adjustments,
                             (len(calib), len(data.holdout)), trajectory, speed=speedups)


def _check_converted(model, layers: list[CalibratedLayer], budget: Budget, reference: list[list[np.ndarray]],
                     feeds: Sequence[dict[str, np.ndarray]], ladder: Sequence[str], allowed: dict[str, set[str]],
                     adjustments: list[dict[str, str]],
                     set_precision: Callable[[CalibratedLayer, str], None]) -> float:
    """The budget on `feeds` measured on the model converted with the layers'
    precisions (their real ops: int8 activations included); while it misses,
    the most sensitive lowered layer goes up one step. Returns the final value."""
    from onnxbit.calibration.converted import converted_outputs

    def measure() -> float:
        interim = CalibrationResult(budget, layers, {}, 0.0, 0.0, [], (0, 0))
        return budget.measure(reference, converted_outputs(model, interim, feeds))

    value = measure()
    while not budget.met(value):
        lowered = [l for l in layers if l.precision != "fp32"]
        if not lowered:
            break
        worst = max(lowered, key=lambda l: l.sensitivity[l.precision])
        higher = next(p for p in ladder[ladder.index(worst.precision) + 1:] if p == "fp32" or p in allowed[worst.node])
        adjustments.append({"layer": worst.node, "from": worst.precision, "to": higher,
                            "why": f"the converted model, as onnxruntime runs it, gave held-out {budget.metric} "
                                   f"{value:.5g}; the most sensitive lowered layer goes up one step"})
        set_precision(worst, higher)
        value = measure()
    return value


def _fast_enough(proto: onnx.ModelProto, layers: list[CalibratedLayer], precisions: Sequence[str],
                 speed: Callable[[dict, int, int, int], float], feed: dict[str, np.ndarray],
                 progress: Callable[[str, int, int], None] | None
                 ) -> tuple[dict[str, set[str]], dict[str, dict[str, float]]]:
    """Per layer, the precisions measured at least as fast as float for its
    shape (rows: its input's rows in one calibration sample; a Conv: its
    geometry on one sample's input, timed by speed.conv), and the measurements.
    A Conv layer whose speed cannot be measured (a speed function without
    .conv) keeps every precision, and its notes say so."""
    from onnxbit.calibration.conv_rows import output_positions
    from onnxbit.calibration.hessians import layer_rows, output_session

    matmuls = [l for l in layers if l.conv is None]
    convs = [l for l in layers if l.conv is not None and l.activation]
    rows = layer_rows(proto, [l.activation for l in matmuls if l.activation], feed)
    shapes = {}
    if convs:
        names = list(dict.fromkeys(l.activation for l in convs))
        shapes = {name: value.shape for name, value in zip(names, output_session(proto, names).run(names, feed))}
    allowed, speedups = {}, {}
    for done, layer in enumerate(layers, 1):
        if layer.conv is None:
            m = rows.get(layer.activation, 1)
            ratios = {p: float(speed(layer.settings(p), layer.k, layer.n, m)) for p in precisions}
        elif layer.activation in shapes and hasattr(speed, "conv"):
            shape = (1, *shapes[layer.activation][1:])  # one sample, as the layers' rows are counted
            m = output_positions(layer.conv, tuple(shape[2:]))
            ratios = {p: float(speed.conv(layer.settings(p), layer.conv, shape)) for p in precisions}
        else:
            allowed[layer.node] = set(precisions)
            layer.notes.append("speed not measured (the speed function times MatMul shapes only): every precision "
                               "was considered, chosen on accuracy and size alone")
            continue
        speedups[layer.node] = {"rows": m, **ratios}
        allowed[layer.node] = {p for p, ratio in ratios.items() if ratio >= 1.0}
        if progress is not None:
            progress(f"speed of {layer.node}", done, len(layers))
    return allowed, speedups


class _BudgetCheck:
    """Whether an assignment meets the budget on the calibration samples.

    A cosine budget holds the worst sample to a bound, so a trial that misses
    it on the samples hardest so far misses it on all: those few run first
    and most rejected trials cost a few samples instead of all of them."""

    def __init__(self, budget: Budget, probe: Probe, feeds, reference):
        self.budget, self.probe, self.feeds, self.reference = budget, probe, list(feeds), reference
        self.hardest = list(range(min(SCREEN_SAMPLES, len(self.feeds)))) if budget.metric == "cosine" else []

    def value(self, assignment: dict[str, str]) -> float:
        return self.budget.measure(self.reference, self.probe.run(assignment, self.feeds))

    def __call__(self, assignment: dict[str, str]) -> float | None:
        """The metric on all samples when the budget holds, else None."""
        if self.hardest:
            outputs = self.probe.run(assignment, [self.feeds[i] for i in self.hardest])
            if not self.budget.met(self.budget.measure([self.reference[i] for i in self.hardest], outputs)):
                return None
        outputs = self.probe.run(assignment, self.feeds)
        value = self.budget.measure(self.reference, outputs)
        if not self.budget.met(value):
            return None
        if self.hardest:  # the samples closest to the bound under the accepted assignment go first next time
            per_sample = [self.budget.measure([r], [o]) for r, o in zip(self.reference, outputs)]
            self.hardest = sorted(range(len(per_sample)), key=per_sample.__getitem__)[:SCREEN_SAMPLES]
        return value


def _compensate(model: onnx.ModelProto, layers: list[CalibratedLayer], probe: Probe,
                feeds: Sequence[dict[str, np.ndarray]]) -> None:
    """Mark the layers whose input X^T X could be measured as compensated
    (a Conv's: its im2col rows', one X^T X per group, while they fit in
    MAX_GRAM_K x MAX_GRAM_K values)."""
    from functools import partial

    from onnxbit.calibration.codes import weight_digest
    from onnxbit.calibration.conv_rows import MAX_GRAM_K, conv_gram
    from onnxbit.calibration.hessians import input_grams
    from onnxbit.quant.gptq import hessian

    sources = {}
    for layer in layers:
        if not layer.activation:
            continue
        if layer.conv is None:
            sources[f"rows of {layer.activation}"] = (layer.activation, hessian)
        elif layer.conv.group * layer.k * layer.k > MAX_GRAM_K * MAX_GRAM_K:
            layer.notes.append(f"not error-compensated: its im2col rows (K={layer.k}, group={layer.conv.group}) need "
                               f"{layer.conv.group} x {layer.k} x {layer.k} X^T X values, over the {MAX_GRAM_K} x "
                               f"{MAX_GRAM_K} kept in memory (int codes are rounded to nearest; ternary rules are "
                               "compared on the model's outputs)")
        else:
            sources[f"im2col rows of {layer.node}"] = (layer.activation, partial(conv_gram, spec=layer.conv))
    grams = input_grams(model, sources, feeds)
    for layer in layers:
        key = f"rows of {layer.activation}" if layer.conv is None else f"im2col rows of {layer.node}"
        h = grams.get(key)
        if layer.conv is not None and h is not None and h.shape[0] == 1:
            h = h[0]  # group 1: one X^T X for every column, as a MatMul's
        expected = (layer.k, layer.k) if layer.conv is None or layer.conv.group == 1 else (layer.conv.group, layer.k,
                                                                                           layer.k)
        if h is not None and h.shape == expected and np.isfinite(h).all():
            layer.compensated = True
            layer.digest = weight_digest(probe.weights[layer.node])
            probe.hessians[layer.node] = h


def _constant_node_name(tensor) -> str | None:
    """The name of the Constant node (with a dense value) that `tensor` is the output of, else None."""
    producer = tensor.inputs[0] if tensor.inputs else None
    if producer is None or producer.op != "Constant" or "value" not in producer.attrs:
        return None
    return producer.name


def _candidate_layers(model: onnx.ModelProto):
    """Main-graph MatMul/Gemm layers whose weight is an initializer or a
    Constant node's value read as it is (Gemm transB allowed, alpha 1), and
    Conv layers whose weight is one: what a weight input can stand in for."""
    import onnx_graphsurgeon as gs

    from onnxbit.passes.base import PassContext
    from onnxbit.passes.find_weights import FindWeightsPass
    from onnxbit.passes.manager import name_unnamed_nodes

    named = onnx.ModelProto()
    named.CopyFrom(model)
    name_unnamed_nodes(named.graph, set())  # the names the converter gives them, so rules match
    ctx = PassContext(graph=gs.import_onnx(named))
    FindWeightsPass().run(ctx)
    initializers = {t.name for t in model.graph.initializer}
    layers, skipped, transposed, weights = [], {}, {}, {}
    for record in ctx.records:
        skipped[record.node] = record.reason
    for site in ctx.weight_sites:
        name = site.weight_name
        if site.node.op == "ConvTranspose":
            skipped[site.node.name] = ("ConvTranspose layers are not calibrated (MatMul, Gemm and Conv are): it stays "
                                       "float in the calibrated config; a config rule or --preset int8 converts it")
            continue
        source = name if name in initializers else _constant_node_name(site.node.inputs[1])
        if site.in_subgraph or source is None:
            skipped[site.node.name] = "the weight is not a main-graph initializer or Constant node"
            continue
        read_as_is = ((f"{source}|Conv-rows:{site.conv.group}",) if site.conv is not None
                      else (source, f"{source}|transpose:[1, 0]"))
        if site.weight_key not in read_as_is:
            skipped[site.node.name] = f"the weight is transformed before use ({site.weight_key})"
            continue
        if any(l.weight == name for l in layers):
            skipped[site.node.name] = f"shares weight {name} with another layer"
            continue
        trans_a = site.node.op == "Gemm" and int(site.node.attrs.get("transA", 0)) != 0
        activation = None if trans_a or not site.node.inputs else site.node.inputs[0].name
        layers.append(CalibratedLayer(site.node.name, name, site.k, site.n, activation=activation, op=site.node.op,
                                      conv=site.conv))
        transposed[site.node.name] = site.weight_key.endswith("|transpose:[1, 0]")
        weights[site.node.name] = np.ascontiguousarray(site.weight, dtype=np.float32)
    return layers, skipped, transposed, weights
