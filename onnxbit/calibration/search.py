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

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from onnxbit.calibration.budget import Budget, parse_budget
from onnxbit.calibration.data import CalibrationData, load_calibration_data
from onnxbit.errors import ConfigError
from onnxbit.quant import quantize_binary, quantize_int, quantize_ternary

# Smallest first. Settings are what the converted layers get (float activations).
LADDER = ("binary", "ternary", "int2", "int4", "int8", "fp32")
# What the search may use unless told otherwise: binary and int2 cost float
# models far more error per byte saved than ternary and int4 (MiniLM: int2
# blocks of 32 give cosine 0.57 against int4's 0.98), so they are opt-in.
DEFAULT_PRECISIONS = ("ternary", "int4", "int8")
SETTINGS: dict[str, dict[str, Any]] = {
    "binary": {"precision": "binary", "granularity": "channel"},
    "ternary": {"precision": "ternary", "granularity": "channel", "method": "absmean"},
    "int2": {"precision": "int2", "granularity": "group", "group_size": 32, "symmetric": False},
    "int4": {"precision": "int4", "granularity": "group", "group_size": 32, "symmetric": False},
    "int8": {"precision": "int8", "granularity": "channel", "symmetric": True},
    "fp32": {"precision": "fp32"},
}
# Precisions whose codes GPTQ error compensation chooses (with the layer's
# activations' X^T X), stored in the calibration's codes file.
COMPENSATED = ("int2", "int4", "int8")
METHODS = ("gptq", "rtn")  # error compensation, or round to nearest
# Ternary threshold rules tried per layer; the one with the smallest output
# error on the calibration samples is kept (not the smallest weight error).
TERNARY_METHODS = ("absmean", "mse", "adaptive")
BATCH = 32  # samples stacked into one onnxruntime run when the model allows it
MAX_SEARCH_SAMPLES = 128  # calibration samples the search runs on (the held-out check uses all)
SENSITIVITY_SAMPLES = 16  # samples ranking the layers (each layer x precision is one run over them)
SCREEN_SAMPLES = 8  # the hardest samples a cosine budget is checked on before all of them


@dataclass
class CalibratedLayer:
    node: str
    weight: str  # the initializer
    k: int
    n: int
    precision: str = "fp32"
    sensitivity: dict[str, float] = field(default_factory=dict)  # precision -> output error, this layer alone
    ternary_method: str = "absmean"  # the threshold rule with the smallest output error
    # ternary method -> the model's output error (rtn), or the layer's own relative
    # output error on the calibration inputs (gptq: X^T X known, no model runs)
    method_errors: dict[str, float] = field(default_factory=dict)
    activation: str | None = None  # the layer's input; its X^T X drives error compensation (None: not possible)
    compensated: bool = False  # int precisions quantized with GPTQ error compensation
    quantized: Any = field(default=None, repr=False)  # QuantResult at the chosen precision (compensated layers)
    digest: str = ""  # SHA-256 of the float weight the codes were computed from
    # the converted layer quantizes its activations to int8 (per token / dynamic):
    # the fast integer ops; the search's simulation does not see that error, the
    # converted-model check (check_converted) does
    int8_activations: bool = False

    def weight_bytes(self, precision: str | None = None) -> int:
        return weight_bytes(precision or self.precision, self.k, self.n)

    def settings(self, precision: str | None = None) -> dict[str, Any]:
        precision = precision or self.precision
        settings = dict(SETTINGS[precision])
        if precision == "ternary":
            settings["method"] = self.ternary_method
        if self.int8_activations and precision != "fp32":
            settings.update({"act_quant": 1} if precision == "ternary" else {"activations": "int8"})
        return settings

    def uses_codes(self, precision: str | None = None) -> bool:
        """Its codes come from calibration (error compensation), not from rounding at conversion."""
        return self.compensated and (precision or self.precision) in COMPENSATED


