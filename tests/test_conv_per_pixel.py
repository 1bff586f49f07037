"""TernaryConv act_quant = 3: one int8 scale per input pixel over its group's
channels (tconv.h). The C op on every ISA must equal the numpy reference
(onnxbit/reference/ternary_conv.py per_pixel_conv) bit for bit; the reference
itself is checked against the float conv of the fake-quantized input, which is
what a QAT CNN computes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator

from onnxbit import runtime
from onnxbit.ops.reference import CUSTOM_OPS
from onnxbit.reference.ternary_conv import ACT_INT8_PIXEL, quantize_pixels, ternary_conv_reference
from op_models import float_conv_model, ternary_conv_model, ternary_matmul_model
from test_op_ternary_conv import CASES
from test_op_ternary_conv import _case as conv_case

# Every geometry whose weights have one scale group along K (mode 3 refuses K-groups).
PIXEL_CASES = [name for name, case in CASES.items()
               if case[3] != "group" or case[4] >= int(np.prod(case[1][1:]))]


def _session(model, threads=1):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return runtime.InferenceSession(model, sess_options=options)


def _reference(x, codes, scales, bias, attrs, group_size=0):
    return ternary_conv_reference(x, codes, scales, weight_shape=codes.shape, group=attrs.get("group", 1),
                                  group_size=group_size, act_quant=ACT_INT8_PIXEL, bias=bias,
                                  strides=attrs.get("strides"), pads=attrs.get("pads"),
                                  dilations=attrs.get("dilations"), auto_pad=attrs.get("auto_pad", "NOTSET"))


@pytest.mark.parametrize("name", PIXEL_CASES)
def test_c_op_equals_reference_on_every_isa(isa, rng, name):
    codes, scales, bias, x, attrs, group_size = conv_case(rng, name)
    x[..., 0] *= 30  # pixels with one large channel: the others quantize coarsely
    op = ternary_conv_model(codes, scales, bias, group_size=group_size, act_quant=3, conv_attrs=attrs)
    expected = _reference(x, codes, scales, bias, attrs, group_size)
    for threads in (1, 2):
        np.testing.assert_array_equal(_session(op.model, threads).run(None, op.feeds(x))[0], expected)
    np.testing.assert_array_equal(ReferenceEvaluator(op.model, new_ops=CUSTOM_OPS).run(None, op.feeds(x))[0],
                                  expected)


@pytest.mark.parametrize("name", ["3x3_pad1", "groups", "batch3"])
def test_weights_given_at_run_time(isa, rng, name):
    codes, scales, bias, x, attrs, group_size = conv_case(rng, name)
    op = ternary_conv_model(codes, scales, bias, act_quant=3, conv_attrs=attrs, constant=False)
    np.testing.assert_array_equal(_session(op.model).run(None, op.feeds(x))[0],
                                  _reference(x, codes, scales, bias, attrs))


def test_non_finite_pixels_make_their_windows_nan(isa, rng):
    codes, scales, bias, x, attrs, _ = conv_case(rng, "3x3_pad1")  # 3x3, pads 1, 9x9 input
    x[0, 2, 4, 4] = np.nan
    x[0, 5, 0, 8] = np.inf
    op = ternary_conv_model(codes, scales, bias, act_quant=3, conv_attrs=attrs)
    y = _session(op.model).run(None, op.feeds(x))[0]
    np.testing.assert_array_equal(y, _reference(x, codes, scales, bias, attrs))
    nan = np.isnan(y[0]).all(axis=0)
    expected = np.zeros((9, 9), bool)
    expected[3:6, 3:6] = True  # every window that reads (4, 4)
    expected[0:2, 7:9] = True  # and (0, 8)
    np.testing.assert_array_equal(nan, expected)


def test_reference_is_the_float_conv_of_the_fake_quantized_input(rng):
    """q * (1 / s) per pixel, then an ordinary float conv: equal up to float rounding."""
    codes, scales, bias, x, attrs, _ = conv_case(rng, "groups")
    q, inverse = quantize_pixels(x)
    group = attrs["group"]
    fake = (q.astype(np.float32) * inverse).astype(np.float32)  # one scale per pixel, over all channels
    weights = (codes.astype(np.float32) * np.asarray(scales, np.float32).reshape(-1, 1, 1, 1)).astype(np.float32)
    float_conv = ort.InferenceSession(float_conv_model(weights, bias, attrs).SerializeToString(),
                                      providers=["CPUExecutionProvider"])
    expected = float_conv.run(None, {"X": fake})[0]
    np.testing.assert_allclose(_reference(x, codes, scales, bias, attrs), expected, rtol=1e-5, atol=1e-5)
    # and it differs from the per-im2col-row mode: the scale really is per pixel
    per_row = ternary_conv_reference(x, codes, scales, weight_shape=codes.shape, group=group, act_quant=1,
                                     bias=bias, pads=attrs["pads"])
    assert not np.array_equal(per_row, _reference(x, codes, scales, bias, attrs))


def test_k_grouped_scales_are_refused(rng):
    codes, scales, bias, x, attrs, group_size = conv_case(rng, "grouped_scales")
    op = ternary_conv_model(codes, scales, bias, group_size=group_size, act_quant=3, conv_attrs=attrs)
    with pytest.raises(Exception, match="act_quant = 3 .*one weight scale group along K"):
        _session(op.model)


def test_ternary_matmul_refuses_act_quant_3(rng):
    codes = rng.integers(-1, 2, size=(16, 8)).astype(np.int8)
    op = ternary_matmul_model(codes, np.ones(1, np.float32), act_quant=3)
    with pytest.raises(Exception, match="act_quant=3 .*TernaryConv's only"):
        _session(op.model)


def test_verify_model_checks_act_quant_3(rng):
    from onnxbit.verify_model import verify_model

    codes, scales, bias, x, attrs, group_size = conv_case(rng, "grouped_scales")
    grouped = ternary_conv_model(codes, scales, bias, group_size=group_size, act_quant=3, conv_attrs=attrs)
    assert any("act_quant=3 (int8 per input pixel) needs one scale group" in f.message
               for f in verify_model(grouped.model).findings)
    codes, scales, bias, x, attrs, _ = conv_case(rng, "3x3_pad1")
    fine = ternary_conv_model(codes, scales, bias, act_quant=3, conv_attrs=attrs)
    assert not [f for f in verify_model(fine.model).findings if "act_quant" in f.message]


@pytest.mark.parametrize("path", ["blocks", "phases", "flat", "rows", "channels_last", "same", "direct"])
def test_depthwise_equals_reference_on_every_float_path(isa, rng, monkeypatch, path):
    """act_quant 3 on a depthwise conv runs the float depthwise paths on X dequantized per pixel:
    the staging paths (blocks, phases, flat) as they stage X, the others on a dequantized copy.
    Each forced path, where it fits, gives the reference's bits (NaN and Inf pixels included)."""
    from test_op_ternary_conv import DEPTHWISE_FLOAT_CASES, _depthwise_path_runs

    monkeypatch.setenv("ONNXBIT_DEPTHWISE_PATH", path)
    ran = 0
    for name in DEPTHWISE_FLOAT_CASES:
        codes, scales, bias, x, attrs, group_size = conv_case(rng, name)
        x[..., 0] *= 30
        x[0, 1, 3, 7] = np.nan
        x[0, 0, 2, 2] = -np.inf
        op = ternary_conv_model(codes, scales, bias, group_size=group_size, act_quant=3, conv_attrs=attrs)
        before = _depthwise_path_runs(path)
        np.testing.assert_array_equal(_session(op.model, 2).run(None, op.feeds(x))[0],
                                      _reference(x, codes, scales, bias, attrs, group_size), err_msg=name)
        ran += _depthwise_path_runs(path) > before
    assert ran >= 3, (path, ran)  # the path really ran on several cases


