"""Per-layer precision config: presets, first-match rules, JSON files, errors."""

import json

import numpy as np
import pytest

from onnxbit.config import ConfigError, LayerSettings, config_from_dict, load_config, preset


def test_presets():
    bitnet = preset("bitnet")
    assert bitnet.default.precision == "ternary" and bitnet.default.format is None  # formats.STORAGE_DEFAULT
    assert bitnet.settings_for("lm_head", "MatMul", {"last"}, 10**6)[0].precision == "fp32"
    assert bitnet.settings_for("q_proj", "MatMul", {"first"}, 10**6)[0].precision == "ternary"
    int4 = preset("int4").default
    assert (int4.precision, int4.granularity, int4.group_size, int4.symmetric) == ("int4", "group", 32, False)
    assert preset("int8").default == LayerSettings(precision="int8", granularity="channel", activations="int8")
    assert preset("int4").default.activations == "int8"


def test_first_matching_rule_wins_and_keeps_unset_fields_from_default():
    cfg = config_from_dict({
        "default": {"precision": "int8", "granularity": "channel"},
        "rules": [{"match": {"name": "*attn*", "op_type": "MatMul"}, "precision": "ternary"},
                  {"match": {"name": "*attn*"}, "precision": "int4", "granularity": "group", "group_size": 64},
                  {"match": {"max_params": 100}, "precision": "fp32"}],
        "min_params": 10})
    settings, origin = cfg.settings_for("layer0/attn/q", "MatMul", set(), 4096)
    assert (settings.precision, settings.granularity) == ("ternary", "channel")
    assert origin == "rule 0: name=*attn*, op_type=MatMul"
    assert cfg.settings_for("layer0/attn/q", "Gemm", set(), 4096)[0].group_size == 64
    assert cfg.settings_for("mlp", "Gemm", set(), 50)[1] == "rule 2: max_params=100"
    assert cfg.settings_for("mlp", "Gemm", set(), 5) == (LayerSettings(precision="fp32", granularity="channel"),
                                                        "fewer than min_params=10 weights")
    assert cfg.settings_for("mlp", "Gemm", set(), 4096)[1] == "default"


def test_config_file_and_preset_refinement(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"preset": "bitnet", "default": {"format": "base3"},
                                "rules": [{"match": {"position": "last"}, "precision": "int8"}]}))
    cfg = load_config(path)
    assert cfg.default.format == "base3" and cfg.default.precision == "ternary"
    # The file's own rule comes before the preset's "last layer stays float".
    assert cfg.settings_for("head", "MatMul", {"last"}, 10**6)[0].precision == "int8"
    assert load_config(None, "int8") == preset("int8")


@pytest.mark.parametrize("raw, message", [
    ({"default": {"precison": "int4"}}, r"unknown setting\(s\) \['precison'\]"),
    ({"rules": [{"match": {"layer": "x"}, "precision": "int8"}]}, r"rule 0: unknown match key\(s\) \['layer'\]"),
    ({"rules": [{"match": {"position": "middle"}}]}, "position must be 'first' or 'last'"),
    ({"default": {"granularity": "group"}}, "needs a positive group_size"),
    ({"default": {"group_size": 32}}, "only meaningful with granularity 'group'"),
    ({"preset": "int3"}, "unknown preset 'int3'"),
    ({"min_params": -1}, "min_params must be a non-negative integer"),
    ({"layers": []}, r"unknown config key\(s\) \['layers'\]"),
])
def test_malformed_configs_name_the_problem(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_missing_or_invalid_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)


def test_toml_config_files(tmp_path):
    from onnxbit.config import load_config

    path = tmp_path / "layers.toml"
    path.write_text('preset = "int8"\nmin_params = 64\n\n[[rules]]\nmatch = { name = "*head*" }\nprecision = "fp32"\n')
    config = load_config(str(path))
    assert config.preset == "int8" and config.min_params == 64
    assert config.settings_for("lm_head", "MatMul", set(), 10**6)[0].precision == "fp32"
    path.write_text("preset = [\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(str(path))
    path.write_text('[default]\nprecison = "int8"\n')
    with pytest.raises(ConfigError, match="default: unknown setting\\(s\\) \\['precison'\\]; known: .*'precision'"):
        load_config(str(path))


@pytest.mark.parametrize("scale", ["absmean", "lsq"])
def test_a_ternary_scale_rule_reaches_the_quantizer(scale):
    """"scale" in a rule is the scale rule the converted weights carry: the
    converted model equals the float model with those dequantized weights."""
    from pathlib import Path

    import onnx
    import onnxruntime as ort

    from onnxbit.convert import convert
    from onnxbit.quant import quantize_ternary

    fixtures = Path(__file__).resolve().parent.parent / "models" / "fixtures"
    model = onnx.load(fixtures / "digits_float_mlp.onnx")  # Gemm transB=1: weights stored [N, K]
    settings = {"precision": "ternary", "granularity": "channel", "method": "median-factor", "scale": scale}
    converted = convert(model, config={"float_weights": "quantize", "default": settings}, target="onnx",
                        progress=False, measure_error=False).model
    expected = onnx.ModelProto()
    expected.CopyFrom(model)
    for tensor in expected.graph.initializer:
        if tensor.name.endswith(".weight"):
            w = onnx.numpy_helper.to_array(tensor)
            q = quantize_ternary(w.T, method="median-factor", granularity="channel", scale=scale).dequantize()
            tensor.CopyFrom(onnx.numpy_helper.from_array(q.T.astype(np.float32), tensor.name))
    x = np.load(fixtures / "digits_test.npz")["X_test"].astype(np.float32)[:30]
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"pixels": x})[0]
    np.testing.assert_allclose(run(converted), run(expected), rtol=1e-4, atol=1e-4)
