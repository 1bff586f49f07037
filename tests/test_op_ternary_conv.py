"""com.onnxbit::TernaryConv in real onnxruntime sessions: against onnxruntime's
own Conv on the dequantized weight (float activations) and bit for bit
against the numpy reference (act_quant=1), on every ISA path."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxbit import runtime
from onnxbit.ops.reference import CUSTOM_OPS
from onnxbit.ops.schemas import DOMAIN, OPSET_VERSION, register_schemas
from onnxbit.reference.ternary_conv import ternary_conv_reference
from op_models import float_conv_model, random_scales, ternary_conv_model


def _session(model: onnx.ModelProto, threads: int = 1, custom: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if custom:
        return runtime.InferenceSession(model, sess_options=options)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _dequantized(codes: np.ndarray, scales: np.ndarray, group_size: int) -> np.ndarray:
    m = codes.shape[0]
    rows = codes.reshape(m, -1).astype(np.float32)
    if scales.size == 1:
        return (rows * scales.reshape(())).reshape(codes.shape)
    if scales.ndim == 1:
        return (rows * scales[:, None]).reshape(codes.shape)
    expanded = np.repeat(scales, group_size, axis=1)[:, :rows.shape[1]]
    return (rows * expanded).reshape(codes.shape)


# name: (x shape, weight shape [M, C/group, *kernel], conv attributes, scales, group_size)
CASES = {
    "1x1": ((1, 16, 5, 7), (24, 16, 1, 1), {}, "channel", 0),
    "3x3_pad1": ((1, 8, 9, 9), (16, 8, 3, 3), {"pads": [1, 1, 1, 1]}, "tensor", 0),
    "5x1": ((1, 6, 11, 4), (5, 6, 5, 1), {"pads": [2, 0, 2, 0]}, "channel", 0),
    "1d": ((2, 7, 19), (9, 7, 3), {"pads": [1, 2], "strides": [2]}, "channel", 0),
    "stride2_asym_pads": ((1, 5, 12, 13), (7, 5, 3, 3), {"strides": [2, 2], "pads": [0, 1, 2, 0]}, "channel", 0),
    "same_upper": ((1, 4, 10, 11), (6, 4, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, "channel", 0),
    "same_lower": ((1, 4, 10, 11), (6, 4, 4, 2), {"auto_pad": "SAME_LOWER", "strides": [3, 2]}, "tensor", 0),
    "valid": ((1, 4, 8, 9), (6, 4, 3, 2), {"auto_pad": "VALID"}, "channel", 0),
    "groups": ((1, 12, 7, 7), (8, 3, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}, "channel", 0),
    "depthwise": ((1, 16, 12, 12), (16, 1, 3, 3), {"group": 16, "pads": [1, 1, 1, 1]}, "channel", 0),
    "depthwise_stride2_mult2": ((1, 6, 11, 10), (12, 1, 3, 3), {"group": 6, "strides": [2, 2],
                                                                "pads": [1, 0, 1, 1]}, "tensor", 0),
    "depthwise_dilated_1d": ((2, 5, 23), (5, 1, 5), {"group": 5, "dilations": [2], "pads": [4, 4]}, "channel", 0),
    "dilation": ((1, 3, 13, 12), (4, 3, 3, 3), {"dilations": [2, 3], "pads": [2, 3, 2, 3]}, "channel", 0),
    "batch3": ((3, 10, 6, 6), (12, 10, 3, 3), {"pads": [1, 1, 1, 1]}, "channel", 0),
    "grouped_scales": ((1, 8, 6, 6), (10, 8, 3, 3), {"pads": [1, 1, 1, 1]}, "group", 32),
    "depthwise_grouped_scales": ((1, 4, 6, 6), (4, 1, 3, 3), {"group": 4}, "group", 4),
    "many_positions": ((1, 32, 40, 40), (32, 32, 3, 3), {"pads": [1, 1, 1, 1]}, "channel", 0),
    # Channels-last path (C/group >= 8; fewer take the (c, kh, kw) im2col): runs of C/group that do not
    # fill a 32-code chunk or a 128-code K-block, rows crossing K-blocks, pointwise convs it must not read
    # in place (groups, stride), one K-group as scales.
    "odd_channels_stride2": ((1, 37, 9, 8), (19, 37, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, "channel", 0),
    # runs of 16 and 48 channels a tap: quantized in blocks of 16, one sum a row (quantize_taps)
    "stride2_16_channels": ((1, 16, 11, 12), (8, 16, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, "channel", 0),
    "stride2_48_channels": ((2, 48, 9, 9), (12, 48, 3, 3), {"strides": [2, 2], "pads": [1, 0, 0, 1]}, "tensor", 0),
    "wide_k_dilated": ((2, 70, 10, 10), (9, 70, 3, 3), {"dilations": [2, 2], "pads": [2, 1, 2, 3]}, "tensor", 0),
    "pointwise_groups": ((1, 20, 6, 6), (8, 10, 1, 1), {"group": 2}, "channel", 0),
    "pointwise_stride2_pad": ((1, 12, 7, 7), (10, 12, 1, 1), {"strides": [2, 2], "pads": [1, 0, 0, 1]}, "channel", 0),
    "groups_odd": ((1, 63, 8, 9), (14, 9, 3, 2), {"group": 7, "pads": [1, 0, 1, 1]}, "tensor", 0),
    "one_k_group": ((1, 9, 5, 5), (7, 9, 3, 3), {"pads": [1, 1, 1, 1]}, "group", 128),
    # Depthwise rows of 32 outputs or more run plane by plane (vector blocks, scalar edges) on planes
    # too large to run flat (more than 16384 outputs at stride 1, phase planes over 1 MiB at stride 2).
    "depthwise_wide_large_plane": ((1, 2, 150, 112), (2, 1, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]},
                                   "channel", 0),
    "depthwise_wide_large_plane_stride2": ((1, 2, 401, 402), (4, 1, 3, 3), {"group": 2, "strides": [2, 2],
                                                                           "pads": [1, 1, 1, 1]}, "channel", 0),
    # Stride 2 runs on the input's four phase planes: even and odd pad_left (which plane an even
    # column lands in), rows split by a vector block and a scalar tail, dilation 2 (every tap in
    # plane (0, 0)), a 2x2 kernel, a channel multiplier, batch 2, outputs that read the bottom pad.
    "depthwise_phases_pad0": ((1, 3, 12, 13), (3, 1, 3, 3), {"group": 3, "strides": [2, 2],
                                                             "pads": [0, 0, 1, 1]}, "channel", 0),
    "depthwise_phases_5x5_mult2": ((2, 3, 15, 40), (6, 1, 5, 5), {"group": 3, "strides": [2, 2],
                                                                  "pads": [2, 2, 2, 2]}, "tensor", 0),
    "depthwise_phases_dilated": ((1, 4, 17, 70), (4, 1, 3, 3), {"group": 4, "strides": [2, 2], "dilations": [2, 2],
                                                                "pads": [1, 3, 1, 2]}, "channel", 0),
    "depthwise_phases_2x2": ((1, 5, 9, 34), (5, 1, 2, 2), {"group": 5, "strides": [2, 2],
                                                           "pads": [0, 0, 1, 1]}, "channel", 0),
    # Channel blocks: a full block of 16 and a part one, batch 2, uneven pads.
    "depthwise_blocks_batch2": ((2, 20, 9, 10), (20, 1, 3, 3), {"group": 20, "strides": [2, 2],
                                                                 "pads": [1, 0, 2, 1]}, "channel", 0),
    "depthwise_wide": ((1, 5, 9, 41), (5, 1, 3, 3), {"group": 5, "pads": [1, 1, 1, 1]}, "channel", 0),
    "depthwise_wide_dilated_mult2": ((2, 3, 6, 45), (6, 1, 3, 5), {"group": 3, "dilations": [1, 2],
                                                                   "pads": [1, 3, 2, 4]}, "tensor", 0),
    "depthwise_wide_stride2": ((1, 4, 7, 75), (4, 1, 3, 3), {"group": 4, "strides": [2, 2],
                                                             "pads": [1, 1, 1, 1]}, "channel", 0),
    "depthwise_wide_stride2_even": ((1, 3, 6, 64), (3, 1, 3, 3), {"group": 3, "strides": [1, 2],
                                                                  "pads": [0, 1, 1, 0]}, "channel", 0),
    # Depthwise planes at stride 1 run flat from a zero-padded copy: dilation, a channel multiplier,
    # uneven pads (out_h != in_h), batch 2; a 5x5 kernel taller than the plane. Stride 2 whose last
    # input row and column no output reads runs on phase planes.
    "depthwise_flat_dilated_mult2": ((2, 6, 10, 11), (12, 1, 3, 3), {"group": 6, "dilations": [2, 2],
                                                                    "pads": [1, 2, 3, 2]}, "tensor", 0),
    "depthwise_flat_5x5": ((1, 7, 4, 8), (7, 1, 5, 5), {"group": 7, "pads": [2, 2, 2, 2]}, "channel", 0),
    "depthwise_flat_stride2_odd": ((1, 3, 9, 11), (3, 1, 3, 3), {"group": 3, "strides": [2, 2],
                                                                "pads": [1, 1, 0, 0]}, "channel", 0),
    # Output planes the input's size run as flat runs of pixels: dilation, a channel multiplier and
    # batch 2; pads all on one side.
    "depthwise_same_dilated_mult2": ((2, 3, 9, 20), (6, 1, 3, 3), {"group": 3, "dilations": [2, 2],
                                                                    "pads": [2, 2, 2, 2]}, "tensor", 0),
    "depthwise_same_asymmetric": ((1, 4, 5, 9), (4, 1, 3, 3), {"group": 4, "pads": [0, 2, 2, 0]}, "channel", 0),
    # out_w < in_w: the outputs are picked from the flat grid
    "depthwise_flat_narrow": ((2, 5, 7, 9), (5, 1, 3, 3), {"group": 5, "pads": [0, 0, 1, 1]}, "channel", 0),
    # Pointwise int8 rows quantized from X in pixel blocks: pixel counts not a multiple of the
    # block, odd channel counts, batch 2, and channels so many that a block is 8 pixels.
    "pointwise_odd_blocks": ((2, 37, 9, 11), (19, 37, 1, 1), {}, "channel", 0),
    "pointwise_many_channels": ((1, 1030, 3, 5), (9, 1030, 1, 1), {}, "tensor", 0),
}


def _case(rng, name, fmt="2bit", with_bias=True):
    x_shape, w_shape, attrs, scale_kind, group_size = CASES[name]
    codes = rng.integers(-1, 2, size=w_shape).astype(np.int8)
    m, k = w_shape[0], int(np.prod(w_shape[1:]))
    scales = random_scales(rng, scale_kind, k, m, group_size)
    bias = rng.standard_normal(m).astype(np.float32) if with_bias else None
    x = rng.standard_normal(x_shape).astype(np.float32)
    return codes, scales, bias, x, attrs, group_size


@pytest.mark.parametrize("name", list(CASES))
def test_float_path_matches_onnxruntime_conv(isa, rng, name):
    codes, scales, bias, x, attrs, group_size = _case(rng, name)
    op = ternary_conv_model(codes, scales, bias, group_size=group_size, conv_attrs=attrs)
    y = _session(op.model, threads=2).run(None, op.feeds(x))[0]
    expected = _session(float_conv_model(_dequantized(codes, scales, group_size), bias, attrs),
                        custom=False).run(None, {"X": x})[0]
    assert y.shape == expected.shape
    k = int(np.prod(codes.shape[1:]))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=2e-5 * np.sqrt(k) * 4)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("fmt", ["2bit", "base3"])
def test_int8_path_equals_numpy_reference(isa, rng, name, fmt):
    codes, scales, bias, x, attrs, group_size = _case(rng, name, fmt, with_bias=name != "1x1")
    op = ternary_conv_model(codes, scales, bias, fmt=fmt, group_size=group_size, act_quant=1, conv_attrs=attrs,
                            constant=name != "groups")
    y = _session(op.model, threads=2).run(None, op.feeds(x))[0]
    expected = ternary_conv_reference(x, codes, scales, weight_shape=codes.shape, group=attrs.get("group", 1),
                                      group_size=group_size, act_quant=1, bias=bias, strides=attrs.get("strides"),
                                      pads=attrs.get("pads"), dilations=attrs.get("dilations"),
                                      auto_pad=attrs.get("auto_pad", "NOTSET"))
    np.testing.assert_array_equal(y, expected)
    # ... which onnx's own ReferenceEvaluator computes too, through the registered op.
    evaluated = ReferenceEvaluator(op.model, new_ops=CUSTOM_OPS).run(None, op.feeds(x))[0]
    np.testing.assert_array_equal(evaluated, expected)


def test_int8_path_is_close_to_float_conv(rng):
    codes, scales, bias, x, attrs, group_size = _case(rng, "3x3_pad1")
    quantized = ternary_conv_model(codes, scales, bias, act_quant=1, conv_attrs=attrs)
    exact = ternary_conv_model(codes, scales, bias, conv_attrs=attrs)
    y8 = _session(quantized.model).run(None, quantized.feeds(x))[0]
    y = _session(exact.model).run(None, exact.feeds(x))[0]
    assert np.abs(y8 - y).max() < 0.05 * np.abs(y).max()


def test_non_finite_window_gives_nan_only_where_it_reads(isa, rng):
    for name in ("depthwise", "3x3_pad1", "groups_odd", "depthwise_wide"):
        codes, scales, bias, x, attrs, _ = _case(rng, name)
        x[0, 0, 4, 4] = np.inf
        x[0, -1, 1, 6] = np.nan  # in the last group (groups_odd): the other groups' windows stay finite
        op = ternary_conv_model(codes, scales, bias, act_quant=1, conv_attrs=attrs)
        y = _session(op.model).run(None, op.feeds(x))[0]
        expected = ternary_conv_reference(x, codes, scales, weight_shape=codes.shape, group=attrs.get("group", 1),
                                          act_quant=1, bias=bias, pads=attrs["pads"])
        np.testing.assert_array_equal(y, expected)
        assert np.isnan(y).any() and not np.isnan(y).all()


def test_conv_inside_if_branch(rng):
    codes, scales, bias, x, attrs, _ = _case(rng, "3x3_pad1")
    op = ternary_conv_model(codes, scales, bias, conv_attrs=attrs)
    inner = op.model.graph
    branch = helper.make_graph(list(inner.node), "then", [], [helper.make_tensor_value_info("Y", TensorProto.FLOAT,
                                                                                             None)],
                               initializer=list(inner.initializer))
    other = helper.make_graph([helper.make_node("Identity", ["X"], ["Z"])], "else", [],
                              [helper.make_tensor_value_info("Z", TensorProto.FLOAT, None)])
    node = helper.make_node("If", ["cond"], ["out"], then_branch=branch, else_branch=other)
    graph = helper.make_graph([node], "if_conv", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None),
                                                  helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(DOMAIN, OPSET_VERSION)])
    model.ir_version = 8
    y = _session(model).run(None, {"X": x, "cond": np.array(True)})[0]
    expected = ternary_conv_reference(x, codes, scales, weight_shape=codes.shape, bias=bias, pads=attrs["pads"])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)


def test_schema_infers_output_shape(rng):
    register_schemas()
    for name in ("1d", "same_lower", "stride2_asym_pads"):
        codes, scales, bias, x, attrs, group_size = _case(rng, name)
        op = ternary_conv_model(codes, scales, bias, group_size=group_size, conv_attrs=attrs)
        model = op.model
        model.graph.input[0].type.tensor_type.shape.ClearField("dim")
        for d in x.shape:
            model.graph.input[0].type.tensor_type.shape.dim.add().dim_value = d
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        dims = [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim]
        expected = ternary_conv_reference(x, codes, scales, weight_shape=codes.shape, group_size=group_size,
                                          bias=bias, **{k: v for k, v in attrs.items() if k != "group"})
        assert dims == list(expected.shape)


@pytest.mark.parametrize("change, feed_shape, message", [
    ({"weight_shape": [4, 3, 3]}, (1, 3, 9), "B has"),
    ({"weight_shape": [4, 3]}, (1, 3, 9, 9), "weight_shape must be"),
    ({"auto_pad": "SAME"}, (1, 3, 9, 9), "auto_pad='SAME'"),
    ({"group": 3}, (1, 3, 9, 9), "group = 3 must be positive and divide M"),
    ({"strides": [1, 1, 1]}, (1, 3, 9, 9), "'strides' has 3 values"),
    ({"act_quant": 4}, (1, 3, 9, 9), "act_quant=4 must be 0 (float activations), 1 (int8 per im2col row), 2 "),
    ({"act_quant": 2}, (1, 3, 9, 9), "required attribute 'act_scale' (float) is missing"),
    ({"act_quant": 2, "act_scale": -2.0}, (1, 3, 9, 9), "act_scale=-2 must be finite and > 0"),
    ({"act_scale": 2.0}, (1, 3, 9, 9), "act_scale is only used with act_quant=2"),
    ({}, (1, 4, 9, 9), "X has 4 channels"),
    ({}, (1, 3, 9), "X has rank 3"),
    ({}, (1, 3, 2, 2), "the dilated kernel spans 3"),
])
def test_errors_name_the_node(rng, change, feed_shape, message):
    codes = rng.integers(-1, 2, size=(4, 3, 3, 3)).astype(np.int8)
    op = ternary_conv_model(codes, np.ones(4, np.float32), node_name="bad_conv", x_rank=len(feed_shape))
    node = op.model.graph.node[0]
    for name, value in change.items():
        for i, attribute in enumerate(node.attribute):
            if attribute.name == name:
                del node.attribute[i]
                break
        node.attribute.append(helper.make_attribute(name, value))
    with pytest.raises(Exception) as caught:
        _session(op.model).run(None, op.feeds(np.zeros(feed_shape, np.float32)))
    text = str(caught.value)
    assert "TernaryConv node 'bad_conv'" in text and message in text, text


def test_corrupt_weights_fail_session_creation(rng):
    codes = rng.integers(-1, 2, size=(4, 4, 1, 3)).astype(np.int8)
    for group in (1, 4):  # the im2col path and the depthwise path decode B differently
        op = ternary_conv_model(codes[:, :4 // group], np.ones(4, np.float32), conv_attrs={"group": group},
                                node_name="corrupt")
        packed = numpy_helper.to_array(op.model.graph.initializer[0]).copy()
        packed.reshape(-1)[0] = 0xFF  # code 3 is invalid in 2bit
        op.model.graph.initializer[0].CopyFrom(numpy_helper.from_array(packed, "B"))
        with pytest.raises(Exception, match="TernaryConv node 'corrupt'.*invalid"):
            _session(op.model)


def _depthwise_float_spec(x, codes, scales, bias, attrs):
    """The float depthwise arithmetic step by step in float32: per output, 0 plus x * w
    for each tap in (kh, kw) order (a padding tap adds 0), times the scale, plus the bias."""
    m, _, kh, kw = codes.shape
    group = attrs["group"]
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    top, left, bottom, right = attrs["pads"]
    padded = np.pad(x, [(0, 0), (0, 0), (top, bottom), (left, right)])
    out_h = (padded.shape[2] - (kh - 1) * dh - 1) // sh + 1
    out_w = (padded.shape[3] - (kw - 1) * dw - 1) // sw + 1
    planes = np.repeat(padded, m // group, axis=1)  # output channel o reads input channel o // multiplier
    acc = np.zeros((x.shape[0], m, out_h, out_w), np.float32)
    for i in range(kh):
        for j in range(kw):
            window = planes[:, :, i * dh: i * dh + (out_h - 1) * sh + 1: sh, j * dw: j * dw + (out_w - 1) * sw + 1: sw]
            acc = (acc + window * codes[:, 0, i, j].astype(np.float32)[None, :, None, None]).astype(np.float32)
    y = (acc * np.broadcast_to(scales.reshape(-1), (m,))[None, :, None, None]).astype(np.float32)
    return (y + bias[None, :, None, None]).astype(np.float32) if bias is not None else y


DEPTHWISE_FLOAT_CASES = ["depthwise", "depthwise_stride2_mult2", "depthwise_wide", "depthwise_wide_large_plane",
                         "depthwise_wide_large_plane_stride2", "depthwise_wide_dilated_mult2", "depthwise_wide_stride2",
                         "depthwise_wide_stride2_even", "depthwise_flat_dilated_mult2", "depthwise_flat_5x5",
                         "depthwise_flat_narrow", "depthwise_flat_stride2_odd", "depthwise_phases_pad0",
                         "depthwise_phases_5x5_mult2", "depthwise_phases_dilated", "depthwise_phases_2x2",
                         "depthwise_blocks_batch2", "depthwise_same_dilated_mult2", "depthwise_same_asymmetric"]
DEPTHWISE_FLOAT_PATHS = ("blocks", "phases", "flat", "rows", "channels_last", "same", "direct")


def _depthwise_path_runs(path: str) -> int:
    import ctypes

    from onnxbit import native

    library = ctypes.CDLL(native.library_path())  # the same loaded library onnxruntime uses
    library.obx_tconv_depthwise_path_runs.restype = ctypes.c_size_t
    library.obx_tconv_depthwise_path_runs.argtypes = [ctypes.c_char_p]
    return library.obx_tconv_depthwise_path_runs(path.encode())


@pytest.mark.parametrize("path", (None, *DEPTHWISE_FLOAT_PATHS))
@pytest.mark.parametrize("name", DEPTHWISE_FLOAT_CASES)
def test_depthwise_float_path_is_bit_exact(rng, monkeypatch, name, path):
    """Every depthwise float kernel (channel blocks, phase, flat, same-size and row planes, channels-last),
    forced where it fits and by the size rule otherwise, computes the documented order of
    operations on every ISA: the bits of _depthwise_float_spec."""
    from onnxbit import native

    if path:
        monkeypatch.setenv("ONNXBIT_DEPTHWISE_PATH", path)
    codes, scales, bias, x, attrs, _ = _case(rng, name)
    x[0, 1, 3, 7] = np.inf  # Inf * 0 is NaN, Inf * -1 is -Inf: as in the float Conv
    op = ternary_conv_model(codes, scales, bias, conv_attrs=attrs)
    with np.errstate(invalid="ignore"):
        expected = _depthwise_float_spec(x, codes, scales, bias, attrs)
    assert np.isinf(expected).any() or np.isnan(expected).any()
    for isa in native.available_isas():
        with native.forced_isa(isa):
            np.testing.assert_array_equal(_session(op.model, threads=2).run(None, op.feeds(x))[0], expected,
                                          err_msg=isa)


@pytest.mark.parametrize("path, names", [
    ("blocks", ["depthwise", "depthwise_phases_pad0", "depthwise_wide", "depthwise_blocks_batch2"]),
    ("phases", ["depthwise_phases_dilated", "depthwise_phases_2x2", "depthwise_wide_stride2"]),
    ("flat", ["depthwise_flat_5x5", "depthwise_flat_narrow", "depthwise_wide_dilated_mult2"]),
    ("rows", ["depthwise_wide_large_plane_stride2", "depthwise_wide_stride2_even", "depthwise_flat_dilated_mult2"]),
    ("channels_last", ["depthwise", "depthwise_stride2_mult2", "depthwise_wide_stride2_even"]),
    ("same", ["depthwise", "depthwise_flat_5x5", "depthwise_wide", "depthwise_same_dilated_mult2",
              "depthwise_same_asymmetric"]),
    ("direct", ["depthwise_stride2_mult2", "depthwise_wide_large_plane_stride2", "depthwise_wide_stride2",
                "depthwise_flat_stride2_odd", "depthwise_phases_pad0", "depthwise_blocks_batch2",
                "depthwise", "depthwise_wide", "depthwise_wide_large_plane", "depthwise_flat_narrow",
                "depthwise_flat_5x5", "depthwise_phases_5x5_mult2"]),
])
def test_each_depthwise_float_path_runs_where_forced(rng, monkeypatch, path, names):
    """The bit-exact test above covers a path only where it really ran: each forced path runs on
    these cases (a channel multiplier, a dilation, stride (1, 2), a 5x5 kernel among them);
    channel blocks need a multiplier of 1."""
    monkeypatch.setenv("ONNXBIT_DEPTHWISE_PATH", path)
    for name in names:
        codes, scales, bias, x, attrs, _ = _case(rng, name)
        op = ternary_conv_model(codes, scales, bias, conv_attrs=attrs)
        before = _depthwise_path_runs(path)
        _session(op.model).run(None, op.feeds(x))
        assert _depthwise_path_runs(path) > before, name  # once an image when a batch is split by image


DEPTHWISE_INT8_PATHS = ("blocks", "phases", "flat", "channels_last", "direct")  # the rows have no int8 kernel


@pytest.mark.parametrize("path", (None, *DEPTHWISE_INT8_PATHS))
@pytest.mark.parametrize("name", DEPTHWISE_FLOAT_CASES)
def test_depthwise_int8_path_is_bit_exact(rng, monkeypatch, name, path):
    """int8 activations per window (act_quant 1, and 2 with a static scale small enough that
    q clamps) on every depthwise path that has them, forced where it fits and by the size rule
    otherwise, on every ISA: the numpy reference's bits, NaN for windows with NaN or Inf."""
    from onnxbit import native

    if path:
        monkeypatch.setenv("ONNXBIT_DEPTHWISE_PATH", path)
    codes, scales, bias, x, attrs, _ = _case(rng, name)
    x[0, 1, 3, 7] = np.inf
    x[-1, -1, 1, 2] = np.nan
    x[0, 0, 0, :] *= 40  # past the static scale's clip
    for act_quant, act_scale in ((1, None), (2, 127.0 / 3.0)):
        op = ternary_conv_model(codes, scales, bias, act_quant=act_quant, act_scale=act_scale, conv_attrs=attrs)
        expected = ternary_conv_reference(x, codes, scales, weight_shape=codes.shape, group=attrs["group"],
                                          act_quant=act_quant, act_scale=act_scale, bias=bias,
                                          strides=attrs.get("strides"), pads=attrs["pads"],
                                          dilations=attrs.get("dilations"))
        assert np.isnan(expected).any() and not np.isnan(expected).all()
        for isa in native.available_isas():
            with native.forced_isa(isa):
                np.testing.assert_array_equal(_session(op.model, threads=2).run(None, op.feeds(x))[0], expected,
                                              err_msg=f"{isa} act_quant={act_quant}")


