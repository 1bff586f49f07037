"""Every bad TernaryMatMul input or attribute is an onnxruntime error naming the node
and the problem: at session creation when it is knowable then (attributes,
constant weights), at run time otherwise. Never a crash."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx.reference import ReferenceEvaluator
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from onnxbit import runtime
from onnxbit.ops.reference import CUSTOM_OPS
from op_models import NODE_NAME, build_model, pack_codes

K, N = 10, 3
ORT_ERRORS = (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.RuntimeException,
              ort_errors.InvalidGraph)
VALID_ATTRS = {"K": K, "N": N, "format": "2bit"}


@pytest.fixture
def packed(rng):
    return pack_codes(rng.integers(-1, 2, size=(K, N)).astype(np.int8), "2bit")


def _assert_names(message: str, problem: str) -> None:
    assert f"node '{NODE_NAME}'" in message or f"node ({NODE_NAME})" in message, message
    assert re.search(problem, message), f"{problem!r} not in: {message}"


def creation_error(op) -> str:
    with pytest.raises(ORT_ERRORS) as info:
        runtime.InferenceSession(op.model)
    return str(info.value)


def run_error(op, a=None) -> str:
    session = runtime.InferenceSession(op.model)
    a = np.ones((2, K), np.float32) if a is None else a
    with pytest.raises(ORT_ERRORS) as info:
        session.run(None, op.feeds(a))
    return str(info.value)


@pytest.mark.parametrize("attrs,problem", [
    ({"N": N, "format": "2bit"}, r"required attribute 'K' \(int\) is missing"),
    ({"K": K, "format": "2bit"}, r"required attribute 'N' \(int\) is missing"),
    ({"K": 0, "N": N, "format": "2bit"}, r"attribute K=0 must be in \[1, "),
    ({"K": -4, "N": N, "format": "2bit"}, r"attribute K=-4 must be"),
    ({"K": K, "N": 0, "format": "2bit"}, r"attribute N=0 must be"),
    ({"K": K, "N": N},
     r"required attribute 'format' \(string\) is missing; expected one of: 2bit, base3"),
    ({"K": K, "N": N, "format": 2}, r"attribute 'format' must be a string, one of: 2bit, base3"),
    ({"K": K, "N": N, "format": "x" * 40},
     r"attribute format is not a known format \(40 characters long\)"),
    ({"K": 10.0, "N": N, "format": "2bit"}, r"attribute 'K' must be an int"),
    ({**VALID_ATTRS, "group_size": "4"}, r"attribute 'group_size' must be an int"),
    ({**VALID_ATTRS, "act_quant": 1.0}, r"attribute 'act_quant' must be an int"),
    ({"K": K, "N": N, "format": "3bit"},
     r"format='3bit' is not a known format; expected one of: 2bit, base3"),
    ({**VALID_ATTRS, "act_quant": 3}, r"act_quant=3 \(int8 per input pixel\) is TernaryConv's only"),
    ({**VALID_ATTRS, "act_quant": 4}, r"act_quant=4 must be 0 .*, 1 .* or 2"),
    ({**VALID_ATTRS, "act_quant": 2}, r"required attribute 'act_scale' \(float\) is missing"),
    ({**VALID_ATTRS, "act_quant": 2, "act_scale": 0.0}, r"act_scale=0 must be finite and > 0"),
    ({**VALID_ATTRS, "act_quant": 2, "act_scale": -1.5}, r"act_scale=-1.5 must be finite and > 0"),
    ({**VALID_ATTRS, "act_quant": 2, "act_scale": float("nan")}, r"act_scale=nan must be finite"),
    ({**VALID_ATTRS, "act_quant": 2, "act_scale": float("inf")}, r"act_scale=inf must be finite"),
    ({**VALID_ATTRS, "act_quant": 2, "act_scale": 3}, r"attribute 'act_scale' must be a float"),
    ({**VALID_ATTRS, "act_quant": 1, "act_scale": 2.0},
     r"act_scale is only used with act_quant=2, but act_quant=1"),
    ({**VALID_ATTRS, "act_scale": 2.0}, r"act_scale is only used with act_quant=2, but act_quant=0"),
    ({**VALID_ATTRS, "group_size": -8}, r"group_size=-8 must be 0 \(not grouped\) or positive"),
])
def test_bad_attributes_fail_session_creation(packed, attrs, problem):
    op = build_model(packed, np.ones(1, np.float32), attrs=attrs)
    _assert_names(creation_error(op), problem)


@pytest.mark.parametrize("fmt,byte,problem", [
    ("2bit", 0b11_00_01_10, r"invalid 2bit code"),
    ("base3", 243, r"invalid|243"),
])
@pytest.mark.parametrize("constant", [True, False])
def test_corrupt_weights(rng, fmt, byte, problem, constant):
    b = pack_codes(rng.integers(-1, 2, size=(K, N)).astype(np.int8), fmt)
    b[1, 1] = byte
    op = build_model(b, np.ones(N, np.float32), attrs={"K": K, "N": N, "format": fmt},
                     constant=constant)
    message = creation_error(op) if constant else run_error(op)
    _assert_names(message, r"invalid weights \(format " + fmt + r"\)")
    _assert_names(message, problem)


@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_ALL])
def test_corrupt_constant_weights_fail_creation_at_every_optimization_level(packed, level):
    # B stays a constant the kernel sees (and validates) at creation whatever
    # the graph optimizer does around it.
    packed[0, 0] = 0xFF
    op = build_model(packed, np.ones(1, np.float32), attrs=VALID_ATTRS)
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    with pytest.raises(ORT_ERRORS) as info:
        runtime.InferenceSession(op.model, sess_options=options)
    _assert_names(str(info.value), r"invalid weights \(format 2bit\): invalid 2bit code")


def test_reference_evaluator_names_the_node_too(packed):
    packed[0, 0] = 0xFF
    op = build_model(packed, np.ones(1, np.float32), attrs=VALID_ATTRS)
    evaluator = ReferenceEvaluator(op.model, new_ops=CUSTOM_OPS)
    with pytest.raises(ValueError, match=rf"TernaryMatMul node '{NODE_NAME}': invalid weights"):
        evaluator.run(None, op.feeds(np.ones((2, K), np.float32)))


@pytest.mark.parametrize("constant", [True, False])
@pytest.mark.parametrize("b_shape,problem", [
    ((N * 3 - 1,), r"B is too short: 8 bytes, but K=10 N=3 in format 2bit need N \* 3 = 9 bytes"),
    ((N * 3 + 2,), r"B is too long: 11 bytes"),
    ((N, 2), r"B has shape \[3, 2\]; K=10 N=3 in format 2bit needs \[N, 3\] = \[3, 3\]"),
    ((1, N, 3), r"B must be 1-D or 2-D, got shape \[1, 3, 3\]"),
])
def test_b_of_the_wrong_size(b_shape, problem, constant):
    b = np.full(b_shape, 0b01010101, np.uint8)
    op = build_model(b, np.ones(1, np.float32), attrs=VALID_ATTRS, constant=constant)
    _assert_names(creation_error(op) if constant else run_error(op), problem)


@pytest.mark.parametrize("constant", [True, False])
@pytest.mark.parametrize("group_size,scales_shape,problem", [
    (0, (N + 1,), r"scales has shape \[4\]; without group_size it must be \[1\] or \[N\] = \[3\]"),
    (0, (N, 1), r"scales has shape \[3, 1\]"),
    (4, (N,), r"scales has shape \[3\]; with group_size=4 it must be "
              r"\[N, ceil\(K / group_size\)\] = \[3, 3\]"),
    (4, (N, 2), r"scales has shape \[3, 2\]"),
])
def test_scales_of_the_wrong_shape(packed, group_size, scales_shape, problem, constant):
    attrs = {**VALID_ATTRS, "group_size": group_size}
    op = build_model(packed, np.ones(scales_shape, np.float32), attrs=attrs, constant=constant)
    _assert_names(creation_error(op) if constant else run_error(op), problem)


@pytest.mark.parametrize("constant", [True, False])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 0.0, -1.5])
def test_non_finite_or_non_positive_scales(packed, bad, constant):
    scales = np.ones(N, np.float32)
    scales[2] = bad
    op = build_model(packed, scales, attrs=VALID_ATTRS, constant=constant)
    message = creation_error(op) if constant else run_error(op)
    _assert_names(message, r"invalid weights")
    assert re.search(r"scale", message, re.I), message


def test_scalar_activation(packed):
    op = build_model(packed, np.ones(1, np.float32), attrs=VALID_ATTRS, a_shape=None)
    _assert_names(run_error(op, np.array(1.0, np.float32)),
                  r"input A is a scalar \(rank 0\); it must have shape \[\.\.\., K\] with K=10")


@pytest.mark.parametrize("a_shape", [(2, K + 1), (K, 1), (2, 3, K - 1)])
def test_activation_k_mismatch(packed, a_shape):
    op = build_model(packed, np.ones(1, np.float32), attrs=VALID_ATTRS, a_shape=None)
    shape_text = "[" + ", ".join(map(str, a_shape)) + "]"
    _assert_names(run_error(op, np.ones(a_shape, np.float32)),
                  re.escape(f"input A has shape {shape_text}; its last dimension must equal K=10"))


@pytest.mark.parametrize("bias_shape", [(N + 1,), (1, N), ()])
def test_bias_of_the_wrong_shape(packed, bias_shape):
    op = build_model(packed, np.ones(1, np.float32), np.zeros(bias_shape, np.float32),
                     attrs=VALID_ATTRS, constant=False)
    _assert_names(run_error(op), r"bias has shape \[.*\]; it must be \[N\] = \[3\]")


@pytest.mark.parametrize("a_dtype,b_dtype,s_dtype,bad_input", [
    (TensorProto.DOUBLE, np.uint8, np.float32, "A"),
    (TensorProto.FLOAT, np.int8, np.float32, "B"),
    (TensorProto.FLOAT, np.uint8, np.float64, "scales"),
])
def test_wrong_dtypes_are_rejected_by_the_op_signature(packed, a_dtype, b_dtype, s_dtype,
                                                       bad_input):
    op = build_model(packed.astype(b_dtype), np.ones(1, s_dtype), attrs=VALID_ATTRS,
                     a_dtype=a_dtype)
    # onnxruntime checks types against the op's declared signature before any
    # kernel exists; its message names the node and the offending input.
    _assert_names(creation_error(op), rf"Type Error: .* input parameter \({bad_input}\)")