@dataclass
class CalibrationResult:
    budget: Budget
    layers: list[CalibratedLayer]
    skipped: dict[str, str]  # node -> why it was not calibrated
    calibration_value: float
    holdout_value: float
    adjustments: list[dict[str, str]]
    samples: tuple[int, int]  # (calibration, held out)
    # (weight size ratio, budget metric on calibration samples) after each accepted change of the search
    trajectory: list[tuple[float, float]] = field(default_factory=list)
    # node -> activation settings added to its rule (calibration.activations: static int8 scales)
    activations: dict[str, dict[str, Any]] = field(default_factory=dict)
    # node -> the activation statistics those settings came from
    activation_statistics: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the int8-or-float activations decision (calibration.activations.check_static_activations)
    activation_choice: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None  # a preset keeping float weights float: the config is that preset
    # node -> {"rows": M, precision: times faster than float, ...}, measured when speed counts (performance)
    speed: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        return self.budget.met(self.holdout_value)

    @property
    def size_ratio(self) -> float:
        """Calibrated layers' weight bytes over their float bytes (1 with none)."""
        if not self.layers:
            return 1.0
        return sum(l.weight_bytes() for l in self.layers) / max(1, sum(l.weight_bytes("fp32") for l in self.layers))

    def config(self, codes_file: str | None = None) -> dict[str, Any]:
        """The config `onnxbit quantize --calibration` applies. `codes_file`:
        where the compensated layers' codes are (`write_json` writes them)."""
        if self.preset is not None:
            return {"preset": self.preset, "calibrated": str(self.budget)}
        rules = []
        for l in self.layers:
            if l.precision == "fp32":
                continue
            rule = {"match": {"name": _literal_glob(l.node)}, **l.settings(), **self.activations.get(l.node, {})}
            if l.uses_codes():
                if codes_file is None:
                    raise ConfigError("layers quantized with error compensation need their codes file: "
                                      "write the calibration with write_json(path) and load it with "
                                      "load_calibration(path)")
                rule["codes"] = codes_file
            rules.append(rule)
        return {"float_weights": "quantize", "calibrated": str(self.budget), "default": {"precision": "fp32"},
                "rules": rules}

    def to_json(self, codes_file: str | None = None) -> dict[str, Any]:
        return {
            "budget": str(self.budget),
            "budget_met_on_holdout": self.met,
            "calibration_value": self.calibration_value,
            "holdout_value": self.holdout_value,
            "samples": {"calibration": self.samples[0], "holdout": self.samples[1]},
            "size_ratio": self.size_ratio,
            "layers": [{"node": l.node, "weight": l.weight, "k": l.k, "n": l.n, "precision": l.precision,
                        "bytes": l.weight_bytes(), "bytes_fp32": l.weight_bytes("fp32"),
                        "sensitivity": l.sensitivity, "ternary_method": l.ternary_method,
                        "ternary_method_errors": l.method_errors, "compensated": l.uses_codes()}
                       for l in self.layers],
            "skipped": self.skipped,
            "adjustments": self.adjustments,
            "trajectory": [{"size_ratio": r, "value": v} for r, v in self.trajectory],
            "speed": self.speed,
            "activation_statistics": self.activation_statistics,
            "activation_choice": self.activation_choice,
            "config": self.config(codes_file),
        }

    def write_json(self, path: str | os.PathLike) -> None:
        """The calibration file, and next to it (NAME.codes.npz) the codes of
        the layers quantized with error compensation, if any."""
        from onnxbit.calibration.codes import codes_bytes
        from onnxbit.modelio.publish import Publication

        path = Path(path)
        compensated = {l.weight: (l.quantized, l.digest) for l in self.layers if l.uses_codes()}
        codes_path = path.with_name(path.stem + ".codes.npz") if compensated else None
        with Publication() as publication:
            text = json.dumps(self.to_json(codes_path.name if codes_path else None), indent=2) + "\n"
            publication.write_bytes(path, text.encode())
            if codes_path is not None:
                publication.write_bytes(codes_path, codes_bytes(compensated))
            publication.commit()

    def speed_lines(self) -> list[str]:
        """One line per measured layer shape: each precision's speed vs float,
        and which ones the search left out for being slower."""
        shapes: dict[tuple[int, int, int], dict[str, float]] = {}
        for l in self.layers:
            if l.node in self.speed:
                measured = self.speed[l.node]
                shapes[(int(measured["rows"]), l.k, l.n)] = {p: r for p, r in measured.items() if p != "rows"}
        return [f"speed vs float at {m} x {k} x {n} (rows x K x N): "
                + ", ".join(f"{p} {r:.2f}x" + ("" if r >= 1.0 else " (slower: not considered)")
                            for p, r in ratios.items())
                for (m, k, n), ratios in shapes.items()]

    def render(self, console=None) -> None:
        from rich.console import Console
        from rich.table import Table

        from onnxbit.report import human_bytes

        console = console or Console()
        table = Table(title=f"calibration for {self.budget}")
        measured = [p for p in LADDER[:-1] if any(p in l.sensitivity for l in self.layers)]
        for column in ("layer", "K x N", "precision", *(f"error @{p}" for p in measured), "bytes"):
            table.add_column(column, justify="left" if column in ("layer", "precision") else "right")
        for l in self.layers:
            table.add_row(l.node, f"{l.k} x {l.n}", l.precision,
                          *(f"{l.sensitivity[p]:.2e}" if p in l.sensitivity else "" for p in measured),
                          human_bytes(l.weight_bytes()))
        console.print(table)
        for adjustment in self.adjustments:
            console.print(f"{adjustment['layer']}: {adjustment['from']} -> {adjustment['to']} ({adjustment['why']})",
                          soft_wrap=True)
        verdict = "met" if self.met else "[bold red]NOT met[/]"
        console.print(f"{self.budget}: {self.calibration_value:.5g} on {self.samples[0]} calibration sample(s), "
                      f"{self.holdout_value:.5g} on {self.samples[1]} held-out sample(s): {verdict}; weights "
                      f"{self.size_ratio:.3f}x of float", soft_wrap=True)
        for node, why in self.skipped.items():
            console.print(f"not calibrated: {node}: {why}", soft_wrap=True)
        for line in self.speed_lines():
            console.print(line, soft_wrap=True)
        if self.preset is not None:
            console.print(f"the calibration applies the {self.preset} preset as it is (float weights stay float; "
                          "QAT fake-quant layers are folded exactly by the conversion)", soft_wrap=True)