@pytest.mark.parametrize("path, names", [
    ("blocks", ["depthwise", "depthwise_phases_pad0", "depthwise_blocks_batch2"]),
    ("phases", ["depthwise_phases_dilated", "depthwise_phases_5x5_mult2", "depthwise_wide_stride2"]),
    ("flat", ["depthwise_flat_5x5", "depthwise_flat_narrow", "depthwise_wide_dilated_mult2"]),
    ("channels_last", ["depthwise", "depthwise_stride2_mult2", "depthwise_wide_stride2_even"]),
    ("direct", ["depthwise", "depthwise_stride2_mult2", "depthwise_wide_large_plane_stride2", "depthwise_wide",
                "depthwise_phases_pad0", "depthwise_flat_stride2_odd"]),
])
def test_each_depthwise_int8_path_runs_where_forced(rng, monkeypatch, path, names):
    """The int8 test above covers a path only where it really ran."""
    monkeypatch.setenv("ONNXBIT_DEPTHWISE_PATH", path)
    for name in names:
        codes, scales, bias, x, attrs, _ = _case(rng, name)
        op = ternary_conv_model(codes, scales, bias, act_quant=1, conv_attrs=attrs)
        before = _depthwise_path_runs(path)
        _session(op.model).run(None, op.feeds(x))
        assert _depthwise_path_runs(path) > before, name  # once an image when a batch is split by image


