"""com.onnxbit::TernaryMatMul in real onnxruntime sessions against the numpy reference."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx.reference import ReferenceEvaluator

from onnxbit import runtime
from onnxbit.ops.reference import CUSTOM_OPS
from onnxbit.ops.schemas import register_schemas
from onnxbit.reference.ternary_matmul import ternary_matmul_reference
from op_models import random_scales, ternary_matmul_model


def _session(model: onnx.ModelProto, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return runtime.InferenceSession(model, sess_options=options)


def _check(y: np.ndarray, expected: np.ndarray, act_quant: int, k: int) -> None:
    assert y.dtype == np.float32 and y.shape == expected.shape
    if act_quant:
        # The int8 path is exact integer arithmetic plus fixed float32 steps.
        np.testing.assert_array_equal(y, expected)
    else:
        # Float sums in a different order: error grows with K.
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * np.sqrt(k) * 8)


def _case(rng, m, k, n, fmt, scale_kind, act_quant, with_bias, constant, group_size=0,
          lead=()):
    codes = rng.integers(-1, 2, size=(k, n)).astype(np.int8)
    scales = random_scales(rng, scale_kind, k, n, group_size)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    a = rng.standard_normal((*lead, m, k)).astype(np.float32)
    op = ternary_matmul_model(codes, scales, bias, fmt=fmt, group_size=group_size,
                              act_quant=act_quant, constant=constant,
                              a_shape=None if lead else ("m", "k"))
    return op, a, lambda x: ternary_matmul_reference(x, codes, scales, group_size, act_quant, bias)


# (M, K, N, format, scales, group_size, act_quant, bias, constant B)
CASES = [
    (1, 1, 1, "2bit", "tensor", 0, 0, False, True),
    (2, 5, 3, "base3", "channel", 0, 1, True, True),
    (3, 64, 64, "2bit", "channel", 0, 1, False, False),
    (8, 255, 257, "base3", "tensor", 0, 0, True, False),
    (17, 255, 3, "2bit", "group", 64, 1, True, True),
    (64, 64, 257, "base3", "group", 32, 0, False, True),
    (130, 5, 64, "2bit", "channel", 0, 0, True, True),
    (1, 4096, 64, "2bit", "group", 128, 1, False, True),
    (8, 4096, 3, "base3", "channel", 0, 1, True, False),
    (130, 64, 3, "base3", "group", 5, 1, False, False),
    (17, 1, 257, "base3", "channel", 0, 1, True, True),
    (2, 4096, 1, "2bit", "tensor", 0, 0, False, True),
    # the AVX-512 integer GEMM path (M >= 24): row tile (6), panel tile (32
    # columns), K-block (128) and task (256 rows) tails
    (53, 1000, 33, "2bit", "channel", 0, 1, True, True),
    (300, 255, 257, "base3", "tensor", 0, 1, False, False),
]


@pytest.mark.parametrize("m,k,n,fmt,scale_kind,group_size,act_quant,with_bias,constant", CASES)
def test_matches_reference_on_every_isa(isa, rng, m, k, n, fmt, scale_kind, group_size,
                                        act_quant, with_bias, constant):
    op, a, reference = _case(rng, m, k, n, fmt, scale_kind, act_quant, with_bias, constant,
                            group_size)
    expected = reference(a)
    y = _session(op.model).run(None, op.feeds(a))[0]
    _check(y, expected, act_quant, k)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 20), k=st.integers(1, 80), n=st.integers(1, 40),
       fmt=st.sampled_from(["2bit", "base3"]), act_quant=st.sampled_from([0, 1]),
       scale_kind=st.sampled_from(["tensor", "channel", "group"]), group_size=st.integers(1, 40),
       with_bias=st.booleans(), constant=st.booleans(), seed=st.integers(0, 2**31))
def test_random_shapes_match_reference(m, k, n, fmt, act_quant, scale_kind, group_size,
                                       with_bias, constant, seed):
    rng = np.random.default_rng(seed)
    group_size = group_size if scale_kind == "group" else 0
    op, a, reference = _case(rng, m, k, n, fmt, scale_kind, act_quant, with_bias, constant,
                            group_size)
    expected = reference(a)
    y = _session(op.model).run(None, op.feeds(a))[0]
    _check(y, expected, act_quant, k)


@pytest.mark.parametrize("act_quant", [0, 1])
def test_leading_batch_dims(rng, act_quant):
    op, a, reference = _case(rng, 3, 64, 5, "2bit", "channel", act_quant, True, True, lead=(2,))
    expected = reference(a)
    assert a.shape == (2, 3, 64)
    y = _session(op.model).run(None, op.feeds(a))[0]
    assert y.shape == (2, 3, 5)
    _check(y, expected, act_quant, 64)


def test_onnxruntime_infers_output_shape_with_symbolic_dims(rng):
    codes = rng.integers(-1, 2, size=(16, 7)).astype(np.int8)
    op = ternary_matmul_model(codes, np.ones(1, np.float32), a_shape=("batch", 3, "k"))
    # Y is declared without a shape: what the session reports comes from the
    # op's shape inference (A's dims with the last one replaced by N).
    assert _session(op.model).get_outputs()[0].shape == ["batch", 3, 7]


def test_unnamed_unknown_dims_are_not_inferred_as_minus_one(rng):
    # Reshape(-1, K) leaves the first dim of A unknown and unnamed; claiming -1
    # as Y's size made onnxruntime constant-fold Shape(Y) to [-1, N].
    k, n = 8, 4
    codes = rng.integers(-1, 2, size=(k, n)).astype(np.int8)
    op = ternary_matmul_model(codes, np.ones(1, np.float32))
    graph = op.model.graph
    tmm = graph.node[0]
    a_name = tmm.input[0]
    graph.input[0].CopyFrom(onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", "t", k]))
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([-1, k], np.int64), "target_shape"))
    graph.node.insert(0, onnx.helper.make_node("Reshape", ["x", "target_shape"], [a_name]))
    graph.node.append(onnx.helper.make_node("Shape", [tmm.output[0]], ["y_shape"]))
    graph.output.append(onnx.helper.make_tensor_value_info("y_shape", onnx.TensorProto.INT64, None))
    x = rng.standard_normal((2, 3, k)).astype(np.float32)
    y, y_shape = _session(op.model).run(None, {"x": x})
    assert y.shape == (6, n)
    np.testing.assert_array_equal(y_shape, [6, n])


def test_empty_batch_gives_empty_output(rng):
    op, _, _ = _case(rng, 1, 16, 4, "2bit", "tensor", 1, True, True)
    y = _session(op.model).run(None, op.feeds(np.zeros((0, 16), np.float32)))[0]
    assert y.shape == (0, 4)


def test_non_finite_activation_row_gives_nan_row(rng):
    op, a, reference = _case(rng, 3, 32, 4, "base3", "channel", 1, False, True)
    a[1, 5] = np.inf
    expected = reference(a)
    y = _session(op.model).run(None, op.feeds(a))[0]
    assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()
    np.testing.assert_array_equal(y, expected)


def _codes_and_scales(op):
    """Codes and scales back from a model's initializers, through the numpy codec."""
    from onnxbit.reference.codecs import unpack_ternary

    inits = {t.name: onnx.numpy_helper.to_array(t) for t in op.model.graph.initializer}
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in op.model.graph.node[0].attribute}
    codes = unpack_ternary(inits["B"].reshape(attrs["N"], -1), attrs["K"], attrs["format"].decode())
    return codes.T, inits["scales"]


