"""Property tests and fuzz driver: the packed-ternary decoders, the
TernaryMatMul op in onnxruntime, and model checking/loading, fed random,
truncated and mutated data. Every case ends in a valid result or a clear
error; a crash kills the run, and a silently wrong result fails it.

Short by default (CI). The long run, over 100,000 cases in all:

    ONNXBIT_FUZZ_CASES=17000 ONNXBIT_LIBRARY=build/libonnxbit.so PYTHONPATH=. \\
        pytest -q tests/test_fuzz.py -p no:cacheprovider --hypothesis-show-statistics

(ONNXBIT_FUZZ_CASES examples per test; the row-decoder test runs once per
ISA path, so cases = 17000 * (3 + ISAs): 102,000 on a machine with scalar,
AVX2 and AVX-512; about 7 minutes on two cores.)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx.reference import ReferenceEvaluator

import onnxbit
from onnxbit import checksum, codecs, formats, rans, sparse, zero_runs
from onnxbit.errors import OnnxbitError
from onnxbit.ops.reference import CUSTOM_OPS
from onnxbit.reference import codecs as reference_codecs
from onnxbit.reference import rans as reference_rans
from onnxbit.reference import sparse as reference_sparse
from onnxbit.reference import zero_runs as reference_zero_runs
from onnxbit.runtime import InferenceSession
from onnxbit.verify_model import verify_model_file

from op_models import NODE_NAME, build_model

CASES = int(os.environ.get("ONNXBIT_FUZZ_CASES", "60"))
FUZZ = settings(max_examples=CASES, deadline=None, derandomize=CASES <= 100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"


def _quiet_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 4  # expected failures would flood the log
    options.intra_op_num_threads = 1
    return options


# -- decoders -----------------------------------------------------------------------------------

@FUZZ
@given(fmt=st.sampled_from(formats.NAMES), k=st.integers(0, 70), rows=st.integers(1, 4),
       data=st.binary(max_size=80), reshape=st.booleans())
def test_decoders_on_random_and_truncated_buffers(isa, fmt, k, rows, data, reshape):
    buffer = np.frombuffer(data, dtype=np.uint8)
    row_bytes = formats.get(fmt).row_bytes(k)
    if reshape and row_bytes and buffer.size >= rows * row_bytes:
        buffer = buffer[:rows * row_bytes].reshape(rows, row_bytes)
    try:
        reference = reference_codecs.unpack_ternary(buffer, k, fmt)
    except ValueError as exc:
        reference = exc
    try:
        decoded = codecs.unpack_ternary(buffer, k, fmt)
    except ValueError as exc:  # CorruptPackedDataError included
        assert str(exc)
        assert isinstance(reference, ValueError), f"C refused what the reference decodes: {exc}"
        if isinstance(exc, codecs.CorruptPackedDataError):
            assert exc.count > 0 and exc.first_offset >= 0
        return
    assert not isinstance(reference, Exception), f"C decoded what the reference refuses: {reference}"
    np.testing.assert_array_equal(decoded, reference)
    assert decoded.dtype == np.int8 and set(np.unique(decoded)) <= {-1, 0, 1}


@st.composite
def _rans_stream(draw):
    n = draw(st.integers(1, 12))
    k = draw(st.integers(1, 30))
    zeros = draw(st.sampled_from([0.0, 0.33, 0.9, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    codes = np.where(rng.random((n, k)) < zeros, 0, np.where(rng.random((n, k)) < 0.5, -1, 1)).astype(np.int8)
    rows = reference_codecs.pack_ternary(codes, "base3")
    block_rows = draw(st.integers(0, 5))
    stream = bytearray(reference_rans.encode(rows, k, block_rows))
    assert bytes(stream) == rans.encode_base3(rows, k, block_rows).tobytes()  # C writes what the reference does
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["flip", "truncate", "extend"]))
        if action == "flip" and stream:
            stream[draw(st.integers(0, len(stream) - 1))] ^= draw(st.integers(1, 255))
        elif action == "truncate":
            del stream[draw(st.integers(0, len(stream))):]
        else:
            stream += draw(st.binary(min_size=1, max_size=6))
    return bytes(stream), n, rows.shape[1], draw(st.booleans())


@FUZZ
@given(case=_rans_stream())
def test_rans_decoder_on_mutated_streams_agrees_with_the_reference(case):
    data, n, row_bytes, random_instead = case
    if random_instead:  # bytes that never were a stream, header-sized or not
        data = bytes(np.random.default_rng(len(data)).integers(0, 256, len(data), dtype=np.uint8))
    try:
        expected = reference_rans.decode(data, n, row_bytes)
    except ValueError as exc:
        with pytest.raises(rans.CorruptStreamError):
            rans.decode_base3(np.frombuffer(data, np.uint8), n, row_bytes)
        assert str(exc)
        return
    np.testing.assert_array_equal(rans.decode_base3(np.frombuffer(data, np.uint8), n, row_bytes), expected)
    assert (expected < 243).all()


@st.composite
def _sparse_stream(draw):
    """A zeroruns or sparse stream of a random tensor, mutated a few times."""
    fmt = draw(st.sampled_from([formats.ZERO_RUNS, formats.SPARSE]))
    n = draw(st.integers(1, 12))
    k = draw(st.integers(1, 300))
    zeros = draw(st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    codes = np.where(rng.random((n, k)) < zeros, 0, np.where(rng.random((n, k)) < 0.5, -1, 1)).astype(np.int8)
    encode = zero_runs.pack_zero_runs if fmt == formats.ZERO_RUNS else sparse.pack_sparse
    stream = bytearray(encode(codes).tobytes())
    # The library's encoder writes what the numpy one does, on every tensor drawn.
    reference = reference_zero_runs if fmt == formats.ZERO_RUNS else reference_sparse
    assert bytes(stream) == reference.encode(codes).tobytes()
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["flip", "truncate", "extend"]))
        if action == "flip" and stream:
            stream[draw(st.integers(0, len(stream) - 1))] ^= draw(st.integers(1, 255))
        elif action == "truncate":
            del stream[draw(st.integers(0, len(stream))):]
        else:
            stream += draw(st.binary(min_size=1, max_size=6))
    return fmt, bytes(stream), n, k


@FUZZ
@given(case=_sparse_stream())
def test_zeroruns_and_sparse_decoders_on_mutated_streams_agree_with_the_references(case):
    fmt, data, n, k = case
    module, reference = (zero_runs, reference_zero_runs) if fmt == formats.ZERO_RUNS else (sparse, reference_sparse)
    try:
        expected = reference.decode(data, n, k)
    except ValueError:
        with pytest.raises(module.CorruptStreamError):
            module.decode_base3(np.frombuffer(data, np.uint8), n, k)
        return
    np.testing.assert_array_equal(module.decode_base3(np.frombuffer(data, np.uint8), n, k), expected)


# -- the op ---------------------------------------------------------------------------------------

_FORMAT_ATTRIBUTE = st.one_of(st.sampled_from(formats.OP_FORMATS),
                              st.sampled_from(["", "2BIT", "base3\0", "auto", "3bit", "rans\0", "ran"]))


@st.composite
def _op_case(draw):
    """Mostly valid TernaryMatMul nodes, each with a chance of one thing wrong."""
    k = draw(st.integers(1, 40))
    n = draw(st.integers(1, 6))
    fmt = draw(st.sampled_from(formats.OP_FORMATS))
    group_size = draw(st.sampled_from([0, 0, 4, 16, k]))
    act_quant = draw(st.integers(0, 1))
    codes = draw(st.lists(st.integers(-1, 1), min_size=k * n, max_size=k * n))
    if fmt == formats.RANS:
        rows = reference_codecs.pack_ternary(np.array(codes, np.int8).reshape(n, k), formats.RANS_ROW_FORMAT)
        packed = np.frombuffer(reference_rans.encode(rows, k, draw(st.integers(0, 4))), np.uint8).copy()
    elif fmt == formats.ZERO_RUNS:
        packed = zero_runs.pack_zero_runs(np.array(codes, np.int8).reshape(n, k))
    elif fmt == formats.SPARSE:
        packed = sparse.pack_sparse(np.array(codes, np.int8).reshape(n, k))
    else:
        packed = reference_codecs.pack_ternary(np.array(codes, np.int8).reshape(n, k), fmt)
    groups = -(-k // group_size) if group_size else 0
    scale_shape = (n, groups) if group_size else draw(st.sampled_from([(1,), (n,)]))
    scales = np.array(draw(st.lists(st.floats(0.0625, 4.0, width=32), min_size=int(np.prod(scale_shape)),
                                    max_size=int(np.prod(scale_shape)))), np.float32).reshape(scale_shape)
    attrs = {"K": k, "N": n, "format": fmt, "group_size": group_size, "act_quant": act_quant}
    if draw(st.booleans()):
        attrs["crc32c"] = checksum.packed_weight_crc32c(packed, scales)
    fault = draw(st.sampled_from(["none", "none", "bytes", "truncate", "extend", "attribute", "scales",
                                  "dtype", "a_shape", "crc"]))
    a_shape = [draw(st.integers(0, 3)), k]
    if fault == "bytes" and packed.size:
        flat = packed.reshape(-1).copy()
        flat[draw(st.integers(0, flat.size - 1))] = draw(st.integers(0, 255))
        packed = flat.reshape(packed.shape)
    elif fault == "truncate":
        packed = packed.reshape(-1)[:draw(st.integers(0, max(0, packed.size - 1)))]
    elif fault == "extend":
        packed = np.concatenate([packed.reshape(-1), np.frombuffer(draw(st.binary(min_size=1, max_size=8)),
                                                                   np.uint8)])
    elif fault == "attribute":
        name = draw(st.sampled_from(["K", "N", "group_size", "act_quant", "format", "crc32c"]))
        attrs[name] = draw(_FORMAT_ATTRIBUTE) if name == "format" else draw(
            st.integers(-3, 2 ** 33) | st.sampled_from([0, -1, 2 ** 31, 2 ** 62]))
    elif fault == "scales":
        scales = scales.copy()
        scales.reshape(-1)[0] = draw(st.sampled_from([0.0, -1.0, np.nan, np.inf]))
        if draw(st.booleans()):
            scales = scales.reshape(-1)[:-1] if scales.size > 1 else np.zeros((0,), np.float32)
    elif fault == "dtype":
        which = draw(st.sampled_from(["B", "scales"]))
        if which == "B":
            packed = packed.astype(np.int8)
        else:
            scales = scales.astype(np.float64)
    elif fault == "a_shape":
        a_shape = draw(st.sampled_from([[k + 1], [2, k, 1], [3, max(1, k - 1)]]))
    elif fault == "crc":
        attrs["crc32c"] = (checksum.packed_weight_crc32c(packed, scales) + 1) % 2 ** 32
    constant = draw(st.booleans())
    seed = draw(st.integers(0, 2 ** 16))
    return packed, scales, attrs, constant, a_shape, seed, fault


@FUZZ
@given(case=_op_case())
def test_ternary_matmul_op_gives_the_reference_result_or_a_clear_error(case):
    packed, scales, attrs, constant, a_shape, seed, fault = case
    model = build_model(packed, scales, attrs=attrs, a_shape=None, constant=constant)
    a = np.random.default_rng(seed).standard_normal(a_shape).astype(np.float32)
    feeds = model.feeds(a)
    try:
        session = InferenceSession(model.model, sess_options=_quiet_options())
        got = session.run(None, feeds)[0]
    except Exception as exc:  # onnxruntime's error classes
        message = str(exc)
        assert message
        if "TernaryMatMul node" in message:
            assert f"'{NODE_NAME}'" in message
        return
    # onnxruntime computed: the numpy reference op must agree (no silently wrong result).
    try:
        expected = ReferenceEvaluator(model.model, new_ops=CUSTOM_OPS).run(None, feeds)[0]
    except Exception as exc:
        raise AssertionError(f"onnxruntime ran a node the reference refuses ({fault}): {exc}") from None
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-5)


# -- model files ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted_bytes() -> bytes:
    model = onnxbit.quantize(str(FIXTURES / "digits_qat_mlp.onnx"), preset="bitnet", target="onnxbit")
    return model.SerializeToString()


@FUZZ
@given(mutation=st.sampled_from(["flip", "truncate", "insert", "zero_run"]), where=st.floats(0, 1),
       value=st.integers(1, 255), length=st.integers(1, 64))
def test_mutated_model_files_give_findings_or_errors_never_crashes(converted_bytes, tmp_path_factory, mutation,
                                                                    where, value, length):
    data = bytearray(converted_bytes)
    at = min(int(where * len(data)), len(data) - 1)
    if mutation == "flip":
        data[at] ^= value
    elif mutation == "truncate":
        del data[at:]
    elif mutation == "insert":
        data[at:at] = bytes([value]) * length
    else:
        data[at:at + length] = bytes(min(length, len(data) - at))
    path = tmp_path_factory.mktemp("fuzz") / "model.onnx"
    path.write_bytes(bytes(data))
    try:
        report = verify_model_file(path)
    except OnnxbitError as exc:  # not an ONNX model any more
        assert str(path) in str(exc)
        report = None
    try:
        InferenceSession(bytes(data), sess_options=_quiet_options())
        loaded = True
    except Exception as exc:
        assert str(exc)
        loaded = False
    if report is not None and not report.ok and loaded:
        # onnxruntime may load what verify rejects only when the damage is outside
        # what the session checks (names, docs, unused values): never packed weights.
        assert not any("checksum" in f.message or "decode" in f.message for f in report.errors), report.errors