def test_depthwise_int8_rule_leaves_the_rows_out(rng, monkeypatch):
    """A 3x3 plane too large for the flat and phase planes takes the direct planes where the ISA has
    kernels for them (float activations and, on AVX-512, int8 ones per window), else the rows with
    float activations and the channels-last tiles with int8 ones (the rows have no int8 kernel: forced,
    int8 ones take the rule's path)."""
    from onnxbit import native

    codes, scales, bias, x, attrs, _ = _case(rng, "depthwise_wide_large_plane")
    for forced in (None, "rows", "direct"):
        if forced:
            monkeypatch.setenv("ONNXBIT_DEPTHWISE_PATH", forced)
        float_path = forced or ("direct" if native.isa() in ("avx512", "avx2") else "rows")
        int8_path = "direct" if forced == "direct" or native.isa() == "avx512" else "channels_last"
        for act_quant, path in ((0, float_path), (1, int8_path)):
            op = ternary_conv_model(codes, scales, bias, act_quant=act_quant, conv_attrs=attrs)
            before = _depthwise_path_runs(path)
            _session(op.model).run(None, op.feeds(x))
            assert _depthwise_path_runs(path) > before, (forced, act_quant)


@pytest.mark.parametrize("name", ["3x3_pad1", "1d", "groups", "depthwise", "grouped_scales"])
@pytest.mark.parametrize("constant", [True, False])
def test_rans_computes_bit_identically_to_base3(isa, rng, name, constant):
    codes, scales, bias, x, attrs, group_size = _case(rng, name)
    codes[rng.random(codes.shape) < 0.6] = 0  # skewed, as the tensors rans is for
    results = {}
    for fmt in ("base3", "rans"):
        op = ternary_conv_model(codes, scales, bias, fmt=fmt, group_size=group_size, act_quant=1,
                                conv_attrs=attrs, constant=constant)
        results[fmt] = _session(op.model).run(None, op.feeds(x))[0]
    np.testing.assert_array_equal(results["rans"], results["base3"])
    # ... and onnx's ReferenceEvaluator decodes the stream with the numpy decoder to the same result.
    evaluated = ReferenceEvaluator(op.model, new_ops=CUSTOM_OPS).run(None, op.feeds(x))[0]
    np.testing.assert_array_equal(evaluated, results["base3"])