@pytest.mark.parametrize("channels", [3, 40, 131])
@pytest.mark.parametrize("path, stride", [("same", 1), ("blocks", 2)])
def test_depthwise_small_planes_merge_channel_runs(isa, rng, monkeypatch, channels, path, stride):
    """On planes of at most 256 pixels a staged path takes the pixel absmaxes in runs of whole
    channels (up to 8 runs) and merges their maxima: the pixel whose largest value, NaN or Inf lies
    in the last run, or in a middle one, gets the same scale as the reference."""
    from test_op_ternary_conv import _depthwise_path_runs

    monkeypatch.setenv("ONNXBIT_DEPTHWISE_PATH", path)
    codes = rng.integers(-1, 2, size=(channels, 1, 3, 3)).astype(np.int8)
    scales = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    x = rng.standard_normal((2, channels, 15, 13)).astype(np.float32)  # 195 pixels
    x[0, -1, 4, :] *= 100           # row 4's scales come from the last channel
    x[1, channels // 2, 7, 3] = 1e4  # one from a middle run
    x[0, -1, 10, 2] = np.nan
    x[1, channels // 2, 0, 0] = -np.inf
    attrs = {"group": channels, "pads": [1, 1, 1, 1], "strides": [stride, stride]}
    op = ternary_conv_model(codes, scales, bias, act_quant=3, conv_attrs=attrs)
    expected = _reference(x, codes, scales, bias, attrs)
    for threads in (1, 2):
        before = _depthwise_path_runs(path)
        np.testing.assert_array_equal(_session(op.model, threads).run(None, op.feeds(x))[0], expected)
        assert _depthwise_path_runs(path) > before


@pytest.mark.parametrize("path, channels, height, width, stride, banded", [
    ("flat", 20, 120, 120, 1, True),     # 1.1 MiB, bands of 15 rows restaging 2 each
    ("flat", 20, 60, 120, 1, False),     # 0.55 MiB: one pass
    ("flat", 80, 60, 60, 1, False),      # 1.1 MiB, but bands of 8 rows would restage a quarter
    ("phases", 20, 128, 128, 2, True),   # 1.25 MiB, bands of 8 rows restaging 1 phase row each
    ("phases", 20, 64, 128, 2, False),   # 0.63 MiB: one pass
    ("direct", 40, 160, 170, 2, True),   # 4.2 MiB: bands, X dequantized as the taps load it
    ("direct", 20, 128, 128, 2, True),   # 1.25 MiB, bands of 8 rows restaging 1 each
    ("direct", 7, 9, 37, 2, False),      # one pass; 37 columns: a masked strip at each end
    ("direct", 20, 128, 128, 1, True),   # stride 1: bands of 16 rows restaging 2 each
    ("direct", 80, 60, 60, 1, False),    # 1.1 MiB, but bands of 8 rows would restage a quarter
    ("direct", 7, 9, 37, 1, False),
])
def test_depthwise_act_quant_3_bands_or_one_pass(isa, rng, monkeypatch, path, channels, height, width, stride, banded):
    """act_quant 3 on the flat, phase and direct 3x3 planes takes its pixel scales band by band (a
    band restages the input rows its windows reach past it) on images over 1 MiB whose bands
    restage less than a quarter of their rows, else from one pass over the image. Both give the
    reference's bits, NaN and Inf pixels included, with the bands split over threads."""
    from test_op_ternary_conv import _depthwise_path_runs

    monkeypatch.setenv("ONNXBIT_DEPTHWISE_PATH", path)
    codes = rng.integers(-1, 2, size=(channels, 1, 3, 3)).astype(np.int8)
    scales = rng.uniform(0.5, 2, channels).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    attrs = {"group": channels, "strides": [stride, stride], "pads": [1, 1, 1, 1]}
    op = ternary_conv_model(codes, scales, bias, act_quant=3, conv_attrs=attrs)
    x = rng.standard_normal((1, channels, height, width)).astype(np.float32)
    x[..., 0] *= 30
    x[0, 3, height // 2, 7] = np.nan
    x[0, 5, height - 1, 2] = -np.inf
    before = (_depthwise_path_runs("banded"), _depthwise_path_runs(path))
    for threads in (1, 2):
        np.testing.assert_array_equal(_session(op.model, threads).run(None, op.feeds(x))[0],
                                      _reference(x, codes, scales, bias, attrs), err_msg=f"{threads} threads")
    assert (_depthwise_path_runs("banded") - before[0], _depthwise_path_runs(path) - before[1]) == (2 * banded, 2)


@pytest.mark.parametrize("pads", [[2, 2, 2, 2], [1, 1, 3, 3], [0, 0, 4, 4], [2, 1, 0, 0]])
def test_depthwise_5x5_act_quant_3_on_the_direct_planes(isa, rng, monkeypatch, pads):
    """5x5 depthwise with act_quant 3 on rows of several strips (the direct planes dequantize each input
    row once, as centre vectors moved up to two lanes left and four right for each tap): the
    reference's bits for every left pad the path takes, NaN and Inf pixels included."""
    from test_op_ternary_conv import _depthwise_path_runs

    monkeypatch.setenv("ONNXBIT_DEPTHWISE_PATH", "direct")
    channels = 6
    codes = rng.integers(-1, 2, size=(channels, 1, 5, 5)).astype(np.int8)
    scales = rng.uniform(0.5, 2, channels).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    attrs = {"group": channels, "pads": pads}
    op = ternary_conv_model(codes, scales, bias, act_quant=3, conv_attrs=attrs)
    x = rng.standard_normal((2, channels, 11, 53)).astype(np.float32)
    x[..., ::7] *= 30
    x[0, 2, 5, 17] = np.nan
    x[1, 4, 3, 31] = -np.inf
    before = _depthwise_path_runs("direct")
    np.testing.assert_array_equal(_session(op.model, 2).run(None, op.feeds(x))[0],
                                  _reference(x, codes, scales, bias, attrs))
    assert _depthwise_path_runs("direct") > before
