"""The "zeroruns" stream format: C decoder against the numpy reference on
random tensors at several sparsities, corrupt or truncated streams rejected
by both with a clear error, never a crash; "auto" choosing among every
stream; TernaryMatMul and TernaryConv computing identically in every format."""

from __future__ import annotations

import numpy as np
import pytest

from onnx.reference import ReferenceEvaluator

from onnxbit.bench.formats import synthetic_codes
from onnxbit import codecs, formats, streams, zero_runs
from onnxbit.ops.reference import CUSTOM_OPS
from onnxbit.reference import zero_runs as reference
from onnxbit.reference.ternary_matmul import ternary_matmul_reference
from onnxbit.runtime import InferenceSession
from op_models import build_model, pack_codes, ternary_conv_model


@pytest.mark.parametrize("zeros", [0.10, 0.50, 0.90, 0.99, 1.0])
@pytest.mark.parametrize("n, k", [(1, 1), (3, 7), (17, 130), (64, 1000)])
def test_round_trip_matches_the_reference(rng, zeros, n, k):
    codes = synthetic_codes(n, k, zeros, rng)
    stream = zero_runs.pack_zero_runs(codes)
    rows = zero_runs.decode_base3(stream, n, k)
    np.testing.assert_array_equal(rows, codecs.pack_ternary(codes, "base3"))
    np.testing.assert_array_equal(rows, reference.decode(stream.tobytes(), n, k))
    np.testing.assert_array_equal(zero_runs.unpack_zero_runs(stream, k, n), codes)


def test_long_runs_take_multi_byte_varints(rng):
    codes = np.zeros((4, 100_000), np.int8)
    codes[3, -1] = -1  # one nonzero after 399 999 zeros: a 3-byte varint
    stream = zero_runs.pack_zero_runs(codes)
    assert stream.size == 1 + 1 + 3
    np.testing.assert_array_equal(zero_runs.unpack_zero_runs(stream, 100_000, 4), codes)


def _both_reject(data: bytes, n: int, k: int, message: str) -> None:
    with pytest.raises(zero_runs.CorruptStreamError, match=message):
        zero_runs.decode_base3(np.frombuffer(data, np.uint8), n, k)
    with pytest.raises(ValueError):
        reference.decode(data, n, k)


def test_corrupt_and_truncated_streams_are_errors(rng):
    codes = synthetic_codes(8, 50, 0.9, rng)
    stream = zero_runs.pack_zero_runs(codes).tobytes()
    for cut in range(len(stream)):
        _both_reject(stream[:cut], 8, 50, "empty|truncated|bytes after")
    _both_reject(stream + b"\0", 8, 50, "1 bytes after its last nonzero")
    _both_reject(b"\x02" + stream[1:], 8, 50, "version 2")
    _both_reject(b"\x01\x02\x00\xff", 2, 2, "entry 1 of 2 is truncated")
    _both_reject(b"\x01\x01\x08", 2, 2, "runs past the 4 codes")  # 4 zeros then a code: position 4
    _both_reject(b"\x01\x05", 2, 2, "claims 5 nonzeros in 4 codes")
    _both_reject(b"\x01\x01" + b"\xff" * 9 + b"\x00", 2, 2, "longer than 9 bytes")


def test_every_byte_flip_decodes_to_valid_rows_or_is_rejected(rng):
    """No flip may crash or write outside the rows; what decodes agrees with the reference."""
    codes = synthetic_codes(6, 40, 0.8, rng)
    stream = zero_runs.pack_zero_runs(codes).tobytes()
    for position in range(len(stream)):
        for xor in (0x01, 0x80, 0xFF):
            data = bytearray(stream)
            data[position] ^= xor
            try:
                rows = zero_runs.decode_base3(np.frombuffer(bytes(data), np.uint8), 6, 40)
            except zero_runs.CorruptStreamError:
                with pytest.raises(ValueError):
                    reference.decode(bytes(data), 6, 40)
                continue
            np.testing.assert_array_equal(rows, reference.decode(bytes(data), 6, 40))