def test_corrupt_rans_stream_fails_session_creation_naming_the_node(rng):
    codes = rng.integers(-1, 2, size=(8, 4, 3, 3)).astype(np.int8)
    op = ternary_conv_model(codes, np.ones(8, np.float32), fmt="rans", node_name="corrupt_rans")
    stream = numpy_helper.to_array(op.model.graph.initializer[0])
    for damaged in (stream[:-3], np.concatenate([stream, np.zeros(1, np.uint8)]),
                    np.where(np.arange(stream.size) == stream.size - 5, stream ^ 0x5A, stream).astype(np.uint8)):
        op.model.graph.initializer[0].CopyFrom(numpy_helper.from_array(damaged, "B"))
        with pytest.raises(Exception, match=r"TernaryConv node 'corrupt_rans'.*invalid weights \(format rans\)"):
            _session(op.model)
    op.model.graph.initializer[0].CopyFrom(numpy_helper.from_array(stream.reshape(1, -1), "B"))
    with pytest.raises(Exception, match="TernaryConv node 'corrupt_rans'.*B must be a 1-D rans stream"):
        _session(op.model)


def test_crc32c_attribute_is_checked_at_session_creation(rng):
    from onnxbit.checksum import packed_weight_crc32c

    codes = rng.integers(-1, 2, size=(8, 4, 3, 3)).astype(np.int8)
    scales = np.ones(8, np.float32)
    for fmt in ("base3", "rans"):
        op = ternary_conv_model(codes, scales, fmt=fmt, node_name="checked_conv")
        stream = numpy_helper.to_array(op.model.graph.initializer[0])
        crc = packed_weight_crc32c(stream, scales)
        op.model.graph.node[0].attribute.append(helper.make_attribute("crc32c", crc))
        _session(op.model)  # the right checksum loads
        op.model.graph.node[0].attribute[-1].i = crc ^ 1
        with pytest.raises(Exception, match="TernaryConv node 'checked_conv'.*corrupt weights.*CRC32C"):
            _session(op.model)
        op.model.graph.node[0].attribute[-1].i = 1 << 32
        with pytest.raises(Exception, match="TernaryConv node 'checked_conv'.*crc32c=4294967296"):
            _session(op.model)
