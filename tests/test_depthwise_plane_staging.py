"""How the depthwise plane paths stage X: the stride-2 phase planes
(tconv_rows_avx512.c stage_wide_rows, tconv_rows_avx2.c stage_rows_avx2)
split rows into even and odd columns in whole steps, then one masked step,
into planes whose rows start on cache lines; the stride-1 flat planes copy
rows in whole vectors and one masked one (copy_rows) into a plane placed so
that its inside rows start on a line. Widths from 9 to well past two steps
and every leading pad put each column of a row in every place a step can
hold it; each case runs the path on every ISA with float activations,
act_quant 1 and act_quant 3, bit for bit against the specification."""

from __future__ import annotations

import numpy as np
import pytest

from onnxbit import native
from onnxbit.reference.ternary_conv import ternary_conv_reference
from op_models import ternary_conv_model
from test_op_ternary_conv import _depthwise_float_spec, _depthwise_path_runs, _session

# widths: a row within one step's masked half (9), exactly one AVX2 step (16),
# one AVX-512 step plus a tail (45), several whole steps with a short tail (71)
# and with no tail (96); the leading pad picks which plane holds the even
# columns and where its first column lands.
WIDTHS = (9, 16, 45, 71, 96)


@pytest.mark.parametrize("path, stride", [("phases", 2), ("flat", 1)])
@pytest.mark.parametrize("pad_left", [0, 1, 2, 3])
@pytest.mark.parametrize("width", WIDTHS)
def test_plane_staging_is_bit_exact_on_every_isa(monkeypatch, width, pad_left, path, stride):
    rng = np.random.default_rng(width * 10 + pad_left)
    monkeypatch.setenv("ONNXBIT_DEPTHWISE_PATH", path)
    channels, height = 5, 11
    codes = rng.integers(-1, 2, size=(channels, 1, 3, 3)).astype(np.int8)
    scales = rng.uniform(0.5, 2, channels).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    x = rng.standard_normal((1, channels, height, width)).astype(np.float32)
    attrs = {"group": channels, "strides": [stride, stride], "pads": [1, pad_left, 2, (pad_left + 1) % 3]}
    for act_quant in (0, 1, 3):
        op = ternary_conv_model(codes, scales, bias, act_quant=act_quant, conv_attrs=attrs)
        if act_quant == 0:
            expected = _depthwise_float_spec(x, codes, scales, bias, attrs)
        else:
            expected = ternary_conv_reference(x, codes, scales, weight_shape=codes.shape, group=channels,
                                              act_quant=act_quant, bias=bias, strides=attrs["strides"],
                                              pads=attrs["pads"])
        for isa in native.available_isas():
            with native.forced_isa(isa):
                before = _depthwise_path_runs(path)
                y = _session(op.model, threads=2).run(None, op.feeds(x))[0]
                assert _depthwise_path_runs(path) > before, (isa, act_quant)
                np.testing.assert_array_equal(y, expected, err_msg=f"{isa} act_quant={act_quant}")
