"""Sizes, names and versions the C side must refuse (or handle exactly), through
onnxruntime sessions and through the Python API alike: one size check in C
(obx_tmm_shape_init) serves both."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from onnxbit import runtime
from onnxbit.ops.schemas import DOMAIN
from onnxbit.reference.ternary_matmul import ternary_matmul_reference
from onnxbit.tmatmul import ACT_INT8_TOKEN, TernaryWeights
from op_models import NODE_NAME, build_model, pack_codes

K, N = 10, 3
ORT_ERRORS = (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.RuntimeException,
              ort_errors.InvalidGraph)
INT64_MAX = 2**63 - 1


@pytest.fixture
def codes(rng):
    return rng.integers(-1, 2, size=(K, N)).astype(np.int8)


def creation_error(model) -> str:
    with pytest.raises(ORT_ERRORS) as info:
        runtime.InferenceSession(model)
    return str(info.value)


@pytest.mark.parametrize("constant", [True, False])
@pytest.mark.parametrize("group_size", [INT64_MAX, INT64_MAX - 1, 2**62 + 1, K, K + 1])
def test_group_size_at_least_k_is_one_group_in_a_session(rng, codes, group_size, constant):
    """ceil(K / group_size) computed without K + group_size - 1: near INT64_MAX
    that sum overflowed (UBSan) in the op."""
    scales = rng.uniform(0.5, 2.0, (N, 1)).astype(np.float32)
    op = build_model(pack_codes(codes, "2bit"), scales, constant=constant,
                     attrs={"K": K, "N": N, "format": "2bit", "group_size": group_size,
                            "act_quant": 1})
    a = rng.standard_normal((4, K)).astype(np.float32)
    y = runtime.InferenceSession(op.model).run(None, op.feeds(a))[0]
    assert np.array_equal(y, ternary_matmul_reference(a, codes, scales.reshape(-1), 0, 1))


@pytest.mark.parametrize("attrs,problem", [
    ({"group_size": -1}, r"group_size=-1 must be 0 \(not grouped\) or positive"),
    ({"group_size": -INT64_MAX - 1}, r"group_size=-9223372036854775808 must be 0"),
    ({"K": 1 << 24}, r"k = 16777216 is too large"),
    ({"K": INT64_MAX}, r"k = 9223372036854775807 is too large"),
    ({"N": INT64_MAX}, r"n = 9223372036854775807 must be in \[0, 2147483647\]"),
    ({"N": -5}, r"attribute N=-5 must be in \[1, 2147483647\]"),
])
def test_huge_or_negative_sizes_fail_session_creation(codes, attrs, problem):
    op = build_model(pack_codes(codes, "2bit"), np.ones(1, np.float32),
                     attrs={"K": K, "N": N, "format": "2bit", **attrs})
    message = creation_error(op.model)
    assert f"node '{NODE_NAME}'" in message and re.search(problem, message), message


@pytest.mark.parametrize("value", ["2bit\0junk", "2bit\0", "base3\0\0"])
def test_format_must_equal_a_name_exactly(codes, value):
    op = build_model(pack_codes(codes, "2bit"), np.ones(1, np.float32),
                     attrs={"K": K, "N": N, "format": value})
    message = creation_error(op.model)
    assert f"node '{NODE_NAME}'" in message, message
    assert "attribute format holds a NUL byte" in message, message


# ---- the Python API ---------------------------------------------------------

def _weights(codes, scales, group_size):
    return TernaryWeights(pack_codes(codes, "2bit"), K, N, scales, "2bit", group_size)


@pytest.mark.parametrize("group_size", [INT64_MAX, K])
def test_group_size_at_least_k_through_python(rng, codes, group_size):
    scales = rng.uniform(0.5, 2.0, N).astype(np.float32)
    a = rng.standard_normal((3, K)).astype(np.float32)
    y = _weights(codes, scales, group_size).matmul(a, ACT_INT8_TOKEN)
    assert np.array_equal(y, ternary_matmul_reference(a, codes, scales, 0, 1))


@pytest.mark.parametrize("group_size", [2**64 - 1, 2**64, 2**63])
def test_group_size_that_would_wrap_is_refused(codes, group_size):
    """2**64 - 1 used to wrap to zero groups: an empty scales array then gave
    all-zero results without an error."""
    for scales in ([], [1.0], np.ones(N)):
        with pytest.raises(ValueError, match="group_size"):
            _weights(codes, scales, group_size)


@pytest.mark.parametrize("kwargs,problem", [
    (dict(group_size=-1), r"group_size=-1 must be 0"),
    (dict(k=-1), r"k = -1 must not be negative"),
    (dict(n=-3), r"n = -3 must be in \[0, "),
    (dict(n=2**31), r"n = 2147483648 must be in \[0, 2147483647\]"),
    (dict(k=2**63 - 1), r"k = 9223372036854775807 is too large"),
    (dict(group_size=4, scales=[]), r"n_scales = 0, expected n \* ceil\(k / group_size\) = 3 \* 3 = 9"),
    (dict(packed=b""), r"packed weights hold 0 bytes, but 2bit needs"),
])
def test_sizes_checked_in_c_through_python(codes, kwargs, problem):
    args = dict(packed=pack_codes(codes, "2bit"), k=K, n=N, scales=[1.0], fmt="2bit",
                group_size=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=problem):
        TernaryWeights(**args)


def test_close_waits_for_matmul_running_on_other_threads(rng):
    """cffi releases the GIL inside obx_tmm_compute: close() on another thread used
    to free the weights under a running matmul (heap use-after-free)."""
    k = n = 2048  # 1 MiB of packed weights: freed memory goes back to the OS
    codes = rng.integers(-1, 2, size=(k, n)).astype(np.int8)
    scales = rng.uniform(0.5, 2.0, n).astype(np.float32)
    weights = TernaryWeights(pack_codes(codes, "2bit"), k, n, scales, "2bit")
    a = rng.standard_normal((16, k)).astype(np.float32)
    expected = ternary_matmul_reference(a, codes, scales, 0, 1)
    started, results, errors = threading.Barrier(5), [], []

    def worker():
        started.wait()
        try:
            while True:
                results.append(np.array_equal(weights.matmul(a, ACT_INT8_TOKEN), expected))
        except ValueError as err:  # closed: the only way out
            errors.append(str(err))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    started.wait()
    while len(results) < 8:  # matmul calls are in flight on every thread
        threading.Event().wait(0.001)
    weights.close()
    for thread in threads:
        thread.join(timeout=60)
    assert all(results) and len(results) >= 8
    assert errors == ["the weights were closed"] * 4
    weights.close()  # a second close is harmless


@pytest.mark.parametrize("version", [2, 1000])
def test_a_model_importing_another_domain_version_is_refused(codes, version, tmp_path):
    """onnxruntime registers a custom domain for every version, so the library
    cannot refuse version 2 itself; onnxbit's sessions check the import."""
    import onnx

    from onnxbit.errors import ModelError

    model = build_model(pack_codes(codes, "2bit"), np.ones(1, np.float32),
                        attrs={"K": K, "N": N, "format": "2bit"}).model
    for imp in model.opset_import:
        if imp.domain == DOMAIN:
            imp.version = version
    path = tmp_path / "v.onnx"
    onnx.save(model, str(path))
    for argument in (model, model.SerializeToString(), path):
        with pytest.raises(ModelError, match=f"imports com.onnxbit version {version}; .* version 1 only"):
            runtime.InferenceSession(argument)
