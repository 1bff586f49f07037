"""TernaryConv's fused activation (attribute `activation`): on every ISA the C
op applies Relu, LeakyRelu, Clip, HardSigmoid, HardSwish (two forms), Sigmoid
and Silu bit for bit as
onnxbit/reference/activation.py does (int8 paths, whose convolution is exact,
and the depthwise float path against its documented order), the
ReferenceEvaluator op agrees, onnxruntime's own activation ops agree to a
rounding, and malformed attributes fail session creation naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from onnxbit import native
from onnxbit.ops.reference import CUSTOM_OPS
from onnxbit.reference import activation as activations
from onnxbit.reference.ternary_conv import ternary_conv_reference
from onnxbit.verify_model import ERROR, verify_model
from op_models import ternary_conv_model
from test_op_ternary_conv import _depthwise_float_spec, _session

CASES = [
    ("Relu", {}),
    ("LeakyRelu", {"activation_alpha": 0.1}),
    ("Clip", {"activation_min": 0.0, "activation_max": 6.0}),
    ("Clip", {"activation_min": -0.25, "activation_max": 0.5}),
    ("HardSigmoid", {"activation_alpha": 0.2, "activation_beta": 0.5}),
    ("HardSigmoid", {}),
    ("HardSwish", {}),
    ("HardSwishRelu6", {}),
    ("Sigmoid", {}),
    ("Silu", {}),
]


def _inputs(rng, channels=12, size=9):
    x = rng.standard_normal((2, channels, size, size)).astype(np.float32) * 3
    x[0, 1, 2, 3] = np.nan  # NaN stays NaN through every activation
    return x


@pytest.mark.parametrize("name, params", CASES)
def test_int8_paths_apply_the_activation_bit_for_bit(rng, name, params):
    """Dense 3x3 and 1x1 convs with act_quant 1 and 3 (exact integer cores), activation in the C op
    against the numpy reference, on every ISA, one and two threads (Y split into tasks)."""
    x = _inputs(rng)
    for kernel in (3, 1):
        codes = rng.integers(-1, 2, size=(10, 12, kernel, kernel)).astype(np.int8)
        scales = rng.uniform(0.05, 0.2, 10).astype(np.float32)
        bias = rng.standard_normal(10).astype(np.float32)
        attrs = {"pads": [kernel // 2] * 4, "activation": name, **params}
        for act_quant in (1, 3):
            op = ternary_conv_model(codes, scales, bias, act_quant=act_quant, conv_attrs=attrs)
            conv = ternary_conv_reference(x, codes, scales, weight_shape=codes.shape, act_quant=act_quant,
                                          bias=bias, pads=attrs["pads"])
            expected = activations.apply(conv, name, params)
            assert not np.array_equal(expected[np.isfinite(expected)], conv[np.isfinite(conv)])  # it did something
            for isa in native.available_isas():
                with native.forced_isa(isa):
                    for threads in (1, 2):
                        y = _session(op.model, threads=threads).run(None, op.feeds(x))[0]
                        np.testing.assert_array_equal(y, expected, err_msg=f"{isa} act_quant={act_quant} k={kernel}")


@pytest.mark.parametrize("name, params", CASES)
def test_depthwise_float_path_applies_the_activation(rng, name, params):
    x = _inputs(rng, channels=16, size=20)
    codes = rng.integers(-1, 2, size=(16, 1, 3, 3)).astype(np.int8)
    scales = rng.uniform(0.5, 2, 16).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    attrs = {"group": 16, "pads": [1, 1, 1, 1], "strides": [2, 2]}
    op = ternary_conv_model(codes, scales, bias, conv_attrs={**attrs, "activation": name, **params})
    with np.errstate(invalid="ignore"):
        expected = activations.apply(_depthwise_float_spec(x, codes, scales, bias, attrs), name, params)
    for isa in native.available_isas():
        with native.forced_isa(isa):
            np.testing.assert_array_equal(_session(op.model, threads=2).run(None, op.feeds(x))[0], expected,
                                          err_msg=isa)


@pytest.mark.parametrize("name, params", CASES)
def test_reference_evaluator_and_onnxruntime_activation_ops_agree(rng, name, params):
    """The ReferenceEvaluator op applies the same activation; onnxruntime's own activation node after an
    unfused TernaryConv gives the same values to a rounding (its kernels may fuse a multiply-add)."""
    x = _inputs(rng)
    x[0, 1, 2, 3] = 0.0
    codes = rng.integers(-1, 2, size=(10, 12, 3, 3)).astype(np.int8)
    scales = rng.uniform(0.05, 0.2, 10).astype(np.float32)
    fused = ternary_conv_model(codes, scales, act_quant=1, conv_attrs={"pads": [1] * 4, "activation": name, **params})
    plain = ternary_conv_model(codes, scales, act_quant=1, conv_attrs={"pads": [1] * 4})
    y_fused = _session(fused.model).run(None, fused.feeds(x))[0]
    np.testing.assert_array_equal(ReferenceEvaluator(fused.model, new_ops=CUSTOM_OPS).run(None, fused.feeds(x))[0],
                                  y_fused)
    graph = plain.model.graph
    graph.node[0].output[0] = "conv"
    if name == "Clip":
        graph.initializer.extend([onnx.numpy_helper.from_array(np.float32(params["activation_min"]), "lo"),
                                  onnx.numpy_helper.from_array(np.float32(params["activation_max"]), "hi")])
        graph.node.append(helper.make_node("Clip", ["conv", "lo", "hi"], ["Y"]))
    elif name == "Silu":  # y * Sigmoid(y) as exporters write it
        graph.node.extend([helper.make_node("Sigmoid", ["conv"], ["gate"]),
                           helper.make_node("Mul", ["conv", "gate"], ["Y"])])
    elif name == "HardSwishRelu6":  # paddle2onnx's nodes
        graph.initializer.extend([onnx.numpy_helper.from_array(np.float32(v), n)
                                  for n, v in (("three", 3), ("zero", 0), ("six", 6))])
        graph.node.extend([helper.make_node("Add", ["conv", "three"], ["shifted"]),
                           helper.make_node("Clip", ["shifted", "zero", "six"], ["relu6"]),
                           helper.make_node("Mul", ["conv", "relu6"], ["product"]),
                           helper.make_node("Div", ["product", "six"], ["Y"])])
    else:
        onnx_attrs = {key.replace("activation_", ""): value for key, value in params.items()}
        graph.node.append(helper.make_node(name, ["conv"], ["Y"], **onnx_attrs))
    plain.model.opset_import[0].version = 17
    y_ort = _session(plain.model).run(None, plain.feeds(x))[0]
    # onnxruntime's exp is its own too: Sigmoid and Silu agree within a few ulp
    rtol = 1e-6 if name not in ("Sigmoid", "Silu") else 2e-6
    np.testing.assert_allclose(y_fused, y_ort, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("attrs, message", [
    ({"activation": "Gelu"}, "activation='Gelu' must be one of"),
    ({"activation": "Relu", "activation_alpha": 0.5}, "activation_alpha does not apply to activation Relu"),
    ({"activation": "Clip", "activation_min": 1.0, "activation_max": 0.0}, "activation_min <= activation_max"),
    ({"activation_beta": 0.5}, "activation_beta is set without an activation"),
])
def test_malformed_activation_fails_naming_the_node(rng, attrs, message):
    codes = rng.integers(-1, 2, size=(4, 3, 3, 3)).astype(np.int8)
    op = ternary_conv_model(codes, np.ones(4, np.float32), conv_attrs=attrs, node_name="bad_activation")
    with pytest.raises(Exception) as caught:
        _session(op.model)
    text = str(caught.value)
    assert "TernaryConv node 'bad_activation'" in text and message in text, text
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ReferenceEvaluator(op.model, new_ops=CUSTOM_OPS).run(None, op.feeds(np.zeros((1, 3, 5, 5), np.float32)))
    report = verify_model(op.model)  # `onnxbit verify` on the file says it before any session
    assert any(f.severity == ERROR and message in f.message for f in report.findings), report.findings


def test_schema_accepts_the_activation_attributes(rng):
    codes = rng.integers(-1, 2, size=(4, 3, 3, 3)).astype(np.int8)
    op = ternary_conv_model(codes, np.ones(4, np.float32),
                            conv_attrs={"activation": "HardSigmoid", "activation_alpha": 0.25, "activation_beta": 0.5})
    from onnxbit.ops.schemas import register_schemas

    register_schemas()
    onnx.checker.check_model(op.model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(op.model, strict_mode=True)
    assert inferred.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_a_large_batch_is_activated_a_few_images_at_a_time(rng):
    """Outputs of 256 KiB an image go four images a call (obx_tconv_compute_activated's 1 MiB): a batch of 6
    is a call of four, then one of two; every image comes out activated, the last ones too."""
    x = rng.standard_normal((6, 8, 64, 64)).astype(np.float32)
    codes = rng.integers(-1, 2, size=(16, 8, 1, 1)).astype(np.int8)
    scales = rng.uniform(0.05, 0.2, 16).astype(np.float32)
    op = ternary_conv_model(codes, scales, act_quant=1, conv_attrs={"activation": "HardSwish"})
    expected = activations.apply(ternary_conv_reference(x, codes, scales, weight_shape=codes.shape, act_quant=1),
                                 "HardSwish")
    for threads in (1, 2):
        np.testing.assert_array_equal(_session(op.model, threads=threads).run(None, op.feeds(x))[0], expected)


def test_the_libraries_exp_is_within_3_ulp_and_every_isa_computes_its_bits(rng):
    """Sigmoid and Silu use the library's own exp (the numpy reference mirrors it step by step): close to
    numpy's float64 exp over the range, and the C op's bits on every ISA over values from -100 to 100,
    infinities and NaN."""
    from onnxbit.reference.activation import _exp

    grid = np.linspace(-87, 88, 400001).astype(np.float32)
    exact = np.exp(grid.astype(np.float64))
    ulps = np.abs(_exp(grid).astype(np.float64) - exact) / np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert ulps.max() <= 3.0
    # a 1x1 conv with one code +1 and scale 1 passes X through: the activation alone
    values = np.concatenate([np.linspace(-100, 100, 4093), [np.inf, -np.inf, np.nan]]).astype(np.float32)
    x = values.reshape(1, 1, 1, -1)
    for name in ("Sigmoid", "Silu"):
        op = ternary_conv_model(np.ones((1, 1, 1, 1), np.int8), np.ones(1, np.float32),
                                conv_attrs={"activation": name})
        with np.errstate(invalid="ignore", over="ignore"):
            expected = activations.apply(x, name)
        for isa in native.available_isas():
            with native.forced_isa(isa):
                np.testing.assert_array_equal(_session(op.model).run(None, op.feeds(x))[0], expected,
                                              err_msg=f"{name} {isa}")


@pytest.mark.parametrize("name, params", CASES)
def test_every_activation_on_infinities_zeros_and_nan_on_every_isa(name, params):
    """Each activation over a grid that crosses its bends, with -0, both infinities and NaN, in runs
    longer than a vector (the vector loop) and a tail (the value-by-value loop): the C op's bits on
    every ISA are the reference's."""
    values = np.concatenate([np.linspace(-9, 9, 1001), [0.0, -0.0, np.inf, -np.inf, np.nan, 3.0, -3.0]])
    x = values.astype(np.float32).reshape(1, 1, 1, -1)
    op = ternary_conv_model(np.ones((1, 1, 1, 1), np.int8), np.ones(1, np.float32),
                            conv_attrs={"activation": name, **params})
    with np.errstate(invalid="ignore", over="ignore"):
        expected = activations.apply(x, name, params)
    for isa in native.available_isas():
        with native.forced_isa(isa):
            np.testing.assert_array_equal(_session(op.model).run(None, op.feeds(x))[0], expected,
                                          err_msg=f"{name} {isa}")
