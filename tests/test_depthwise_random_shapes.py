"""Depthwise TernaryConv on random geometries (kernels 1-7 high and wide, strides
1-3 per axis, dilations 1-3, uneven pads, channel multipliers, batches, an Inf
now and then), every float path forced in turn and the size rule's own choice,
with float activations (the documented order, bit for bit) and act_quant 1, 2
and 3 (the numpy reference, bit for bit). A longer run of this found the heap
corruption that test_library_reload.py pins down."""

from __future__ import annotations

import numpy as np
import pytest

from onnxbit.reference.ternary_conv import ternary_conv_reference
from op_models import ternary_conv_model
from test_op_ternary_conv import DEPTHWISE_FLOAT_PATHS, DEPTHWISE_INT8_PATHS, _depthwise_float_spec, _session


def _geometries(rng, count):
    made = 0
    while made < count:
        c = int(rng.integers(1, 40))
        m = c * int(rng.choice([1, 1, 1, 2]))
        kh, kw = int(rng.choice([1, 2, 3, 5, 7])), int(rng.choice([1, 3, 5]))
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 70))
        strides = [int(rng.choice([1, 2, 2, 3])), int(rng.choice([1, 2, 3]))]
        dilations = [int(rng.choice([1, 1, 2, 3]))] * 2
        pads = [int(rng.integers(0, 4)) for _ in range(4)]
        if h + pads[0] + pads[2] < (kh - 1) * dilations[0] + 1 or w + pads[1] + pads[3] < (kw - 1) * dilations[1] + 1:
            continue
        made += 1
        yield (int(rng.integers(1, 3)), c, h, w), (m, 1, kh, kw), {"group": c, "strides": strides,
                                                                   "dilations": dilations, "pads": pads}


def _random_case(rng, x_shape, w_shape):
    """Codes, scales, bias and an input, with an Inf now and then."""
    codes = rng.integers(-1, 2, size=w_shape).astype(np.int8)
    scales = rng.uniform(0.5, 2, w_shape[0]).astype(np.float32)
    bias = rng.standard_normal(w_shape[0]).astype(np.float32)
    x = rng.standard_normal(x_shape).astype(np.float32)
    if rng.random() < 0.3:
        x.reshape(-1)[int(rng.integers(0, x.size))] = np.inf
    return codes, scales, bias, x


def _expected(x, codes, scales, bias, attrs, act_quant, act_scale=None):
    """The bits a depthwise conv must give: the documented float order with float activations, the
    numpy reference with int8 ones."""
    if act_quant == 0:
        with np.errstate(invalid="ignore"):
            return _depthwise_float_spec(x, codes, scales, bias, attrs)
    return ternary_conv_reference(x, codes, scales, weight_shape=codes.shape, group=attrs["group"],
                                  act_quant=act_quant, act_scale=act_scale, bias=bias, strides=attrs["strides"],
                                  pads=attrs["pads"], dilations=attrs["dilations"])


@pytest.mark.parametrize("seed", [1, 2])
def test_random_depthwise_geometries_on_every_path(monkeypatch, seed):
    rng = np.random.default_rng(seed)
    for x_shape, w_shape, attrs in _geometries(rng, 12):
        codes, scales, bias, x = _random_case(rng, x_shape, w_shape)
        for act_quant in (0, 1, 2, 3):
            act_scale = 127.0 / 2.5 if act_quant == 2 else None
            op = ternary_conv_model(codes, scales, bias, act_quant=act_quant, act_scale=act_scale, conv_attrs=attrs)
            expected = _expected(x, codes, scales, bias, attrs, act_quant, act_scale)
            for path in (*(DEPTHWISE_INT8_PATHS if act_quant in (1, 2) else DEPTHWISE_FLOAT_PATHS), None):
                if path:
                    monkeypatch.setenv("ONNXBIT_DEPTHWISE_PATH", path)
                else:
                    monkeypatch.delenv("ONNXBIT_DEPTHWISE_PATH", raising=False)
                y = _session(op.model, threads=2).run(None, op.feeds(x))[0]
                np.testing.assert_array_equal(y, expected, err_msg=f"{path} act_quant={act_quant} {x_shape} "
                                                                    f"{w_shape} {attrs}")


