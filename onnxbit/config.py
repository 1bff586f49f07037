"""Per-layer precision configuration for post-training conversion.

A :class:`QuantConfig` holds default :class:`LayerSettings` and an ordered list
of :class:`LayerRule`. For each convertible layer the first rule whose match
holds decides its settings (fields the rule leaves out keep the default); with
no matching rule the default applies. Layers with fewer than ``min_params``
weights stay float.

Presets:

``bitnet``  (the default) converts what it can prove: layers whose weights a
            QAT fold proves exactly ternary, packed as they are. Float
            weights stay float (``float_weights: "keep"``): ternarizing a
            float model after training ruins it, and the summary says so and
            what to run instead. The last layer stays float: BitNet b1.58
            keeps the output head (and the embedding, a Gather we never
            touch) in high precision.
``ternary`` post-training ternary for float weights too (absmean, per
            tensor; last layer float) with per-token int8 activations (the
            fast integer kernels): the smallest files, at a large accuracy
            cost on models not trained for it.
``int4``    4-bit, asymmetric, groups of 32 along K (the common LLM recipe).
``int8``    8-bit, symmetric, one scale per output channel.
``accuracy`` / ``balanced`` / ``memory`` / ``performance``  goal presets for
            float models (see PRESETS and CALIBRATION_PRESETS below, and the
            README's preset table).

``float_weights``: "quantize" (default for configs) quantizes float weights
at the layer's precision; "keep" leaves every weight float that no QAT fold
proved ternary.

``float_storage``: how layers that stay float are stored when their weights
are all bfloat16 numbers (a bf16 checkpoint exported to float32). "bf16"
(default): in 16 bits, losslessly: BFloat16MatMul on target onnxbit for
weights of 16 MiB or more (faster at one row, a little slower at many:
README), bfloat16 + Cast for the rest and on the other targets;
"bf16-cast": bfloat16 + Cast on every target (half the bytes, the
original's speed once onnxruntime folds the Cast); "fp32": as they are.
Embedding tables only Gathers read follow "bf16" and "bf16-cast" too.

A config is a plain dict (or a JSON or TOML file holding one)::

    {"preset": "bitnet",
     "default": {"precision": "ternary", "granularity": "channel"},
     "min_params": 4096,
     "rules": [{"match": {"name": "*lm_head*"}, "precision": "int8"},
               {"match": {"position": "first"}, "precision": "fp32"}]}
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxbit import formats
from onnxbit.errors import ConfigError  # noqa: F401  (re-exported)
from onnxbit.quant.ternary import SCALES as TERNARY_SCALES

PRECISIONS = ("ternary", "binary", "int2", "int4", "int8", "fp32")
GRANULARITIES = ("tensor", "channel", "group")
FORMATS = formats.NAMES
TARGETS = ("onnxbit", "ort", "onnx")  # onnxbit.targets.NAMES (tests/test_targets.py checks they agree)
POSITIONS = ("first", "last")
FLOAT_WEIGHTS = ("quantize", "keep")
FLOAT_STORAGE = ("bf16", "bf16-cast", "fp32")
ACTIVATIONS = ("float", "int8", "static")
# How `onnxbit calibrate` turns a layer's activation statistics into its static
# scale (onnxbit.calibration.statistics.RANGE_METHODS; a test checks they agree).
ACT_RANGES = ("minmax", "percentile", "entropy", "mse")


@dataclass(frozen=True)
class LayerSettings:
    """How one layer is quantized and stored."""

    precision: str = "ternary"
    granularity: str = "tensor"
    group_size: int = 0  # used when granularity == "group"
    method: str = "absmean"  # ternary/binary scale rule, passed to onnxbit.quant
    # ternary: how each block's scale is chosen once the codes are: "absmean"
    # (mean |w| over the nonzero codes' weights) or "lsq" (least squares);
    # None = the method's own (onnxbit.quant.ternary)
    scale: str | None = None
    symmetric: bool = True  # int precisions: symmetric codes or codes + zero points
    # 1 = BitNet per-token int8 activations (ternary/binary): exact in TernaryMatMul,
    # standard ops on target onnx, per-block int8 (MatMulNBits accuracy_level 4) on target ort.
    act_quant: int = 0
    # Ternary packing for TernaryMatMul: one of onnxbit.formats.NAMES; None =
    # formats.STORAGE_DEFAULT (targets ort and onnx always store 2-bit codes).
    format: str | None = None
    # "int8": the target may quantize this layer's activations to int8 where
    # that runs faster (int8 weights: DynamicQuantizeLinear + MatMulInteger;
    # 2/4-bit MatMulNBits: accuracy_level 4); "float" keeps them float.
    # "static": int8 activations with one fixed scale per layer (act_scale),
    # which `onnxbit calibrate` measures: TernaryMatMul act_quant=2 (target
    # onnxbit, ternary/binary layers).
    activations: str = "float"
    # The static activation scale, q = clamp(round(x * act_scale), -128, 127);
    # written per layer by calibration (activations "static" only).
    act_scale: float | None = None
    # How calibration picks act_scale from the layer's statistics: ACT_RANGES;
    # act_percentile is the percentile of |x| the "percentile" range clips at.
    act_range: str = "minmax"
    act_percentile: float = 99.99
    # int precisions: an .npz written by `onnxbit calibrate` holding this
    # layer's codes, chosen with error compensation on calibration data
    # (onnxbit.calibration.codes); None = round the weight at conversion.
    codes: str | None = None

    def validate(self, where: str) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{where}: unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"{where}: unknown granularity {self.granularity!r}; choose one of {', '.join(GRANULARITIES)}")
        if self.granularity == "group" and self.group_size <= 0:
            raise ConfigError(f"{where}: granularity 'group' needs a positive group_size")
        if self.granularity != "group" and self.group_size not in (0, None):
            raise ConfigError(f"{where}: group_size={self.group_size} is only meaningful with granularity 'group'")
        if self.scale is not None and self.scale not in TERNARY_SCALES:
            raise ConfigError(f"{where}: unknown scale {self.scale!r}; choose one of {', '.join(TERNARY_SCALES)}")
        if self.scale is not None and self.precision != "ternary":
            raise ConfigError(f"{where}: scale applies to ternary layers only, not {self.precision!r}")
        if self.format is not None and self.format not in formats.STORAGE_CHOICES:
            raise ConfigError(f"{where}: unknown format {self.format!r}; choose one of "
                              f"{', '.join(formats.STORAGE_CHOICES)}")
        if self.activations not in ACTIVATIONS:
            raise ConfigError(f"{where}: activations must be one of {', '.join(ACTIVATIONS)}, got {self.activations!r}")
        if self.codes is not None and (not isinstance(self.codes, str) or not self.precision.startswith("int")):
            raise ConfigError(f"{where}: codes (a calibration codes file) applies to int precisions only, "
                              f"got codes={self.codes!r} with precision {self.precision!r}")
        if self.act_quant not in (0, 1):
            raise ConfigError(f"{where}: act_quant must be 0 or 1, got {self.act_quant!r}")
        self._validate_static_activations(where)

    def _validate_static_activations(self, where: str) -> None:
        if self.act_range not in ACT_RANGES:
            raise ConfigError(f"{where}: act_range must be one of {', '.join(ACT_RANGES)}, got {self.act_range!r}")
        if isinstance(self.act_percentile, bool) or not isinstance(self.act_percentile, (int, float)) \
                or not 0 < self.act_percentile <= 100:
            raise ConfigError(f"{where}: act_percentile must be a number in (0, 100], got {self.act_percentile!r}")
        if self.activations == "static" and self.act_quant:
            raise ConfigError(f"{where}: activations 'static' (one calibrated scale per layer) and act_quant=1 "
                              "(a scale per token) contradict each other; choose one")
        if self.act_scale is None:
            return
        if self.activations != "static":
            raise ConfigError(f"{where}: act_scale is only used with activations 'static', "
                              f"not {self.activations!r}")
        if isinstance(self.act_scale, bool) or not isinstance(self.act_scale, (int, float)) \
                or not math.isfinite(self.act_scale) or self.act_scale <= 0:
            raise ConfigError(f"{where}: act_scale must be a finite number > 0, got {self.act_scale!r}")

    @property
    def bits(self) -> int:
        """Bits of an integer precision (int2 -> 2)."""
        if not self.precision.startswith("int"):
            raise ConfigError(f"precision {self.precision!r} has no integer bit width")
        return int(self.precision[3:])


_SETTING_FIELDS = {f.name for f in dataclasses.fields(LayerSettings)}
_MATCH_FIELDS = {"name", "op_type", "position", "max_params"}


@dataclass(frozen=True)
class LayerRule:
    """Settings for the layers this rule matches (every given criterion must hold).

    name: fnmatch glob over the node name; op_type: "MatMul" | "Gemm";
    position: "first" | "last" (in topological order of the main graph);
    max_params: matches layers with at most this many weights.
    """

    overrides: dict[str, Any]
    name: str | None = None
    op_type: str | None = None
    position: str | None = None
    max_params: int | None = None

    def describe(self) -> str:
        parts = [f"{key}={getattr(self, key)}" for key in ("name", "op_type", "position", "max_params")
                 if getattr(self, key) is not None]
        return ", ".join(parts) or "every layer"

    def matches(self, node_name: str, op_type: str, position: set[str], params: int) -> bool:
        if self.name is not None and not fnmatch.fnmatchcase(node_name, self.name):
            return False
        if self.op_type is not None and op_type != self.op_type:
            return False
        if self.position is not None and self.position not in position:
            return False
        if self.max_params is not None and params > self.max_params:
            return False
        return True


@dataclass(frozen=True)
class QuantConfig:
    default: LayerSettings = LayerSettings()
    rules: tuple[LayerRule, ...] = ()
    min_params: int = 0
    preset: str | None = None
    float_weights: str = "quantize"  # or "keep": only QAT-proven layers convert
    float_storage: str = "bf16"  # FLOAT_STORAGE: bfloat16-exact float layers in 16 bits, or "fp32" as they are
    calibrated: str | None = None  # the budget `onnxbit calibrate` chose these precisions for

    def matching_rule(self, node_name: str, op_type: str, position: set[str], params: int) -> LayerRule | None:
        """The rule that decides this layer, or None (default or min_params)."""
        if params < self.min_params:
            return None
        return next((r for r in self.rules if r.matches(node_name, op_type, position, params)), None)

    def settings_for(self, node_name: str, op_type: str, position: set[str], params: int) -> tuple[LayerSettings, str]:
        """Settings for one layer and a short phrase saying where they came from
        ("default", "rule <index>: <match>", or the min_params cut)."""
        if params < self.min_params:
            return dataclasses.replace(self.default, precision="fp32"), f"fewer than min_params={self.min_params} weights"
        for index, rule in enumerate(self.rules):
            if rule.matches(node_name, op_type, position, params):
                return dataclasses.replace(self.default, **rule.overrides), f"rule {index}: {rule.describe()}"
        return self.default, "default"

    def candidates(self) -> list[tuple[str, LayerSettings]]:
        """Every settings combination a layer can get: the default, each rule's."""
        return [("default", self.default)] + [
            (f"rule {i}", dataclasses.replace(self.default, **r.overrides)) for i, r in enumerate(self.rules)]

    def check_target(self, target) -> None:
        """Reject settings the target cannot express before touching any layer."""
        from onnxbit.targets import get_target

        chosen = get_target(target)
        for where, settings in self.candidates():
            chosen.check(settings, where)


