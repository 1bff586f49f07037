"""Calibration of Conv layers: the im2col X^T X against a brute-force unfold,
a small CNN calibrated and converted to exactly what the probe predicted,
and the layers calibration leaves out saying why."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxbit import runtime
from onnxbit.calibration import calibrate, load_calibration_data
from onnxbit.calibration.conv_rows import MAX_GRAM_K, conv_gram, im2col_chunks, output_positions
from onnxbit.calibration.result import load_calibration
from onnxbit.cli.main import main
from onnxbit.convert import convert
from onnxbit.layers.conv import ConvSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conv_models import conv_chain_model  # noqa: E402


def _brute_rows(x: np.ndarray, spec: ConvSpec, pads: list[int]) -> list[np.ndarray]:
    """Per group, the im2col rows [positions, K] of a 2-D Conv by explicit loops."""
    m, per_group, kh, kw = spec.weight_shape
    sh, sw = spec.attrs.get("strides", [1, 1])
    dh, dw = spec.attrs.get("dilations", [1, 1])
    top, left, bottom, right = pads
    padded = np.pad(x, [(0, 0), (0, 0), (top, bottom), (left, right)])
    height = (padded.shape[2] - (kh - 1) * dh - 1) // sh + 1
    width = (padded.shape[3] - (kw - 1) * dw - 1) // sw + 1
    groups = []
    for g in range(spec.group):
        rows = []
        for b in range(x.shape[0]):
            for i in range(height):
                for j in range(width):
                    row = [padded[b, g * per_group + c, i * sh + a * dh, j * sw + e * dw]
                           for c in range(per_group) for a in range(kh) for e in range(kw)]
                    rows.append(row)
        groups.append(np.asarray(rows, np.float64))
    return groups


GEOMETRIES = [  # (weight shape, attributes, explicit pads the attributes mean on a 9 x 11 input)
    ((4, 3, 3, 3), {"strides": [2, 2], "pads": [1, 0, 2, 1]}, [1, 0, 2, 1]),
    ((6, 2, 3, 2), {"group": 3, "pads": [0, 1, 0, 1], "dilations": [2, 1]}, [0, 1, 0, 1]),
    ((9, 1, 2, 3), {"group": 9, "strides": [2, 1], "auto_pad": "SAME_UPPER"}, [0, 1, 1, 1]),
    ((9, 1, 2, 2), {"group": 9, "auto_pad": "SAME_LOWER"}, [1, 1, 0, 0]),
    ((5, 9, 1, 1), {"auto_pad": "VALID"}, [0, 0, 0, 0]),
]


@pytest.mark.parametrize("shape,attrs,pads", GEOMETRIES)
def test_im2col_gram_matches_a_brute_force_unfold_and_the_conv_itself(shape, attrs, pads):
    rng = np.random.default_rng(0)
    group = attrs.get("group", 1)
    x = rng.standard_normal((2, shape[1] * group, 9, 11)).astype(np.float32)
    spec = ConvSpec("Conv", shape, group, attrs)
    brute = _brute_rows(x, spec, pads)
    gram = conv_gram(x, spec, chunk_bytes=1000)  # tiny chunks: several per sample
    assert gram.shape == (group, brute[0].shape[1], brute[0].shape[1])
    for g in range(group):
        np.testing.assert_allclose(gram[g], brute[g].T @ brute[g], rtol=1e-12, atol=1e-9)
    assert output_positions(spec, (9, 11)) * 2 == brute[0].shape[0]
    # The rows times the layer's [K, N] view (rows of the weight, transposed) are the Conv's outputs.
    weight = rng.standard_normal(shape).astype(np.float32)
    node = helper.make_node("Conv", ["X", "W"], ["Y"], **attrs)
    graph = helper.make_graph([node], "one", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "W")])
    y = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                             .SerializeToString()).run(None, {"X": x})[0]
    view = spec.rows_of(weight).T.astype(np.float64)  # [K, M]
    per_group = shape[0] // group
    for g in range(group):
        expected = y[:, g * per_group:(g + 1) * per_group].transpose(0, 2, 3, 1).reshape(-1, per_group)
        np.testing.assert_allclose(brute[g] @ view[:, g * per_group:(g + 1) * per_group], expected, atol=1e-4)


def test_one_dimensional_conv_rows():
    x = np.random.default_rng(1).standard_normal((3, 4, 17)).astype(np.float32)
    spec = ConvSpec("Conv", (2, 4, 5), 1, {"strides": [3], "pads": [2, 1], "dilations": [2]})
    padded = np.pad(x, [(0, 0), (0, 0), (2, 1)])
    rows = np.asarray([[padded[b, c, i * 3 + t * 2] for c in range(4) for t in range(5)]
                       for b in range(3) for i in range((20 - 9) // 3 + 1)], np.float64)
    np.testing.assert_allclose(conv_gram(x, spec)[0], rows.T @ rows, rtol=1e-12)
    with pytest.raises(ValueError, match="input has 5 channels"):
        next(im2col_chunks(np.zeros((1, 5, 17), np.float32), spec))


def test_grouped_gptq_quantizes_each_column_block_with_its_own_inputs():
    from onnxbit.quant.gptq import quantize_int_gptq, quantize_int_gptq_column_groups

    rng = np.random.default_rng(4)
    w = rng.standard_normal((40, 6)).astype(np.float32)
    xs = [rng.standard_normal((200, 40)) * rng.uniform(0.1, 3, 40) for _ in range(3)]
    hs = np.stack([x.T @ x for x in xs])
    grouped = quantize_int_gptq_column_groups(w, hs, 4, symmetric=False, granularity="group", group_size=32)
    for g, h in enumerate(hs):
        alone = quantize_int_gptq(w[:, 2 * g:2 * g + 2], h, 4, symmetric=False, granularity="group", group_size=32)
        np.testing.assert_array_equal(grouped.codes[:, 2 * g:2 * g + 2], alone.codes)
        np.testing.assert_array_equal(grouped.scales[:, 2 * g:2 * g + 2], alone.scales)
        np.testing.assert_array_equal(grouped.zero_points[:, 2 * g:2 * g + 2], alone.zero_points)
    assert grouped.scales.shape == (2, 6) and grouped.dequantize().shape == (40, 6)
    with pytest.raises(ValueError, match="groups dividing 6"):
        quantize_int_gptq_column_groups(w, np.concatenate([hs, hs[:1]]), 4)


def small_cnn(rng: np.random.Generator, wide: int = 0) -> onnx.ModelProto:
    """[n, 3, 16, 16] -> Conv s2 -> depthwise -> pointwise -> global pool -> Gemm [n, 10].
    wide: channels of an extra 3x3 Conv whose K (wide * 9) can exceed MAX_GRAM_K."""
    layers = [("stem", (16, 3, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
              ("depthwise", (16, 1, 3, 3), {"group": 16, "pads": [1, 1, 1, 1]}),
              ("pointwise", (wide or 24, 16, 1, 1), {})]
    if wide:
        layers.append(("wide", (8, wide, 3, 3), {"pads": [1, 1, 1, 1]}))
    nodes, inits, current, channels = [], [], "X", 3
    for name, shape, attrs in layers:
        w = (rng.standard_normal(shape) / math.sqrt(np.prod(shape[1:]))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"{name}.weight"),
                  numpy_helper.from_array((rng.standard_normal(shape[0]) * 0.1).astype(np.float32), f"{name}.bias")]
        nodes += [helper.make_node("Conv", [current, f"{name}.weight", f"{name}.bias"], [f"{name}.out"], name=name,
                                   **attrs),
                  helper.make_node("Relu", [f"{name}.out"], [f"{name}.relu"], name=f"{name}.act")]
        current, channels = f"{name}.relu", shape[0]
    head = (rng.standard_normal((10, channels)) / math.sqrt(channels)).astype(np.float32)
    inits.append(numpy_helper.from_array(head, "head.weight"))
    nodes += [helper.make_node("GlobalAveragePool", [current], ["pooled"], name="pool"),
              helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "head.weight"], ["Y"], name="head", transB=1)]
    graph = helper.make_graph(nodes, "small_cnn", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                                  ["n", 3, 16, 16])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("cnn")
    model = small_cnn(rng)
    onnx.save(model, folder / "cnn.onnx")
    np.savez(folder / "images.npz", X=rng.standard_normal((60, 3, 16, 16)).astype(np.float32))
    return folder / "cnn.onnx", folder / "images.npz"


def _converted_and_predicted(model_path, result, tmp_path, feeds):
    """The model converted from the calibration file (as `quantize --calibration`
    does), its outputs, and what the probe predicted for the chosen precisions."""
    from onnxbit.calibration.probe import Probe
    from onnxbit.calibration.search import _candidate_layers

    result.write_json(tmp_path / "calib.json")
    converted = convert(str(model_path), config=load_calibration(tmp_path / "calib.json"), progress=False,
                        measure_error=False).model
    session = runtime.InferenceSession(converted)
    outputs = [session.run(None, feed) for feed in feeds]
    proto = onnx.load(model_path)
    layers, _, transposed, weights = _candidate_layers(proto)
    chosen = {l.node: l for l in result.layers}
    for layer in layers:  # the probe of the calibrated layers: their chosen settings and codes
        for field in ("precision", "ternary_method", "ternary_scale", "ternary_granularity", "compensated",
                      "quantized"):
            setattr(layer, field, getattr(chosen[layer.node], field))
    probe = Probe(proto, layers, transposed, weights)
    probe._results.update({(l.node, l.precision): l.quantized for l in layers if l.uses_codes()})
    predicted = probe.run({l.node: l.precision for l in layers}, feeds)
    return converted, outputs, predicted


@pytest.mark.parametrize("precisions", [("ternary", "int4", "int8"), ("ternary",)])
def test_a_small_cnn_calibrates_and_converts_to_what_the_probe_predicted(cnn, tmp_path, precisions):
    model_path, images = cnn
    result = calibrate(str(model_path), str(images), "cosine>=0.97", precisions=precisions)
    convs = [l for l in result.layers if l.op == "Conv"]
    assert [l.node for l in convs] == ["stem", "depthwise", "pointwise"]
    assert all(set(l.sensitivity) == set(precisions) for l in convs)
    assert any(l.precision != "fp32" for l in convs)
    # Convs are error-compensated with their im2col X^T X (the depthwise one: one per group)
    by_name = {l.node: l for l in result.layers}
    assert all(by_name[n].compensated for n in ("stem", "depthwise", "pointwise"))
    assert (by_name["stem"].k, by_name["stem"].n) == (27, 16)
    assert "stem" not in result.skipped and result.met
    data = load_calibration_data(str(images), ["X"])
    converted, outputs, predicted = _converted_and_predicted(model_path, result, tmp_path, data.holdout)
    ops = {n.name: n.op_type for n in converted.graph.node}
    for layer in convs:
        if layer.precision in ("ternary", "binary"):
            # the real compiled op where it is the faster one (depthwise); onnxruntime's Conv on the folded
            # INT2 weight for dense layers with float activations (ternary_conv.float_as_standard)
            assert ops[layer.node] == ("TernaryConv" if layer.node == "depthwise" else "Conv")
    for mine, probe in zip(outputs, predicted):
        np.testing.assert_allclose(mine[0], probe[0], rtol=1e-4, atol=1e-5)
    # The budget holds on the converted model on the held-out samples, at the value reported.
    original = runtime.InferenceSession(str(model_path))
    reference = [original.run(None, feed) for feed in data.holdout]
    value = result.budget.measure(reference, outputs)
    assert result.budget.met(value) and value == pytest.approx(result.holdout_value, abs=1e-4)


def test_calibrate_and_quantize_a_cnn_from_the_command_line(cnn, tmp_path):
    model_path, images = cnn
    calib, out, page = tmp_path / "calib.json", tmp_path / "out.onnx", tmp_path / "calib.html"
    run = CliRunner().invoke(main, ["calibrate", str(model_path), "--data", str(images), "--budget", "cosine>=0.98",
                                    "-o", str(calib), "--html", str(page)])
    assert run.exit_code == 0, run.output
    saved = json.loads(calib.read_text())
    stem = next(l for l in saved["layers"] if l["node"] == "stem")
    assert stem["op"] == "Conv" and stem["weight_shape"] == [16, 3, 3, 3] and stem["precision"] != "fp32"
    assert "stem" in page.read_text()
    run = CliRunner().invoke(main, ["quantize", str(model_path), str(out), "--calibration", str(calib), "-q"])
    assert run.exit_code == 0, run.output
    x = np.load(images)["X"][:4]
    y = runtime.InferenceSession(str(out)).run(None, {"X": x})[0]
    assert np.isfinite(y).all() and y.shape == (4, 10)


def test_a_conv_whose_im2col_rows_are_too_long_is_calibrated_without_compensation(tmp_path):
    wide = MAX_GRAM_K // 9 + 1
    rng = np.random.default_rng(5)
    model = small_cnn(rng, wide=wide)
    np.savez(tmp_path / "x.npz", X=rng.standard_normal((10, 3, 16, 16)).astype(np.float32))
    result = calibrate(model, str(tmp_path / "x.npz"), "cosine>=0.9", precisions=("int8",))
    layer = next(l for l in result.layers if l.node == "wide")
    assert layer.k == wide * 9 > MAX_GRAM_K
    assert not layer.compensated and f"K={layer.k}" in layer.notes[0] and "int8" in layer.sensitivity


def test_conv_transpose_stays_float_and_says_why(tmp_path):
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "x.npz", X=rng.standard_normal((20, 6, 10, 10)).astype(np.float32))
    result = calibrate(conv_chain_model(rng), str(tmp_path / "x.npz"), "cosine>=0.95")
    assert {"conv3x3", "depthwise", "grouped", "pointwise"} == {l.node for l in result.layers}
    for node in ("deconv", "deconv_plain"):
        assert result.skipped[node].startswith("ConvTranspose layers are not calibrated")


def test_conv_speed_is_measured_for_the_performance_goal(cnn, tmp_path):
    from onnxbit.calibration.speed import LayerSpeed

    model_path, images = cnn
    measured = []

    class Speed:
        def __call__(self, settings, k, n, m):
            return 2.0

        def conv(self, settings, conv, input_shape):
            measured.append((tuple(conv.weight_shape), tuple(input_shape)))
            return 0.5 if settings["precision"] == "int8" else 2.0

    result = calibrate(str(model_path), str(images), "cosine>=0.95", speed=Speed(), method="rtn")
    assert ((16, 3, 3, 3), (1, 3, 16, 16)) in measured and ((24, 16, 1, 1), (1, 16, 8, 8)) in measured
    for layer in result.layers:
        assert result.speed[layer.node]["ternary"] == 2.0
        if layer.op == "Conv":
            assert "int8" not in layer.sensitivity and result.speed[layer.node]["int8"] == 0.5
    assert result.speed["stem"]["rows"] == 64  # 8 x 8 output positions
    assert any("Conv 16x3x3x3 output positions" in line for line in result.speed_lines())
    # A speed function that times MatMul shapes only: the Conv layers say their speed was not measured.
    plain = calibrate(str(model_path), str(images), "cosine>=0.95", speed=lambda s, k, n, m: 2.0, method="rtn")
    assert all("speed not measured" in l.notes[-1] for l in plain.layers if l.op == "Conv")
    # The real measurement: the converted one-Conv model against onnxruntime's fp32 Conv.
    speed = LayerSpeed("onnxbit", 1, tmp_path / "speed.json")
    stem = next(l for l in result.layers if l.node == "stem")
    ratio = speed.conv(stem.settings("ternary"), stem.conv, (1, 3, 16, 16))
    assert math.isfinite(ratio) and ratio > 0
    assert len(json.loads((tmp_path / "speed.json").read_text())) == 1


def _with_constant_node_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every initializer moved into an (unnamed) Constant node, as paddle2onnx exports."""
    moved = onnx.ModelProto()
    moved.CopyFrom(model)
    constants = [helper.make_node("Constant", [], [t.name], value=t) for t in moved.graph.initializer]
    del moved.graph.initializer[:]
    nodes = constants + list(moved.graph.node)
    del moved.graph.node[:]
    moved.graph.node.extend(nodes)
    return moved