@pytest.mark.parametrize("act_quant", [0, 1])
def test_one_and_two_threads_agree_exactly(rng, act_quant):
    op, a, reference = _case(rng, 130, 255, 257, "2bit", "channel", act_quant, True, True)
    expected = reference(a)
    y1 = _session(op.model, threads=1).run(None, op.feeds(a))[0]
    y2 = _session(op.model, threads=2).run(None, op.feeds(a))[0]
    np.testing.assert_array_equal(y1, y2)
    _check(y2, expected, act_quant, 255)


@pytest.mark.parametrize("fmt", ["2bit", "base3"])
@pytest.mark.parametrize("act_quant", [0, 1])
def test_reference_evaluator_agrees_with_onnxruntime(rng, fmt, act_quant):
    op, a, reference = _case(rng, 5, 70, 9, fmt, "group", act_quant, True, True, group_size=16)
    expected = reference(a)
    y_ref = ReferenceEvaluator(op.model, new_ops=CUSTOM_OPS).run(None, op.feeds(a))[0]
    y_ort = _session(op.model).run(None, op.feeds(a))[0]
    _check(y_ort, y_ref, act_quant, 70)
    _check(y_ref, expected, act_quant, 70)


def test_unpacked_codes_round_trip_through_the_model(rng):
    codes = rng.integers(-1, 2, size=(23, 6)).astype(np.int8)
    op = ternary_matmul_model(codes, np.ones(6, np.float32), fmt="base3", b_2d=False)
    decoded, _ = _codes_and_scales(op)
    np.testing.assert_array_equal(decoded, codes)