def weight_bytes(precision: str, k: int, n: int) -> int:
    """Stored bytes of a [K, N] weight at a precision with SETTINGS (scales included)."""
    if precision == "fp32":
        return 4 * k * n
    if precision == "binary":
        return -(-k * n // 8) + 4 * n
    if precision == "ternary":
        return -(-k * n // 4) + 4 * n
    if precision in ("int2", "int4"):
        bits, groups = int(precision[3:]), -(-k // 32)
        return -(-k * n * bits // 8) + groups * n * 4 + -(-groups * n * bits // 8)
    return k * n + 4 * n


def dequantized(weight: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    """The float32 [K, N] weight a layer converted with `settings` computes with."""
    s = settings
    precision = s["precision"]
    if precision == "fp32":
        return weight
    if precision == "ternary":
        return quantize_ternary(weight, method=s["method"], granularity=s["granularity"]).dequantize()
    if precision == "binary":
        return quantize_binary(weight, granularity=s["granularity"]).dequantize()
    return quantize_int(weight, int(precision[3:]), symmetric=s["symmetric"], granularity=s["granularity"],
                        group_size=s.get("group_size")).dequantize()


class _Probe:
    """One session over the model with the candidate weights as inputs."""

    def __init__(self, model: onnx.ModelProto, layers: list[CalibratedLayer], stored_transposed: dict[str, bool],
                 weights: dict[str, np.ndarray]):
        import onnxruntime as ort

        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        names = {l.weight for l in layers}
        kept = [t for t in probe.graph.initializer if t.name not in names]
        for tensor in probe.graph.initializer:
            if tensor.name in names:
                probe.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                                            list(tensor.dims)))
        del probe.graph.initializer[:]
        probe.graph.initializer.extend(kept)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.layers = {l.node: l for l in layers}
        self.stored_transposed = stored_transposed
        self.weights = weights  # node -> float32 [K, N]
        self._cache: dict[tuple[str, str, str], np.ndarray] = {}
        self.batch: bool | None = None  # stack samples into one run (None: not tried yet)
        self.hessians: dict[str, np.ndarray] = {}  # node -> X^T X of its input (compensated layers)
        self._results: dict[tuple[str, str], Any] = {}

    def quantized(self, node: str, precision: str):
        """The compensated layer's QuantResult at an int precision (cached)."""
        from onnxbit.quant.gptq import quantize_int_gptq

        key = (node, precision)
        if key not in self._results:
            s = self.layers[node].settings(precision)
            self._results[key] = quantize_int_gptq(self.weights[node], self.hessians[node], int(precision[3:]),
                                                   symmetric=s["symmetric"], granularity=s["granularity"],
                                                   group_size=s.get("group_size"))
        return self._results[key]

    def layer_error(self, node: str, ternary_method: str) -> float:
        """tr(dW^T H dW) / tr(W^T H W): the layer's own relative output error
        on the calibration inputs with ternary weights from that rule."""
        w, h = self.weights[node], self.hessians[node]
        delta = (dequantized(w, {**SETTINGS["ternary"], "method": ternary_method}) - w).astype(np.float64)
        w = w.astype(np.float64)
        return float(np.einsum("kn,kn->", delta, h @ delta) / max(np.einsum("kn,kn->", w, h @ w), 1e-30))

    def stored(self, node: str, precision: str) -> np.ndarray:
        layer = self.layers[node]
        settings = layer.settings(precision)
        key = (node, precision, settings.get("method", ""))
        if key not in self._cache:
            if layer.uses_codes(precision):
                values = self.quantized(node, precision).dequantize()
            else:
                values = dequantized(self.weights[node], settings).astype(np.float32)
            self._cache[key] = np.ascontiguousarray(values.T if self.stored_transposed[node] else values)
        return self._cache[key]

    def run(self, assignment: dict[str, str], feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        weights = {self.layers[node].weight: self.stored(node, precision) for node, precision in assignment.items()}
        if self.batch is not False:
            batched = self._run_batched(weights, feeds)
            if batched is not None:
                return batched
        return [self.session.run(None, {**feed, **weights}) for feed in feeds]

    def _run_batched(self, weights: dict[str, np.ndarray], feeds: Sequence[dict[str, np.ndarray]]):
        """Samples stacked along axis 0, BATCH at a time: one run instead of
        BATCH (the search runs the model thousands of times). Used when every
        output keeps the samples along axis 0 and matches the one-sample runs;
        otherwise (a fixed batch, outputs without a batch axis) None."""
        shapes = {tuple((k, v.shape) for k, v in sorted(feed.items())) for feed in feeds}
        if len(shapes) != 1 or any(v.ndim == 0 or v.shape[0] != 1 for v in feeds[0].values()):
            return None
        outputs: list[list[np.ndarray]] = []
        try:
            for start in range(0, len(feeds), BATCH):
                chunk = feeds[start:start + BATCH]
                stacked = {name: np.concatenate([f[name] for f in chunk]) for name in chunk[0]}
                result = self.session.run(None, {**stacked, **weights})
                if any(np.ndim(r) == 0 or r.shape[0] != len(chunk) for r in result):
                    raise ValueError("an output has no batch axis")
                outputs.extend([r[i:i + 1] for r in result] for i in range(len(chunk)))
        except Exception:  # the model does not take stacked samples: run them one by one from now on
            self.batch = False
            return None
        if self.batch is None:  # first time: check stacking changes nothing beyond float rounding
            single = self.session.run(None, {**feeds[0], **weights})
            if not all(np.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(single, outputs[0])):
                self.batch = False
                return None
            self.batch = True
        return outputs


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
    fast integer ops); the budget is then also checked on the converted model
    run in onnxruntime, on the held-out samples, raising layers until it holds."""
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
                                                       or "the model has no MatMul/Gemm with a constant weight")
                          + " (a QAT export's fake-quant layers are folded exactly: calibrate with --preset bitnet "
                            "or convert with `onnxbit quantize`)")
    for layer in layers:
        layer.int8_activations = int8_activations
    probe = _Probe(proto, layers, transposed, weights)
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
                # The layer's own output error picks the threshold rule (no model runs), then one run.
                layer.method_errors = {m: probe.layer_error(layer.node, m) for m in TERNARY_METHODS}
                layer.ternary_method = min(layer.method_errors, key=layer.method_errors.get)
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
    if int8_activations:
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
                            "why": f"the converted model (int8 activations) gave held-out {budget.metric} "
                                   f"{value:.5g}; the most sensitive lowered layer goes up one step"})
        set_precision(worst, higher)
        value = measure()
    return value


def _fast_enough(proto: onnx.ModelProto, layers: list[CalibratedLayer], precisions: Sequence[str],
                 speed: Callable[[dict, int, int, int], float], feed: dict[str, np.ndarray],
                 progress: Callable[[str, int, int], None] | None
                 ) -> tuple[dict[str, set[str]], dict[str, dict[str, float]]]:
    """Per layer, the precisions measured at least as fast as float for its
    shape (rows: its input's rows in one calibration sample), and the measurements."""
    from onnxbit.calibration.hessians import layer_rows

    rows = layer_rows(proto, [l.activation for l in layers if l.activation], feed)
    allowed, speedups = {}, {}
    for done, layer in enumerate(layers, 1):
        m = rows.get(layer.activation, 1)
        ratios = {p: float(speed(layer.settings(p), layer.k, layer.n, m)) for p in precisions}
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

    def __init__(self, budget: Budget, probe: _Probe, feeds, reference):
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


def _compensate(model: onnx.ModelProto, layers: list[CalibratedLayer], probe: _Probe,
                feeds: Sequence[dict[str, np.ndarray]]) -> None:
    """Mark the layers whose input X^T X could be measured as compensated."""
    from onnxbit.calibration.codes import weight_digest
    from onnxbit.calibration.hessians import layer_hessians

    hessians = layer_hessians(model, [l.activation for l in layers if l.activation], feeds)
    for layer in layers:
        h = hessians.get(layer.activation)
        if h is not None and h.shape == (layer.k, layer.k) and np.isfinite(h).all():
            layer.compensated = True
            layer.digest = weight_digest(probe.weights[layer.node])
            probe.hessians[layer.node] = h


def _candidate_layers(model: onnx.ModelProto):
    """Main-graph MatMul/Gemm layers whose weight is an initializer read as
    it is (Gemm transB allowed, alpha 1): what a weight input can stand in for."""
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
        if site.in_subgraph or name not in initializers:
            skipped[site.node.name] = "the weight is not a main-graph initializer"
            continue
        if site.weight_key not in (name, f"{name}|transpose:[1, 0]"):
            skipped[site.node.name] = f"the weight is transformed before use ({site.weight_key})"
            continue
        if any(l.weight == name for l in layers):
            skipped[site.node.name] = f"shares weight {name} with another layer"
            continue
        trans_a = site.node.op == "Gemm" and int(site.node.attrs.get("transA", 0)) != 0
        activation = None if trans_a or not site.node.inputs else site.node.inputs[0].name
        layers.append(CalibratedLayer(site.node.name, name, site.k, site.n, activation=activation))
        transposed[site.node.name] = site.weight_key.endswith("|transpose:[1, 0]")
        weights[site.node.name] = np.ascontiguousarray(site.weight, dtype=np.float32)
    return layers, skipped, transposed, weights


def _literal_glob(name: str) -> str:
    """A glob matching exactly `name` (config rules match names with fnmatch)."""
    escaped = "".join(f"[{c}]" if c in "*?[" else c for c in name)
    assert fnmatch.fnmatchcase(name, escaped)
    return escaped


def load_calibration(path: str | os.PathLike) -> dict[str, Any]:
    """The config inside a calibration file written by `onnxbit calibrate`."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"calibration file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"calibration file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
        raise ConfigError(f"{path} holds no 'config': write it with `onnxbit calibrate ... -o {path}`")
    config = raw["config"]
    for rule in config.get("rules", []):  # codes files are named relative to the calibration file
        if isinstance(rule, dict) and isinstance(rule.get("codes"), str):
            rule["codes"] = str(Path(path).parent / rule["codes"])
    return config