def test_weights_held_by_constant_nodes_are_calibrated_too(cnn, tmp_path):
    model_path, images = cnn
    path = tmp_path / "constants.onnx"
    onnx.save(_with_constant_node_weights(onnx.load(model_path)), path)
    result = calibrate(str(path), str(images), "cosine>=0.97", precisions=("int4",))
    assert [l.node for l in result.layers] == ["stem", "depthwise", "pointwise", "head"] and not result.skipped
    # GPTQ codes of the Conv layers, keyed by the Constant's output name in the codes file
    assert {"stem", "depthwise", "pointwise"} <= {l.node for l in result.layers if l.uses_codes()}
    data = load_calibration_data(str(images), ["X"])
    _, outputs, predicted = _converted_and_predicted(path, result, tmp_path, data.holdout[:6])
    for mine, probe in zip(outputs, predicted):
        np.testing.assert_allclose(mine[0], probe[0], rtol=1e-4, atol=1e-5)


def test_ternary_conv_layers_take_static_activation_scales(cnn):
    from onnxbit.calibration.activations import add_static_activations, check_static_activations

    model_path, images = cnn
    data = load_calibration_data(str(images), ["X"])
    result = calibrate(str(model_path), data, "cosine>=0.9", precisions=("ternary",))
    ternary_convs = {l.node for l in result.layers if l.op == "Conv" and l.precision == "ternary"}
    assert ternary_convs
    static = add_static_activations(str(model_path), result, data, "mse")
    assert ternary_convs <= set(static)
    check_static_activations(str(model_path), result, data)
    converted = convert(str(model_path), config=result.config(), progress=False, measure_error=False).model
    for node in converted.graph.node:
        if node.op_type == "TernaryConv" and node.name in result.activations:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["act_quant"] == 2
            assert attrs["act_scale"] == pytest.approx(result.activations[node.name]["act_scale"])