PRESETS: dict[str, dict[str, Any]] = {
    "bitnet": {
        "default": {"precision": "ternary", "granularity": "tensor", "method": "absmean"},
        "rules": [{"match": {"position": "last"}, "precision": "fp32"}],
        "float_weights": "keep",
    },
    # act_quant 1 (per-token int8 activations): the fast integer kernels, and
    # in onnxruntime MatMulNBits' int8 path; float activations made a MiniLM-
    # sized encoder 1.2x (onnxbit) to 10x (ort) slower than the float model,
    # int8 ones 1.1-1.6x faster on onnxbit (`onnxbit bench model`).
    "ternary": {
        "default": {"precision": "ternary", "granularity": "tensor", "method": "absmean", "act_quant": 1},
        "rules": [{"match": {"position": "last"}, "precision": "fp32"}],
    },
    "int4": {"default": {"precision": "int4", "granularity": "group", "group_size": 32, "symmetric": False,
                         "activations": "int8"}},
    "int8": {"default": {"precision": "int8", "granularity": "channel", "symmetric": True, "activations": "int8"}},
    # Goal presets for float models. Each is a plain config (so a config file
    # can name it and refine it) and, for `onnxbit calibrate --preset`, a
    # budget and the precisions the search may use (CALIBRATION_PRESETS).
    # accuracy: int8 per output channel with float activations, the smallest
    # change (a MiniLM embedder keeps cosine 0.999).
    "accuracy": {"default": {"precision": "int8", "granularity": "channel", "symmetric": True}},
    # balanced: 4-bit blocks of 32 (MatMulNBits' layout), the first and last
    # layers at int8 (they see the raw embedding and produce the output).
    "balanced": {"default": {"precision": "int4", "granularity": "group", "group_size": 32, "symmetric": False},
                 "rules": [{"match": {"position": "first"}, "precision": "int8", "granularity": "channel",
                            "group_size": 0, "symmetric": True},
                           {"match": {"position": "last"}, "precision": "int8", "granularity": "channel",
                            "group_size": 0, "symmetric": True}]},
    # memory: 4-bit blocks of 128, symmetric (0.53 bytes per weight, 0.13x of
    # float); with data, calibration may go to ternary where a looser budget holds.
    "memory": {"default": {"precision": "int4", "granularity": "group", "group_size": 128, "symmetric": True}},
    # performance: what measured fastest on this CPU for float transformers
    # (README, `onnxbit bench model`): int8 weights with int8 activations
    # (DynamicQuantizeLinear + MatMulInteger), 1.6-2.1x faster than float at
    # 16 and 128 tokens; 4-bit MatMulNBits was slower than float at prefill.
    "performance": {"default": {"precision": "int8", "granularity": "channel", "symmetric": True,
                                "activations": "int8"}},
}

