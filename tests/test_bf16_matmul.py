"""The bfloat16-weight matmul (csrc/bf16/, com.onnxbit::BFloat16MatMul): every ISA path
bit for bit with the scalar fmaf chain, the numpy reference, onnxruntime's own MatMul on
the same float32 values, and errors that name the node."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from onnxbit import native, runtime
from onnxbit.bf16matmul import BFloat16Weights
from onnxbit.ops.reference import CUSTOM_OPS
from onnxbit.reference.bf16_matmul import bf16_bits, bf16_matmul_reference, bf16_to_float32, exact_bf16_count

ORT_ERRORS = (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.RuntimeException,
              ort_errors.InvalidGraph)
NODE = "head"


def random_bits(rng, k: int, n: int, scale: float = 0.05) -> np.ndarray:
    """bfloat16 bits of normal weights (rounded to nearest by dropping the low half after + 0x8000)."""
    w = (rng.standard_normal((k, n)) * scale).astype(np.float32).view(np.uint32)
    return ((w + np.uint32(0x8000)) >> np.uint32(16)).astype(np.uint16)


# Rows 1..13 reach every tile height of every kernel (AVX-512 takes 6, AVX2 3, NEON 2
# a call) and row tasks of 32; K 511..1025 crosses the 512-step blocks a chain is split
# into; N 1..300 leaves tails in the 32-column panels and 128-column quads.
SHAPES = [(1, 1, 1), (1, 1536, 300), (2, 7, 33), (3, 511, 129), (5, 512, 128), (6, 513, 97),
          (7, 64, 5), (8, 1025, 257), (13, 100, 160), (33, 40, 31), (70, 3, 130)]


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_every_isa_gives_the_scalar_fma_chain_bit_for_bit(rng, m, k, n):
    bits = random_bits(rng, k, n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    results = {}
    for isa in native.available_isas():
        with native.forced_isa(isa):
            results[isa] = BFloat16Weights(bits).matmul(a, bias=bias)
    scalar = results["scalar"]
    for isa, y in results.items():
        assert np.array_equal(y.view(np.uint32), scalar.view(np.uint32)), isa
    np.testing.assert_allclose(scalar, bf16_matmul_reference(a, bits, bias), rtol=1e-4, atol=1e-5)


def test_scalar_path_is_the_fmaf_chain_in_k_order(rng):
    """The header's formula, evaluated here one float32 fma at a time (float64 products of
    float32 values are exact, and the one rounding of fma is then numpy's float64 -> float32
    cast only when the sum is exact in float64: values of a few bits make it so)."""
    k, n = 40, 9
    bits = bf16_bits(rng.integers(-8, 9, size=(k, n)).astype(np.float32) / 8)
    a = (rng.integers(-64, 65, size=(3, k)) / 16).astype(np.float32)
    w = bf16_to_float32(bits)
    expected = np.zeros((3, n), np.float32)
    for i in range(k):
        expected = (a[:, i:i + 1].astype(np.float64) * w[i].astype(np.float64) + expected).astype(np.float32)
    with native.forced_isa("scalar"):
        got = BFloat16Weights(bits).matmul(a)
    assert np.array_equal(got, expected)


def test_ieee_special_values_on_every_isa(rng):
    k, n = 70, 40
    bits = random_bits(rng, k, n)
    bits[3, 5] = 0x7FC0   # NaN
    bits[10, 6] = 0x7F80  # +Inf
    bits[11, 7] = 0x8000  # -0
    a = rng.standard_normal((4, k)).astype(np.float32)
    a[2, 9] = np.inf
    results = {}
    for isa in native.available_isas():
        with native.forced_isa(isa):
            results[isa] = BFloat16Weights(bits).matmul(a)
    for isa, y in results.items():
        assert np.array_equal(y.view(np.uint32), results["scalar"].view(np.uint32)), isa
    y = results["scalar"]
    assert np.isnan(y[:, 5]).all() and np.isinf(y[[0, 1, 3], 6]).all()
    assert np.isnan(y[2]).any()  # Inf times weights of both signs


def test_empty_dimensions():
    assert BFloat16Weights(np.zeros((0, 5), np.uint16)).matmul(np.zeros((3, 0), np.float32)).tolist() == [[0.0] * 5] * 3
    assert BFloat16Weights(np.zeros((4, 0), np.uint16)).matmul(np.ones((2, 4), np.float32)).shape == (2, 0)
    assert BFloat16Weights(np.ones((4, 3), np.uint16)).matmul(np.ones((0, 4), np.float32)).shape == (0, 3)


def test_prepack_and_compute_errors():
    lib, ffi = native.lib(), native.ffi()
    err = ffi.new("char[]", 256)
    bits = np.zeros(6, np.uint16)
    assert lib.obx_bf16_prepack(ffi.from_buffer("uint16_t[]", bits), 6, 2, 4, err, 256) == ffi.NULL
    assert "holds 6 values; K=2 x N=4 needs 8" in ffi.string(err).decode()
    assert lib.obx_bf16_prepack(ffi.from_buffer("uint16_t[]", bits), 6, -2, 3, err, 256) == ffi.NULL
    assert "must be in [0," in ffi.string(err).decode()
    assert lib.obx_bf16_compute(ffi.NULL, ffi.NULL, 1, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL, err, 256) == -1
    assert "weights handle is NULL" in ffi.string(err).decode()
    with pytest.raises(ValueError, match=r"a must have shape \[..., 2\]"):
        BFloat16Weights(bits.reshape(2, 3)).matmul(np.ones((1, 3), np.float32))


def test_exactness_helpers():
    w = np.array([1.0, 0.5, -3.0, 1.0 + 2 ** -10], np.float32)
    assert exact_bf16_count(w) == 1
    with pytest.raises(ValueError, match="not bfloat16 numbers"):
        bf16_bits(w)
    assert np.array_equal(bf16_to_float32(bf16_bits(w[:3])), w[:3])


# ---- the onnxruntime op ----------------------------------------------------------------

def op_model(bits: np.ndarray, bias: np.ndarray | None = None, *, b_type=TensorProto.BFLOAT16,
             a_shape=("batch", "seq", None)) -> onnx.ModelProto:
    k, n = bits.shape
    b = helper.make_tensor("B", b_type, [k, n], bits.tobytes(), raw=True)
    inputs, inits = ["A", "B"], [b]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "bias"))
        inputs.append("bias")
    a_dims = [k if d is None else d for d in a_shape]
    graph = helper.make_graph(
        [helper.make_node("BFloat16MatMul", inputs, ["Y"], domain="com.onnxbit", name=NODE)], "g",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, a_dims)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [*a_dims[:-1], n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.onnxbit", 1)])


def float_model(bits: np.ndarray, bias: np.ndarray | None) -> onnx.ModelProto:
    k, n = bits.shape
    nodes = [helper.make_node("MatMul", ["A", "W"], ["P" if bias is not None else "Y"])]
    inits = [numpy_helper.from_array(bf16_to_float32(bits), "W")]
    if bias is not None:
        nodes.append(helper.make_node("Add", ["P", "bias"], ["Y"]))
        inits.append(numpy_helper.from_array(bias, "bias"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("with_bias", [False, True])
def test_op_matches_onnxruntime_matmul_and_the_reference(rng, threads, with_bias):
    k, n = 300, 530
    bits = random_bits(rng, k, n)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    ours = runtime.InferenceSession(op_model(bits, bias).SerializeToString(), options)
    theirs = ort.InferenceSession(float_model(bits, bias).SerializeToString(), options,
                                  providers=["CPUExecutionProvider"])
    reference = ReferenceEvaluator(op_model(bits, bias), new_ops=CUSTOM_OPS)
    for m in (1, 8, 70):
        a = rng.standard_normal((2, m, k)).astype(np.float32)
        y = ours.run(None, {"A": a})[0]
        assert y.shape == (2, m, n)
        np.testing.assert_allclose(y, theirs.run(None, {"A": a})[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(y, reference.run(None, {"A": a})[0], rtol=1e-5, atol=1e-5)
        with native.forced_isa("scalar"):  # the threaded op gives the serial scalar chain's bits
            serial = BFloat16Weights(bits).matmul(a, bias=bias)
        assert np.array_equal(y.view(np.uint32), serial.view(np.uint32))


def test_schema_checks_and_infers_the_output_shape(rng):
    model = op_model(random_bits(rng, 16, 24))
    onnx.checker.check_model(model)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", "seq", 24]
    with pytest.raises(onnx.shape_inference.InferenceError, match="last dimension of A is 15, B has K = 16"):
        onnx.shape_inference.infer_shapes(op_model(random_bits(rng, 16, 24), a_shape=(1, 15)), strict_mode=True)


def _names_node(message: str, problem: str) -> None:
    assert f"node '{NODE}'" in message or f"node ({NODE})" in message, message
    assert re.search(problem, message), f"{problem!r} not in: {message}"


def test_op_errors_name_the_node_and_the_problem(rng):
    bits = random_bits(rng, 6, 4)
    with pytest.raises(ORT_ERRORS) as info:  # float16 where bfloat16 belongs
        runtime.InferenceSession(op_model(bits, b_type=TensorProto.FLOAT16).SerializeToString())
    assert "BFloat16MatMul" in str(info.value) or "bfloat16" in str(info.value)
    session = runtime.InferenceSession(op_model(bits, a_shape=("rows", "cols")).SerializeToString())
    with pytest.raises(ORT_ERRORS) as info:
        session.run(None, {"A": np.ones((2, 5), np.float32)})
    _names_node(str(info.value), r"input A has shape \[2, 5\]; it must be \[..., K\] with K=6")
    with pytest.raises(ORT_ERRORS) as info:
        runtime.InferenceSession(op_model(bits, rng.standard_normal(3).astype(np.float32)).SerializeToString()) \
            .run(None, {"A": np.ones((1, 1, 6), np.float32)})
    _names_node(str(info.value), r"bias")