def _direct_geometries(rng, count):
    """Geometries the direct 3x3 / 5x5 planes take: square kernel, equal strides 1 or 2, dilation
    1, left pad at most half the kernel; rows from 1 to 160 wide, so that strips lie inside the row,
    on its edges, or both, alone or in groups (four strips of 16 outputs side by side)."""
    made = 0
    while made < count:
        k, stride = int(rng.choice([3, 5])), int(rng.choice([1, 2]))
        c = int(rng.integers(2, 24))  # one channel in one group is an ordinary conv to the library
        m = c * int(rng.choice([1, 1, 2]))
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 160))
        pads = [int(rng.integers(0, k)), int(rng.integers(0, k // 2 + 1)), int(rng.integers(0, k)),
                int(rng.integers(0, k))]
        if h + pads[0] + pads[2] < k or w + pads[1] + pads[3] < k:
            continue
        made += 1
        yield (int(rng.integers(1, 3)), c, h, w), (m, 1, k, k), {"group": c, "strides": [stride, stride],
                                                                 "dilations": [1, 1], "pads": pads}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_direct_geometries_on_every_isa(isa, monkeypatch, seed):
    """The direct planes, forced, on geometries they take, float activations and act_quant 3 (and 1
    and 2 on 3x3 kernels), on every ISA (its own kernels, or the plain loops): the documented order
    and the reference, bit for bit, an Inf now and then."""
    from test_op_ternary_conv import _depthwise_path_runs

    monkeypatch.setenv("ONNXBIT_DEPTHWISE_PATH", "direct")
    rng = np.random.default_rng(seed)
    before = _depthwise_path_runs("direct")
    for x_shape, w_shape, attrs in _direct_geometries(rng, 10):
        codes, scales, bias, x = _random_case(rng, x_shape, w_shape)
        for act_quant in (0, 3, 1, 2) if w_shape[2] == 3 else (0, 3):  # int8 windows: 3x3 only
            act_scale = 127.0 / 2.5 if act_quant == 2 else None
            op = ternary_conv_model(codes, scales, bias, act_quant=act_quant, act_scale=act_scale, conv_attrs=attrs)
            expected = _expected(x, codes, scales, bias, attrs, act_quant, act_scale)
            y = _session(op.model, threads=2).run(None, op.feeds(x))[0]
            np.testing.assert_array_equal(y, expected, err_msg=f"act_quant={act_quant} {x_shape} {w_shape} {attrs}")
    assert _depthwise_path_runs("direct") - before >= 20  # every case ran on the path


@pytest.mark.parametrize("pad_left", [0, 1])
@pytest.mark.parametrize("width", [112, 128, 129, 130, 143, 257])
def test_direct_stride2_groups_of_strips(isa, monkeypatch, pad_left, width):
    """3x3 stride 2 on the direct planes walks four strips of 16 outputs side by side, each strip's
    shifted tap taking a lane from its neighbour and the group's ends from the edge column: rows
    that fill the group exactly, end inside its last strip, or leave a single strip after it, with
    the left column in the padding or not, float and act_quant 3, bit for bit."""
    monkeypatch.setenv("ONNXBIT_DEPTHWISE_PATH", "direct")
    rng = np.random.default_rng(width + pad_left)
    attrs = {"group": 3, "strides": [2, 2], "dilations": [1, 1], "pads": [1, pad_left, 1, 1 - pad_left]}
    codes, scales, bias, x = _random_case(rng, (1, 3, 9, width), (3, 1, 3, 3))
    x[0, 1, 4, 33] = np.inf  # a bad pixel between two strips
    for act_quant in (0, 3):
        op = ternary_conv_model(codes, scales, bias, act_quant=act_quant, conv_attrs=attrs)
        expected = _expected(x, codes, scales, bias, attrs, act_quant)
        y = _session(op.model, threads=2).run(None, op.feeds(x))[0]
        np.testing.assert_array_equal(y, expected, err_msg=f"act_quant={act_quant}")


@pytest.mark.parametrize(("width", "pads", "channels", "multiplier"), [
    (14, [1, 1, 1, 1], 6, 1),  # MobileNet's 14x14 stride 2: 7 outputs a row
    (16, [0, 0, 1, 1], 5, 1),  # 8 outputs, the last one's third tap in the right padding; one channel left alone
    (16, [1, 1, 0, 0], 4, 2),  # 8 outputs, pad_left 1; two output channels a plane
    (15, [2, 0, 0, 2], 3, 1),  # 8 outputs, two pad rows on top
    (3, [1, 1, 1, 1], 2, 1),
])
def test_direct_stride2_channel_pairs(isa, monkeypatch, width, pads, channels, multiplier):
    """Rows of at most 16 columns take two channels a vector at 3x3 stride 2 (a strip of 16 outputs
    would leave half its lanes empty): the halves' shifted taps, the padding lanes, the second
    channel's store, float activations, act_quant 3 and int8 windows (act_quant 1, 2) with a bad
    pixel, bit for bit."""
    monkeypatch.setenv("ONNXBIT_DEPTHWISE_PATH", "direct")
    rng = np.random.default_rng(width * 10 + channels)
    attrs = {"group": channels, "strides": [2, 2], "dilations": [1, 1], "pads": pads}
    codes, scales, bias, x = _random_case(rng, (2, channels, 11, width), (channels * multiplier, 1, 3, 3))
    x[1, channels - 1, 3, width - 1] = np.inf
    for act_quant in (0, 3, 1, 2):
        act_scale = 127.0 / 2.0 if act_quant == 2 else None
        op = ternary_conv_model(codes, scales, bias, act_quant=act_quant, act_scale=act_scale, conv_attrs=attrs)
        expected = _expected(x, codes, scales, bias, attrs, act_quant, act_scale)
        y = _session(op.model, threads=2).run(None, op.feeds(x))[0]
        np.testing.assert_array_equal(y, expected, err_msg=f"act_quant={act_quant}")


@pytest.mark.parametrize(("width", "pads", "channels", "multiplier"), [
    (7, [1, 1, 1, 1], 6, 1),  # MobileNetV2's last stage: 960 @7x7
    (8, [1, 1, 1, 1], 5, 1),  # 8 outputs; one channel left alone
    (8, [0, 0, 2, 2], 4, 2),  # pad_left 0, two pad rows below; two output channels a plane
    (6, [2, 1, 0, 1], 3, 1),
    (3, [1, 1, 1, 1], 2, 1),
])
def test_direct_stride1_channel_pairs(isa, monkeypatch, width, pads, channels, multiplier):
    """Rows of at most 8 columns take two channels a vector at 3x3 stride 1: each half's taps moved
    within it, the lanes moved in cleared (padding), float and act_quant 3 with a bad pixel, bit for
    bit."""
    monkeypatch.setenv("ONNXBIT_DEPTHWISE_PATH", "direct")
    rng = np.random.default_rng(width * 10 + channels + 1)
    attrs = {"group": channels, "strides": [1, 1], "dilations": [1, 1], "pads": pads}
    codes, scales, bias, x = _random_case(rng, (2, channels, 9, width), (channels * multiplier, 1, 3, 3))
    x[1, channels - 1, 4, width - 1] = np.inf
    for act_quant in (0, 3):
        op = ternary_conv_model(codes, scales, bias, act_quant=act_quant, conv_attrs=attrs)
        expected = _expected(x, codes, scales, bias, attrs, act_quant)
        y = _session(op.model, threads=2).run(None, op.feeds(x))[0]
        np.testing.assert_array_equal(y, expected, err_msg=f"act_quant={act_quant}")