# What `onnxbit calibrate --preset NAME` searches under: the budget on held-out
# samples and the precisions the search may give a layer (float always allowed).
CALIBRATION_PRESETS: dict[str, dict[str, Any]] = {
    "accuracy": {"budget": "cosine>=0.999", "precisions": ("int8",)},
    "balanced": {"budget": "cosine>=0.99", "precisions": ("int4", "int8")},
    "memory": {"budget": "cosine>=0.98", "precisions": ("ternary", "int4", "int8")},
    # performance: int8 activations (the fast integer ops), and each layer's
    # representations timed against float for its shape on this CPU
    # (calibration.speed): slower ones are not considered. The budget is
    # checked on the converted model, which sees the activations' error.
    "performance": {"budget": "cosine>=0.99", "precisions": ("ternary", "int4", "int8"), "speed": True,
                    "activations": "int8"},
    # Float weights stay float: the calibration applies the preset as it is.
    "bitnet": {"budget": "cosine>=0.99", "precisions": ("ternary", "int4", "int8")},
}


def _settings_from(raw: dict[str, Any], base: LayerSettings, where: str) -> LayerSettings:
    unknown = set(raw) - _SETTING_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {sorted(_SETTING_FIELDS)}")
    settings = dataclasses.replace(base, **raw)
    settings.validate(where)
    return settings


