"""onnxbit.convert: the input is never modified, output is atomic, errors are
clear, exact ternary weights stay exact, shared weights are packed once."""

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import fold_chains as fc
from onnx_models import init, make_model, mlp, ternary_matrix, value
from onnxbit import codecs
from onnxbit.config import ConfigError
from onnxbit.convert import convert, quantize
from onnxbit.passes.manager import ModelError
from onnxbit.runtime import InferenceSession


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def initializer(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


def test_input_file_and_proto_are_never_modified(tmp_path, rng):
    model, _ = mlp(rng)
    src = tmp_path / "in.onnx"
    onnx.save(model, src)
    before_file, before_proto = sha(src), model.SerializeToString()
    quantize(src, output_path=tmp_path / "out.onnx", progress=False)
    quantize(model, preset="int4", target="onnx", progress=False)
    assert sha(src) == before_file
    assert model.SerializeToString() == before_proto
    with pytest.raises(ValueError, match="is the input model"):
        quantize(src, output_path=src, progress=False)
    assert sha(src) == before_file


def test_output_is_written_atomically_and_failures_leave_old_output(tmp_path, rng):
    model, _ = mlp(rng)
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(ConfigError):
        quantize(model, config={"default": {"precision": "ternary", "format": "base3"}}, target="ort",
                 output_path=out, progress=False)
    assert out.read_bytes() == b"previous"
    written = quantize(model, preset="ternary", output_path=out, report_path=tmp_path / "r.json", progress=False)
    assert onnx.load(out) == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "r.json"]  # no temp files left
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["layers_converted"] == 1  # ternary keeps the last layer float
    by_node = {layer["node"]: layer for layer in report["layers"]}
    assert by_node["fc2"]["action"] == "skipped" and "rule 0" in by_node["fc2"]["reason"]
    assert by_node["fc1"]["storage"] == "TernaryMatMul/base3"


def test_already_ternary_weights_decode_bit_identically(rng):
    w_tensor = ternary_matrix(rng, 64, 48, scale=0.0371)
    w_channel = ternary_matrix(rng, 48, 40, per_channel=True)
    nodes = [helper.make_node("MatMul", ["x", "Wt"], ["h"], name="mm_tensor"),
             helper.make_node("MatMul", ["h", "Wc"], ["y"], name="mm_channel")]
    model = make_model(nodes, [value("x", [3, 64])], [value("y", [3, 40])], [init("Wt", w_tensor), init("Wc", w_channel)])
    for granularity in ("tensor", "channel"):
        cfg = {"default": {"precision": "ternary", "granularity": granularity}}
        out = convert(model, config=cfg, progress=False)
        for node, w in (("mm_tensor", w_tensor), ("mm_channel", w_channel)):
            op = next(n for n in out.model.graph.node if n.name == node)
            packed = onnx.numpy_helper.to_array(initializer(out.model, op.input[1]))
            scales = onnx.numpy_helper.to_array(initializer(out.model, op.input[2]))
            decoded = codecs.unpack_ternary_f32(packed, w.shape[0], "base3", np.broadcast_to(scales, (w.shape[1],)))
            np.testing.assert_array_equal(decoded.T, w)
        layer = {r.node: r for r in out.report.layers}["mm_tensor"]
        assert layer.weight_error["mse"] == 0.0