def test_checker_and_shape_inference_accept_the_op(rng):
    register_schemas()
    register_schemas()  # idempotent
    codes = rng.integers(-1, 2, size=(40, 9)).astype(np.int8)
    op = ternary_matmul_model(codes, random_scales(rng, "group", 40, 9, 16), group_size=16,
                              act_quant=1, a_shape=("batch", 4, "k"))
    onnx.checker.check_model(op.model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(op.model, strict_mode=True)
    y = inferred.graph.output[0].type.tensor_type
    assert y.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in y.shape.dim] == ["batch", 4, 9]


def test_checker_enforces_the_schema(rng):
    register_schemas()
    op = ternary_matmul_model(np.zeros((8, 3), np.int8), np.ones(1, np.float32))
    del op.model.graph.node[0].attribute[:]
    with pytest.raises(onnx.checker.ValidationError, match="Required attribute 'format'"):
        onnx.checker.check_model(op.model, check_custom_domain=True)


def test_shape_inference_rejects_k_mismatch(rng):
    register_schemas()
    codes = rng.integers(-1, 2, size=(40, 9)).astype(np.int8)
    op = ternary_matmul_model(codes, np.ones(1, np.float32), a_shape=("batch", 41))
    expected = r"\(tmm_under_test\): the last dimension of A is 41, attribute K is 40"
    with pytest.raises(onnx.shape_inference.InferenceError, match=expected):
        onnx.shape_inference.infer_shapes(op.model, strict_mode=True)


def test_inference_session_accepts_path_bytes_and_proto(tmp_path, rng):
    op, a, reference = _case(rng, 2, 8, 3, "2bit", "tensor", 1, False, True)
    path = tmp_path / "tmm.onnx"
    onnx.save(op.model, path)
    expected = reference(a)
    for source in (op.model, op.model.SerializeToString(), path, str(path)):
        y = runtime.InferenceSession(source).run(None, op.feeds(a))[0]
        np.testing.assert_array_equal(y, expected)
    with pytest.raises(TypeError, match="ModelProto"):
        runtime.InferenceSession(42)


def test_register_returns_the_options_and_is_idempotent(rng):
    options = ort.SessionOptions()
    assert runtime.register(options) is options
    assert runtime.register(options) is options  # a second registration would fail
    op, a, reference = _case(rng, 2, 8, 3, "base3", "channel", 1, True, False)
    y = runtime.InferenceSession(op.model, sess_options=options).run(None, op.feeds(a))[0]
    np.testing.assert_array_equal(y, reference(a))
    assert isinstance(runtime.register(), ort.SessionOptions)


def _resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_sessions_free_their_prepacked_weights():
    # 1 MiB of packed weights (more once repacked) per session: a kernel that
    # kept its prepacked copy would grow the process by 12 MiB or more here.
    codes = np.ones((4096, 1024), np.int8)
    op = ternary_matmul_model(codes, np.ones(1, np.float32))
    model_bytes = op.model.SerializeToString()
    a = np.ones((1, 4096), np.float32)
    for _ in range(3):  # warm up allocator pools
        runtime.InferenceSession(model_bytes).run(None, op.feeds(a))
    before = _resident_mib()
    for _ in range(12):
        y = runtime.InferenceSession(model_bytes).run(None, op.feeds(a))[0]
    assert np.all(y == 4096)
    assert _resident_mib() - before < 8
