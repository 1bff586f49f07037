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
from onnxbit.quant import quantize_int, quantize_ternary

# Smallest first. Settings are what the converted layers get (float activations).
LADDER = ("ternary", "int4", "int8", "fp32")
SETTINGS: dict[str, dict[str, Any]] = {
    "ternary": {"precision": "ternary", "granularity": "channel", "method": "absmean"},
    "int4": {"precision": "int4", "granularity": "group", "group_size": 32, "symmetric": False},
    "int8": {"precision": "int8", "granularity": "channel", "symmetric": True},
    "fp32": {"precision": "fp32"},
}
# Ternary threshold rules tried per layer; the one with the smallest output
# error on the calibration samples is kept (not the smallest weight error).
TERNARY_METHODS = ("absmean", "mse", "adaptive")
MAX_SEARCH_SAMPLES = 128  # calibration samples the search runs on (the held-out check uses all)


@dataclass
class CalibratedLayer:
    node: str
    weight: str  # the initializer
    k: int
    n: int
    precision: str = "fp32"
    sensitivity: dict[str, float] = field(default_factory=dict)  # precision -> output error, this layer alone
    ternary_method: str = "absmean"  # the threshold rule with the smallest output error
    method_errors: dict[str, float] = field(default_factory=dict)  # ternary method -> output error

    def weight_bytes(self, precision: str | None = None) -> int:
        return weight_bytes(precision or self.precision, self.k, self.n)

    def settings(self, precision: str | None = None) -> dict[str, Any]:
        precision = precision or self.precision
        if precision == "ternary":
            return {**SETTINGS["ternary"], "method": self.ternary_method}
        return dict(SETTINGS[precision])


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

    @property
    def met(self) -> bool:
        return self.budget.met(self.holdout_value)

    @property
    def size_ratio(self) -> float:
        """Calibrated layers' weight bytes over their float bytes."""
        return sum(l.weight_bytes() for l in self.layers) / max(1, sum(l.weight_bytes("fp32") for l in self.layers))

    def config(self) -> dict[str, Any]:
        """The config `onnxbit quantize --calibration` applies."""
        rules = [{"match": {"name": _literal_glob(l.node)}, **l.settings(), **self.activations.get(l.node, {})}
                 for l in self.layers if l.precision != "fp32"]
        return {"float_weights": "quantize", "calibrated": str(self.budget), "default": {"precision": "fp32"},
                "rules": rules}

    def to_json(self) -> dict[str, Any]:
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
                        "ternary_method_errors": l.method_errors} for l in self.layers],
            "skipped": self.skipped,
            "adjustments": self.adjustments,
            "trajectory": [{"size_ratio": r, "value": v} for r, v in self.trajectory],
            "activation_statistics": self.activation_statistics,
            "activation_choice": self.activation_choice,
            "config": self.config(),
        }

    def write_json(self, path: str | os.PathLike) -> None:
        from onnxbit.modelio.publish import Publication

        with Publication() as publication:
            publication.write_bytes(Path(path), (json.dumps(self.to_json(), indent=2) + "\n").encode())
            publication.commit()

    def render(self, console=None) -> None:
        from rich.console import Console
        from rich.table import Table

        from onnxbit.report import human_bytes

        console = console or Console()
        table = Table(title=f"calibration for {self.budget}")
        for column in ("layer", "K x N", "precision", *(f"error @{p}" for p in LADDER[:-1]), "bytes"):
            table.add_column(column, justify="left" if column in ("layer", "precision") else "right")
        for l in self.layers:
            table.add_row(l.node, f"{l.k} x {l.n}", l.precision,
                          *(f"{l.sensitivity[p]:.2e}" if p in l.sensitivity else "" for p in LADDER[:-1]),
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


def weight_bytes(precision: str, k: int, n: int) -> int:
    """Stored bytes of a [K, N] weight at a precision with SETTINGS (scales included)."""
    if precision == "fp32":
        return 4 * k * n
    if precision == "ternary":
        return -(-k * n // 4) + 4 * n
    if precision == "int4":
        groups = -(-k // 32)
        return -(-k * n // 2) + groups * n * 4 + -(-groups * n // 2)
    return k * n + 4 * n


def dequantized(weight: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    """The float32 [K, N] weight a layer converted with `settings` computes with."""
    s = settings
    precision = s["precision"]
    if precision == "fp32":
        return weight
    if precision == "ternary":
        return quantize_ternary(weight, method=s["method"], granularity=s["granularity"]).dequantize()
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

    def stored(self, node: str, precision: str) -> np.ndarray:
        settings = self.layers[node].settings(precision)
        key = (node, precision, settings.get("method", ""))
        if key not in self._cache:
            values = dequantized(self.weights[node], settings).astype(np.float32)
            self._cache[key] = np.ascontiguousarray(values.T if self.stored_transposed[node] else values)
        return self._cache[key]

    def run(self, assignment: dict[str, str], feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        weights = {self.layers[node].weight: self.stored(node, precision) for node, precision in assignment.items()}
        return [self.session.run(None, {**feed, **weights}) for feed in feeds]


def calibrate(model: onnx.ModelProto | str | os.PathLike, data: CalibrationData | Any, budget: str | Budget,
              precisions: Sequence[str] = LADDER[:-1], samples: int | None = None,
              progress: Callable[[str, int, int], None] | None = None) -> CalibrationResult:
    """Choose per-layer precisions (from `precisions`, plus float) meeting
    `budget` on held-out samples with the smallest weights the greedy search finds."""
    from onnxbit.convert import load_model

    budget = parse_budget(budget)
    unknown = [p for p in precisions if p not in LADDER[:-1]]
    if unknown:
        raise ConfigError(f"unknown calibration precision(s) {unknown}; choose from {', '.join(LADDER[:-1])}")
    ladder = [p for p in LADDER if p in precisions or p == "fp32"]
    proto, path = load_model(model)
    if path is not None and any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
    inputs = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if not isinstance(data, CalibrationData):
        data = load_calibration_data(data, inputs, samples)
    layers, skipped, transposed, weights = _candidate_layers(proto)
    if not layers:
        raise ConfigError("no layer to calibrate: " + ("; ".join(f"{k}: {v}" for k, v in skipped.items())
                                                       or "the model has no MatMul/Gemm with a constant weight"))
    probe = _Probe(proto, layers, transposed, weights)
    float_assignment = {l.node: "fp32" for l in layers}
    calib = data.calibration[:MAX_SEARCH_SAMPLES]
    reference = probe.run(float_assignment, calib)
    total = len(layers) * (len(ladder) - 1)
    done = 0
    for layer in layers:
        for precision in ladder[:-1]:
            for method in (TERNARY_METHODS if precision == "ternary" else ("",)):
                if method:
                    layer.ternary_method = method
                outputs = probe.run({**float_assignment, layer.node: precision}, calib)
                error = budget.shortfall(budget.measure(reference, outputs))
                if method:
                    layer.method_errors[method] = error
            if precision == "ternary":
                layer.ternary_method = min(layer.method_errors, key=layer.method_errors.get)
                error = layer.method_errors[layer.ternary_method]
            layer.sensitivity[precision] = error
            done += 1
            if progress is not None:
                progress(f"{layer.node} @ {precision}", done, total)

    assignment = dict(float_assignment)
    adjustments: list[dict[str, str]] = []
    fp32_bytes = sum(l.weight_bytes("fp32") for l in layers)

    def size_of(chosen: dict[str, str]) -> float:
        return sum(l.weight_bytes(chosen[l.node]) for l in layers) / fp32_bytes

    trajectory = [(1.0, budget.measure(reference, reference))]
    moves = sorted(((layer, p) for layer in layers for p in ladder[:-1]),
                   key=lambda m: m[0].sensitivity[m[1]] / (m[0].weight_bytes("fp32") - m[0].weight_bytes(m[1])))
    for layer, precision in moves:
        if ladder.index(precision) >= ladder.index(assignment[layer.node]):
            continue  # already at this precision or lower
        trial = {**assignment, layer.node: precision}
        value = budget.measure(reference, probe.run(trial, calib))
        if budget.met(value):
            trajectory.append((size_of(trial), value))
            adjustments.append({"layer": layer.node, "from": assignment[layer.node], "to": precision,
                                "why": f"fits the budget on calibration samples (alone: error "
                                       f"{layer.sensitivity[precision]:.2e})"})
            assignment = trial
    calibration_value = budget.measure(reference, probe.run(assignment, calib))

    holdout_reference = probe.run(float_assignment, data.holdout)
    holdout_value = budget.measure(holdout_reference, probe.run(assignment, data.holdout))
    while not budget.met(holdout_value):
        lowered = [l for l in layers if assignment[l.node] != "fp32"]
        if not lowered:
            break
        worst = max(lowered, key=lambda l: l.sensitivity[assignment[l.node]])
        higher = ladder[ladder.index(assignment[worst.node]) + 1]
        adjustments.append({"layer": worst.node, "from": assignment[worst.node], "to": higher,
                            "why": f"held-out {budget.metric} {holdout_value:.5g} missed the budget; the most "
                                   "sensitive lowered layer goes up one step"})
        assignment[worst.node] = higher
        holdout_value = budget.measure(holdout_reference, probe.run(assignment, data.holdout))
    for layer in layers:
        layer.precision = assignment[layer.node]
    return CalibrationResult(budget, layers, skipped, calibration_value, holdout_value, adjustments,
                             (len(calib), len(data.holdout)), trajectory)


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
        layers.append(CalibratedLayer(site.node.name, name, site.k, site.n))
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
    return raw["config"]