def test_qat_graph_is_folded_then_packed_from_proven_codes(rng):
    b = fc.GraphBuilder()
    codes_nk, w_nk = fc.noisy_absmean_weight(rng, 32, 64)
    x_q = fc.activation_absmax_chain(b, "x")
    w_q = fc.weight_absmean_chain(b, w_nk)
    b.op("MatMul", [x_q, w_q], node_name="bitlinear")
    model = b.model([fc.float_input("x", [4, 64])], [helper.make_tensor_value_info(b.nodes[-1].output[0],
                                                                                   TensorProto.FLOAT, [4, 32])])
    x = rng.standard_normal((4, 64)).astype(np.float32)
    expected = fc.run_plain(model, {"x": x})[0]
    result = convert(model, preset="bitnet", progress=False)
    ops = [n.op_type for n in result.model.graph.node]
    assert ops == ["TernaryMatMul"], ops
    op = result.model.graph.node[0]
    packed = onnx.numpy_helper.to_array(initializer(result.model, op.input[1]))
    np.testing.assert_array_equal(codecs.unpack_ternary(packed, 64, "base3"), codes_nk)
    assert {a.name: helper.get_attribute_value(a) for a in op.attribute}["act_quant"] == 1
    record = next(r for r in result.report.layers if r.node == "bitlinear" and r.action == "converted")
    assert "exact codes" in record.reason
    actual = InferenceSession(result.model).run(None, {"x": x})[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # Only a rule naming the layer keeps a proven ternary weight float.
    kept = convert(model, config={"preset": "bitnet", "rules": [{"match": {"name": "bitlinear"}, "precision": "fp32"}]},
                   progress=False)
    assert "TernaryMatMul" not in [n.op_type for n in kept.model.graph.node]
    assert {r.node: r.reason for r in kept.report.layers if r.action == "skipped"}["bitlinear"] == \
        "kept float (rule 0: name=bitlinear)"
    # The folded activation quantization is put back in front of the float layer.
    float_out = fc.run_plain(kept.model, {"x": x})[0]
    np.testing.assert_allclose(float_out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_shared_weight_is_packed_once(rng):
    w = rng.standard_normal((32, 16)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y1"], name="a"),
             helper.make_node("MatMul", ["x", "W"], ["y2"], name="b"),
             helper.make_node("Add", ["y1", "y2"], ["y"], name="add")]
    model = make_model(nodes, [value("x", [2, 32])], [value("y", [2, 16])], [init("W", w)])
    for target in ("onnxbit", "ort", "onnx"):
        out = convert(model, config={"default": {"precision": "int8", "granularity": "channel"}}, target=target,
                      progress=False)
        quantized = [t for t in out.model.graph.initializer if t.data_type != TensorProto.FLOAT]
        assert len(quantized) == 1, target
        layers = {r.node: r for r in out.report.layers}
        assert layers["b"].reason == "shares the packed weight of 'a'" and layers["b"].bytes_after == 0
        assert out.report.weight_bytes_before == w.nbytes
        assert not [n for n in out.report.notes if "stored differently" in n] and not out.report.growth_summary()


def test_weight_shared_by_converted_and_float_layers_is_reported(tmp_path, rng):
    """A weight one layer converts and another keeps float is in the file twice: the report
    names the layers and says the model grew, with the numbers."""
    w = rng.standard_normal((256, 256)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="first"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "W"], ["y"], name="tied")]
    model = make_model(nodes, [value("x", [2, 256])], [value("y", [2, 256])], [init("W", w)])
    source = tmp_path / "tied.onnx"
    onnx.save(model, source)
    config = {"default": {"precision": "ternary"}, "rules": [{"match": {"name": "tied"}, "precision": "fp32"}]}
    report = convert(source, config=config, output_path=tmp_path / "out.onnx", progress=False).report
    notes = [n for n in report.notes if "stored differently" in n]
    assert len(notes) == 1 and "'first' as ternary" in notes[0] and "'tied' as float" in notes[0], report.notes
    assert report.model_bytes_after > report.model_bytes_before
    assert report.growth_summary().startswith("the converted model is larger than the original")
    assert f"+{(report.model_bytes_after - report.model_bytes_before) / 1024:.1f} KiB" in report.growth_summary()


def test_if_subgraph_layers_are_converted_and_run(rng):
    w = ternary_matrix(rng, 16, 8, scale=0.5)
    then = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["yt"], name="then_mm")], "then", [],
                             [value("yt", [2, 8])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["xn"], name="neg"),
                               helper.make_node("MatMul", ["xn", "W"], ["ye"], name="else_mm")], "else", [],
                              [value("ye", [2, 8])])
    nodes = [helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then, else_branch=other)]
    model = make_model(nodes, [value("x", [2, 16]), value("cond", [], TensorProto.BOOL)], [value("y", [2, 8])],
                       [init("W", w)])
    out = convert(model, config={"default": {"precision": "ternary"}}, progress=False)
    assert {r.node for r in out.report.layers if r.action == "converted"} == {"then_mm", "else_mm"}
    session = InferenceSession(out.model)
    x = rng.standard_normal((2, 16)).astype(np.float32)
    for cond, sign in ((True, 1), (False, -1)):
        y = session.run(None, {"x": x, "cond": np.array(cond)})[0]
        np.testing.assert_allclose(y, sign * (x @ w), rtol=1e-5, atol=1e-5)


def test_gemm_trans_a_and_dynamic_c_with_beta(rng):
    b = rng.standard_normal((8, 4)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["xt", "B", "c"], ["y"], name="gemm", transA=1, beta=0.25, alpha=2.0)]
    model = make_model(nodes, [value("xt", [8, 3]), value("c", [3, 4])], [value("y", [3, 4])], [init("B", b)])
    xt = rng.standard_normal((8, 3)).astype(np.float32)
    c = rng.standard_normal((3, 4)).astype(np.float32)
    out = convert(model, config={"default": {"precision": "int8", "granularity": "channel"}}, target="ort",
                  progress=False)
    # int8 with float activations: DequantizeLinear + MatMul (see targets/integer_layers.py)
    assert sorted(n.op_type for n in out.model.graph.node) == ["Add", "DequantizeLinear", "MatMul", "Mul",
                                                               "Transpose"]
    from onnxbit.quant import quantize_int

    wq = quantize_int(b * np.float32(2.0), 8, granularity="channel").dequantize()
    y = ort.InferenceSession(out.model.SerializeToString()).run(None, {"xt": xt, "c": c})[0]
    np.testing.assert_allclose(y, xt.T @ wq + 0.25 * c, rtol=1e-5, atol=1e-5)


