"""What calibration decides and writes: the precision ladder and the
settings each rung converts with, the per-layer record, the result (report,
config for `onnxbit quantize --calibration`, the JSON file and its codes
file) and reading a calibration file back."""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxbit.calibration.budget import Budget
from onnxbit.errors import ConfigError

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


@dataclass
class CalibratedLayer:
    node: str
    weight: str  # the initializer
    k: int
    n: int
    precision: str = "fp32"
    sensitivity: dict[str, float] = field(default_factory=dict)  # precision -> output error, this layer alone
    ternary_method: str = "absmean"  # the threshold rule with the smallest output error
    ternary_scale: str | None = None  # and its scale rule (None: the method's own)
    ternary_granularity: str = "channel"  # and its scale granularity
    # ternary candidate -> the model's output error (rtn: each threshold rule,
    # "method"), or the layer's own relative output error on the calibration
    # inputs (gptq: X^T X known, no model runs; "method/scale/granularity")
    method_errors: dict[str, float] = field(default_factory=dict)
    activation: str | None = None  # the layer's input; its X^T X drives error compensation (None: not possible)
    compensated: bool = False  # int precisions quantized with GPTQ error compensation
    quantized: Any = field(default=None, repr=False)  # QuantResult at the chosen precision (compensated layers)
    digest: str = ""  # SHA-256 of the float weight the codes were computed from
    # the converted layer quantizes its activations to int8 (per token / dynamic):
    # the fast integer ops; the search's simulation does not see that error, the
    # converted-model check (check_converted) does
    int8_activations: bool = False
    op: str = "MatMul"  # the node's op type (MatMul, Gemm, Conv)
    # Conv: the weight's shape and attributes (onnxbit.layers.conv.ConvSpec); the [K, N] view is its rows transposed
    conv: Any = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)  # what calibration could not do for this layer, and why

    def weight_bytes(self, precision: str | None = None) -> int:
        return weight_bytes(precision or self.precision, self.k, self.n)

    def settings(self, precision: str | None = None) -> dict[str, Any]:
        precision = precision or self.precision
        settings = dict(SETTINGS[precision])
        if precision == "ternary":
            settings.update(method=self.ternary_method, granularity=self.ternary_granularity)
            if self.ternary_scale is not None:
                settings["scale"] = self.ternary_scale
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
            rule = {"match": {"name": literal_glob(l.node)}, **l.settings(), **self.activations.get(l.node, {})}
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
            "layers": [{"node": l.node, "op": l.op, "weight": l.weight, "k": l.k, "n": l.n, "precision": l.precision,
                        "bytes": l.weight_bytes(), "bytes_fp32": l.weight_bytes("fp32"),
                        "sensitivity": l.sensitivity, "ternary_method": l.ternary_method,
                        "ternary_scale": l.ternary_scale, "ternary_granularity": l.ternary_granularity,
                        "ternary_method_errors": l.method_errors, "compensated": l.uses_codes(),
                        **({"weight_shape": list(l.conv.weight_shape)} if l.conv is not None else {}),
                        **({"notes": l.notes} if l.notes else {})}
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
        shapes: dict[tuple[str, int, int, int], dict[str, float]] = {}
        for l in self.layers:
            if l.node in self.speed:
                measured = self.speed[l.node]
                shape = "x".join(map(str, l.conv.weight_shape)) if l.conv is not None else ""
                rows = f"{l.op} {shape} output positions" if shape else "rows"
                shapes[(rows, int(measured["rows"]), l.k, l.n)] = {p: r for p, r in measured.items() if p != "rows"}
        return [f"speed vs float at {m} x {k} x {n} ({rows} x K x N): "
                + ", ".join(f"{p} {r:.2f}x" + ("" if r >= 1.0 else " (slower: not considered)")
                            for p, r in ratios.items())
                for (rows, m, k, n), ratios in shapes.items()]

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
                      f"{self.holdout_value:.5g} on {self.samples[1]} held-out sample(s): {verdict}; calibrated "
                      f"layers' weights {self.size_ratio:.3f}x of float", soft_wrap=True)
        for l in self.layers:
            for note in l.notes:
                console.print(f"{l.node}: {note}", soft_wrap=True)
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


def literal_glob(name: str) -> str:
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
