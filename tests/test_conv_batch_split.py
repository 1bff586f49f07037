"""A batch of small images runs one image a task (obx_tconv_compute_activated), each
image on one thread: the same bits as the reference on every kind of conv (dense
int8 per window and per pixel, 1x1, depthwise float and int8, with an activation),
at two threads, odd batch sizes included."""

from __future__ import annotations

import numpy as np
import pytest

from onnxbit.reference import activation as activations
from onnxbit.reference.ternary_conv import ternary_conv_reference
from op_models import ternary_conv_model
from test_op_ternary_conv import _depthwise_float_spec, _session

CASES = {
    # name: (C, M, kernel, group, act_quant, activation)
    "dense_3x3_a8": (16, 24, 3, 1, 1, "Relu"),
    "dense_1x1_a8px": (32, 16, 1, 1, 3, None),
    "depthwise_a8px": (16, 16, 3, 16, 3, "HardSwish"),
    "depthwise_a8": (16, 16, 3, 16, 1, None),
    "grouped_a8": (16, 16, 3, 4, 1, "Silu"),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("batch", [2, 5])
def test_small_images_split_by_image_compute_the_reference(rng, name, batch):
    c, m, k, group, act_quant, activation = CASES[name]
    codes = rng.integers(-1, 2, size=(m, c // group, k, k)).astype(np.int8)
    scales = rng.uniform(0.05, 0.2, m).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32)
    x = rng.standard_normal((batch, c, 6, 7)).astype(np.float32)
    attrs = {"pads": [k // 2] * 4, "group": group}
    extra = {"activation": activation} if activation else {}
    op = ternary_conv_model(codes, scales, bias, act_quant=act_quant, conv_attrs={**attrs, **extra})
    conv = ternary_conv_reference(x, codes, scales, weight_shape=codes.shape, group=group, act_quant=act_quant,
                                  bias=bias, pads=attrs["pads"])
    expected = activations.apply(conv, activation) if activation else conv
    for threads in (1, 2):
        np.testing.assert_array_equal(_session(op.model, threads=threads).run(None, op.feeds(x))[0], expected,
                                      err_msg=f"{threads} threads")


def test_depthwise_float_batch_split_keeps_the_documented_order(rng):
    codes = rng.integers(-1, 2, size=(12, 1, 3, 3)).astype(np.int8)
    scales = rng.uniform(0.5, 2, 12).astype(np.float32)
    x = rng.standard_normal((7, 12, 9, 9)).astype(np.float32)
    attrs = {"group": 12, "pads": [1, 1, 1, 1], "strides": [2, 2]}
    op = ternary_conv_model(codes, scales, None, conv_attrs=attrs)
    expected = _depthwise_float_spec(x, codes, scales, None, attrs)
    np.testing.assert_array_equal(_session(op.model, threads=2).run(None, op.feeds(x))[0], expected)