def test_opset_is_raised_through_the_version_converter(rng):
    # ReduceMean's axes moved from attribute to input at opset 18: the upgrade must rewrite it.
    w = rng.standard_normal((8, 4)).astype(np.float32)
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], name="mean", axes=[1], keepdims=1),
             helper.make_node("Sub", ["x", "m"], ["xc"], name="center"),
             helper.make_node("MatMul", ["xc", "W"], ["y"], name="mm")]
    model = make_model(nodes, [value("x", [2, 8])], [value("y", [2, 4])], [init("W", w)], opset=17)
    out = convert(model, config={"default": {"precision": "int4", "granularity": "channel"}}, target="onnx",
                  progress=False)
    assert {o.domain: o.version for o in out.model.opset_import}[""] == 21
    assert any("raised from 17 to 21" in n for n in out.report.notes)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    from onnxbit.quant import quantize_int

    expected = (x - x.mean(axis=1, keepdims=True)) @ quantize_int(w, 4, granularity="channel").dequantize()
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    y = ort.InferenceSession(out.model.SerializeToString(), options).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_malformed_model_error_names_the_node(rng):
    model, _ = mlp(rng)
    model.graph.node[0].input.append("W1")  # MatMul with three inputs
    with pytest.raises(ModelError, match="fc1"):
        quantize(model, progress=False)


@pytest.mark.parametrize("target, settings, message", [
    ("ort", {"precision": "ternary", "format": "base3"}, "format 'base3' exists only"),
    ("onnx", {"precision": "int8", "act_quant": 1}, "act_quant=1"),
    ("ort", {"precision": "int4", "granularity": "group", "group_size": 24}, "power of two"),
    ("onnxbit", {"precision": "int3"}, "unknown precision 'int3'"),
    ("tpu", {"precision": "int8"}, "unknown target 'tpu'"),
])
def test_precision_the_target_cannot_express_is_a_clear_error(rng, target, settings, message):
    model, _ = mlp(rng)
    with pytest.raises(ConfigError, match=message):
        quantize(model, config={"default": settings}, target=target, progress=False)


def test_rules_min_params_and_progress_callback(rng):
    model, _ = mlp(rng, k=64, hidden=48, n=8)
    seen = []
    cfg = {"default": {"precision": "int8", "granularity": "channel"}, "min_params": 1000,
           "rules": [{"match": {"name": "fc*", "position": "first"}, "precision": "ternary"}]}
    out = convert(model, config=cfg, progress=lambda name, done, total: seen.append((name, done, total)))
    layers = {r.node: r for r in out.report.layers}
    assert layers["fc1"].precision == "ternary"
    assert layers["fc2"].action == "skipped" and "min_params=1000" in layers["fc2"].reason  # 48 x 8 weights
    assert seen == [("fc1", 1, 2), ("fc2", 2, 2)]


def test_loop_body_layer_with_outer_scope_weight_is_converted(rng):
    w = ternary_matrix(rng, 8, 8, scale=0.5)
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
         helper.make_node("MatMul", ["h_in", "W"], ["h_out"], name="loop_mm")],
        "body", [value("i", [], TensorProto.INT64), value("cond_in", [], TensorProto.BOOL), value("h_in", [2, 8])],
        [value("cond_out", [], TensorProto.BOOL), value("h_out", [2, 8])])
    nodes = [helper.make_node("Loop", ["trips", "", "x"], ["h"], name="loop", body=body)]
    model = make_model(nodes, [value("x", [2, 8]), value("trips", [], TensorProto.INT64)], [value("h", [2, 8])],
                       [init("W", w)])
    out = convert(model, config={"default": {"precision": "ternary"}}, progress=False)
    assert [r.node for r in out.report.layers if r.action == "converted"] == ["loop_mm"]
    x = rng.standard_normal((2, 8)).astype(np.float32)
    y = InferenceSession(out.model).run(None, {"x": x, "trips": np.array(3, np.int64)})[0]
    np.testing.assert_allclose(y, x @ w @ w @ w, rtol=1e-5, atol=1e-5)


def test_bias_add_is_fused_into_the_op(rng):
    w = rng.standard_normal((16, 8)).astype(np.float32)
    b = rng.standard_normal((1, 8)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["p"], name="linear"),
             helper.make_node("Add", ["p", "b"], ["y"], name="bias")]
    model = make_model(nodes, [value("x", [3, 16])], [value("y", [3, 8])], [init("W", w), init("b", b)])
    x = rng.standard_normal((3, 16)).astype(np.float32)
    for target, op in (("onnxbit", "TernaryMatMul"), ("ort", "MatMulNBits")):
        out = convert(model, config={"default": {"precision": "ternary", "granularity": "channel"}}, target=target,
                      progress=False)
        assert [n.op_type for n in out.model.graph.node] == [op]
        from onnxbit.quant import quantize_ternary

        expected = x @ quantize_ternary(w, granularity="channel").dequantize() + b
        session = InferenceSession(out.model) if target == "onnxbit" else ort.InferenceSession(
            out.model.SerializeToString())
        np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-5)