@pytest.mark.parametrize("n, k, zeros, expected", [
    (64, 2048, 0.10, "rans"), (64, 2048, 1 / 3, "rans"), (64, 2048, 0.99, "rans"),
    (16, 40, 1 / 3, "base3"),  # 640 weights: rans' 24 bytes of model and block framing cost too much
    (16, 40, 0.99, "zeroruns"),  # a handful of nonzeros: one byte each
])
def test_auto_keeps_the_smallest_of_base3_and_every_stream(rng, n, k, zeros, expected):
    codes = synthetic_codes(n, k, zeros, rng)
    rows = codecs.pack_ternary(codes, "base3")
    sizes = {"base3": rows.nbytes, **{name: streams.encode(name, rows, k).nbytes for name in formats.STREAMS}}
    stored, chosen = streams.stored("auto", rows, k)
    assert chosen == expected == min(sizes, key=sizes.get), sizes
    assert stored.nbytes == sizes[chosen] <= rows.nbytes
    decoded = streams.decode_base3(chosen, stored, n, k) if chosen != "base3" else stored
    np.testing.assert_array_equal(decoded, rows)


@pytest.mark.parametrize("fmt", ["2bit", "base3", "rans", "zeroruns", "sparse"])
@pytest.mark.parametrize("constant", [True, False])
def test_ternary_matmul_computes_identically_in_every_format(rng, fmt, constant):
    k, n = 70, 24
    codes_kn = synthetic_codes(k, n, 0.9, rng)
    scales = (rng.random(n) + 0.5).astype(np.float32)
    a = rng.standard_normal((3, k)).astype(np.float32)
    packed = streams.pack(fmt, codes_kn.T) if fmt in formats.STREAMS else pack_codes(codes_kn, fmt)
    op = build_model(packed, scales, attrs={"K": k, "N": n, "format": fmt, "act_quant": 1}, constant=constant)
    y = InferenceSession(op.model).run(None, op.feeds(a))[0]
    expected = ternary_matmul_reference(a, codes_kn, scales, 0, 1, None)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(ReferenceEvaluator(op.model, new_ops=CUSTOM_OPS).run(None, op.feeds(a))[0],
                                  expected)


@pytest.mark.parametrize("fmt", ["zeroruns", "sparse"])
def test_corrupt_stream_weights_fail_session_creation_naming_the_node(rng, fmt):
    codes_kn = synthetic_codes(40, 16, 0.9, rng)
    packed = streams.pack(fmt, codes_kn.T)
    for damaged in (packed[:-1], np.concatenate([packed, np.zeros(1, np.uint8)])):
        op = build_model(damaged, np.ones(1, np.float32), attrs={"K": 40, "N": 16, "format": fmt})
        with pytest.raises(Exception, match=rf"node 'tmm_under_test'.*invalid weights \(format {fmt}\)"):
            InferenceSession(op.model)
    op = build_model(packed.reshape(1, -1), np.ones(1, np.float32), attrs={"K": 40, "N": 16, "format": fmt})
    with pytest.raises(Exception, match=f"B must be a 1-D {fmt} stream"):
        InferenceSession(op.model)


@pytest.mark.parametrize("fmt", ["zeroruns", "sparse"])
def test_ternary_conv_on_a_stream_equals_base3(rng, fmt):
    codes = synthetic_codes(16, 8 * 9, 0.9, rng).reshape(16, 8, 3, 3)
    x = rng.standard_normal((1, 8, 7, 7)).astype(np.float32)
    results = {}
    for stored in ("base3", fmt):
        op = ternary_conv_model(codes, np.full(16, 0.5, np.float32), fmt=stored, act_quant=1,
                                conv_attrs={"pads": [1, 1, 1, 1]})
        results[stored] = InferenceSession(op.model).run(None, op.feeds(x))[0]
    np.testing.assert_array_equal(results[fmt], results["base3"])


def test_the_library_names_the_stream_formats_in_the_registry_order():
    from onnxbit import native

    ffi, lib = native.ffi(), native.lib()
    names = [ffi.string(lib.obx_stream_name(i)).decode() for i in range(len(formats.STREAMS))]
    assert tuple(names) == formats.STREAMS
    assert lib.obx_stream_name(len(formats.STREAMS)) == ffi.NULL
    assert [lib.obx_stream_from_name(name.encode(), len(name)) for name in names] == list(range(len(names)))
    assert lib.obx_stream_from_name(b"rans\0", 5) == -1