def _rule_from(raw: dict[str, Any], default: LayerSettings, index: int) -> LayerRule:
    where = f"rule {index}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected an object, got {type(raw).__name__}")
    match = raw.get("match", {})
    if not isinstance(match, dict):
        raise ConfigError(f"{where}: 'match' must be an object")
    unknown = set(match) - _MATCH_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown match key(s) {sorted(unknown)}; known: {sorted(_MATCH_FIELDS)}")
    if match.get("position") not in (None, *POSITIONS):
        raise ConfigError(f"{where}: position must be 'first' or 'last', got {match['position']!r}")
    overrides = {k: v for k, v in raw.items() if k != "match"}
    _settings_from(overrides, default, where)  # validates the combination
    return LayerRule(overrides=overrides, **match)


def config_from_dict(raw: dict[str, Any]) -> QuantConfig:
    """Build a QuantConfig; a "preset" key starts from that preset and the
    other keys refine it ("rules" given here come before the preset's)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config is an object, got {type(raw).__name__}")
    known = ("calibrated", "default", "float_storage", "float_weights", "min_params", "preset", "rules")
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)}; known: {', '.join(known)}")
    preset_name = raw.get("preset")
    base: dict[str, Any] = {}
    if preset_name is not None:
        if preset_name not in PRESETS:
            raise ConfigError(f"unknown preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
        base = PRESETS[preset_name]
    default = _settings_from({**base.get("default", {}), **raw.get("default", {})}, LayerSettings(), "default")
    rules_raw = list(raw.get("rules", [])) + list(base.get("rules", []))
    rules = tuple(_rule_from(r, default, i) for i, r in enumerate(rules_raw))
    min_params = raw.get("min_params", base.get("min_params", 0))
    if not isinstance(min_params, int) or min_params < 0:
        raise ConfigError(f"min_params must be a non-negative integer, got {min_params!r}")
    float_weights = raw.get("float_weights", base.get("float_weights", "quantize"))
    if float_weights not in FLOAT_WEIGHTS:
        raise ConfigError(f"float_weights must be one of {', '.join(FLOAT_WEIGHTS)}, got {float_weights!r}")
    float_storage = raw.get("float_storage", base.get("float_storage", "bf16"))
    if float_storage not in FLOAT_STORAGE:
        raise ConfigError(f"float_storage must be one of {', '.join(FLOAT_STORAGE)}, got {float_storage!r}")
    calibrated = raw.get("calibrated")
    if calibrated is not None and not isinstance(calibrated, str):
        raise ConfigError(f"calibrated must be the budget string calibration used, got {calibrated!r}")
    return QuantConfig(default=default, rules=rules, min_params=min_params, preset=preset_name,
                       float_weights=float_weights, float_storage=float_storage, calibrated=calibrated)


def preset(name: str) -> QuantConfig:
    return config_from_dict({"preset": name})


def _read_config_file(path: Path) -> Any:
    """A config file's content: TOML for a .toml file, JSON otherwise."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None


def load_config(source: QuantConfig | dict[str, Any] | str | Path | None, preset_name: str | None = "bitnet") -> QuantConfig:
    """A config from an object, a dict, a JSON file path, or (None) the named preset."""
    if isinstance(source, QuantConfig):
        return source
    if source is None:
        if preset_name is None:
            raise ConfigError("give a config or a preset")
        return preset(preset_name)
    if isinstance(source, (str, Path)):
        source = _read_config_file(Path(source))
    if isinstance(source, dict):
        # A given config stands on its own: it uses a preset only when it names one.
        return config_from_dict(source)
    raise ConfigError(f"cannot read a config from a {type(source).__name__}")
