"""The pipeline's structure: passes run once each, in an order their
contracts allow; targets, layer kinds and formats come from one registry
each; the converter's output reads back through the same target objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnx_models import mlp
from onnxbit import config, formats, native, targets
from onnxbit.config import load_config
from onnxbit.convert import convert
from onnxbit.errors import ConfigError
from onnxbit.inspect_model import inspect_model
from onnxbit.passes.base import PassOrderError
from onnxbit.passes.find_weights import FindWeightsPass
from onnxbit.passes.fold import WeightAbsmeanFold, qat_passes
from onnxbit.passes.manager import PassManager, default_opset, default_passes
from onnxbit.passes.pack_weights import PackWeightsPass

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"


class Counting:
    """Wraps a pass and counts its runs."""

    def __init__(self, inner):
        self.inner = inner
        self.runs = 0
        for attr in ("name", "requires", "ensures", "must_precede", "contract"):
            setattr(self, attr, getattr(inner, attr))

    def run(self, ctx):
        self.runs += 1
        return self.inner.run(ctx)


def test_a_conversion_that_raises_the_opset_runs_each_pass_once():
    model = onnx.load(str(FIXTURES / "digits_float_mlp.onnx"))
    assert default_opset(model) < 21
    passes = [Counting(p) for p in default_passes()]
    manager = PassManager(passes, target="onnx", config=load_config(None, "int4"))
    out, ctx = manager.run(model)
    assert manager.runs == 1
    assert [p.runs for p in passes] == [1] * len(passes)
    assert default_opset(out) == 21  # DequantizeLinear with blocked INT4 scales
    assert [name for name, _ in ctx.results] == [p.name for p in passes]
    assert any("default opset raised from 18 to 21" in note for note in ctx.notes)


def test_a_float_weight_that_turns_out_ternary_is_the_one_case_run_twice(rng):
    # The config plans int8 (opset 13), but the weight is exactly ternary:
    # the fold makes it ternary, INT2 on target onnx needs opset 25.
    model, weights = mlp(rng)
    ternary = np.sign(weights["W1"]).astype(np.float32) * np.float32(0.5)
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(ternary, "W1"))
    manager = PassManager(default_passes(), target="onnx", config=load_config(None, "int8"))
    out, ctx = manager.run(model)
    assert manager.runs == 2 and default_opset(out) == 25
    assert any("ran twice" in note for note in ctx.notes)


def test_pass_order_is_checked_before_anything_runs():
    with pytest.raises(PassOrderError, match="'pack_weights' .* requires \\['weight-sites'\\]"):
        PassManager([PackWeightsPass()])
    with pytest.raises(PassOrderError, match="'fold-weight-absmean' .* must run before .*weight-sites"):
        PassManager([FindWeightsPass(), WeightAbsmeanFold(), PackWeightsPass()])
    with pytest.raises(PassOrderError, match="'fold-activation-absmax' .* requires \\['weight-proofs'\\]"):
        PassManager([qat_passes()[-1], FindWeightsPass(), PackWeightsPass()])
    PassManager(default_passes())  # the default pipeline is in order


def test_registries_agree():
    assert config.TARGETS == targets.NAMES
    assert config.FORMATS == formats.NAMES
    ffi, lib = native.ffi(), native.lib()
    assert lib.OBX_FMT_COUNT == len(formats.FORMATS)
    for fmt in formats.FORMATS.values():
        assert ffi.string(lib.obx_format_name(fmt.id)).decode() == fmt.name
        assert lib.obx_format_codes_per_byte(fmt.id) == fmt.codes_per_byte
        assert lib.obx_format_bits_per_weight(fmt.id) == fmt.bits_per_weight
        for k in (0, 1, 7, 4096, 4097):
            assert lib.obx_packed_row_bytes(fmt.id, k) == fmt.row_bytes(k)


@pytest.mark.parametrize("name", targets.NAMES)
def test_targets_say_what_they_cannot_express(name):
    target = targets.get_target(name)
    act_quant_int8 = load_config({"default": {"precision": "int8", "act_quant": 1}}).default
    with pytest.raises(ConfigError, match="layer 'x': act_quant=1 .* not 'int8'"):
        target.check(act_quant_int8, "layer 'x'")
    base3 = load_config({"default": {"precision": "ternary", "format": "base3"}}).default
    if name == "onnxbit":
        target.check(base3, "layer 'x'")
    else:
        with pytest.raises(ConfigError, match="format 'base3' exists only in the onnxbit TernaryMatMul op"):
            target.check(base3, "layer 'x'")
    with pytest.raises(ConfigError, match="unknown target 'tflite'; choose one of onnxbit, ort, onnx"):
        targets.get_target("tflite")


@pytest.mark.parametrize("name", targets.NAMES)
@pytest.mark.parametrize("preset", ["ternary", "int4", "int8"])
def test_inspect_reads_layers_back_through_the_targets(rng, name, preset):
    model, _ = mlp(rng)
    result = convert(model, preset=preset, target=name, progress=False)
    converted = {r.node: r for r in result.report.layers if r.action == "converted"}
    assert converted
    seen = {layer.node: layer for layer in inspect_model(result.model).layers}
    for node, record in converted.items():
        assert seen[node].storage == record.storage
        assert seen[node].bytes == record.bytes_after
        assert seen[node].precision == record.precision or record.precision == "ternary"
