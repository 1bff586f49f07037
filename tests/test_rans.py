"""The entropy-coded "rans" storage format: C codec byte-exact with the pure
Python reference, sizes near the entropy bound, corrupt streams refused,
TernaryMatMul results identical to the row formats, and `auto` conversion."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from onnx_models import init, make_model, value
from onnxbit import checksum, codecs, rans
from onnxbit.bench.formats import code_entropy_bits, synthetic_codes
from onnxbit.convert import convert
from onnxbit.ops.reference import CUSTOM_OPS
from onnxbit.reference import rans as reference
from onnxbit.runtime import InferenceSession
from onnxbit.verify_model import verify_model

from op_models import build_model, pack_codes


@pytest.mark.parametrize("zeros", [0.0, 0.1, 0.33, 0.9, 1.0])
@pytest.mark.parametrize("n, k, block_rows", [(1, 1, 1), (7, 13, 3), (40, 64, 64), (65, 21, 16), (30, 10, 0), (3, 2000, 0)])
def test_c_codec_equals_the_reference_byte_for_byte(rng, zeros, n, k, block_rows):
    codes = synthetic_codes(n, k, zeros, rng)
    rows = codecs.pack_ternary(codes, "base3")
    stream = rans.encode_base3(rows, k, block_rows)
    assert stream.tobytes() == reference.encode(rows, k, block_rows)
    np.testing.assert_array_equal(rans.decode_base3(stream, n, rows.shape[1]), rows)
    np.testing.assert_array_equal(reference.decode(stream.tobytes(), n, rows.shape[1]), rows)
    np.testing.assert_array_equal(rans.unpack_rans(stream, k, n), codes)


@pytest.mark.parametrize("zeros, entropy", [(1 / 3, 1.585), (0.5, 1.5), (0.9, 0.569)])
def test_size_within_three_percent_of_the_entropy_bound(rng, zeros, entropy):
    codes = synthetic_codes(1000, 1000, zeros, rng)
    stream = rans.pack_rans(codes)
    bound = code_entropy_bits(codes)
    assert abs(bound - entropy) < 0.01
    assert 8 * stream.nbytes / codes.size <= 1.03 * bound


def _agree(data: bytes, n: int, row_bytes: int):
    """C and the reference both refuse `data`, or both decode it to the same rows."""
    try:
        expected = reference.decode(data, n, row_bytes)
    except ValueError as exc:
        with pytest.raises(rans.CorruptStreamError):
            rans.decode_base3(np.frombuffer(data, np.uint8), n, row_bytes)
        return str(exc)
    np.testing.assert_array_equal(rans.decode_base3(np.frombuffer(data, np.uint8), n, row_bytes), expected)
    return None


def test_every_truncation_is_refused(rng):
    codes = synthetic_codes(9, 20, 0.5, rng)
    stream = rans.pack_rans(codes, block_rows=4).tobytes()
    for length in range(len(stream)):
        assert _agree(stream[:length], 9, 4) is not None, length
    assert _agree(stream + b"\0", 9, 4) == "rans stream has 1 bytes after its last block"


def test_byte_flips_are_refused_or_decoded_alike(rng):
    codes = synthetic_codes(9, 20, 0.9, rng)
    stream = bytearray(rans.pack_rans(codes, block_rows=4).tobytes())
    refused = 0
    for position in range(len(stream)):
        flipped = bytearray(stream)
        flipped[position] ^= 0x5A
        refused += _agree(bytes(flipped), 9, 4) is not None
    assert refused > len(stream) // 2  # the rest is caught by the checksum (test_verify_model)


@pytest.mark.parametrize("constant", [True, False])
def test_ternary_matmul_on_rans_equals_base3_and_the_reference(rng, constant):
    k, n = 70, 33
    codes_nk = synthetic_codes(n, k, 0.8, rng)
    scales = rng.uniform(0.5, 2.0, n).astype(np.float32)
    a = rng.standard_normal((4, k)).astype(np.float32)
    results = {}
    for fmt in ("base3", "rans"):
        packed = rans.pack_rans(codes_nk, 8) if fmt == "rans" else pack_codes(codes_nk.T, fmt)
        model = build_model(packed, scales, constant=constant, attrs={
            "K": k, "N": n, "format": fmt, "act_quant": 1, "crc32c": checksum.packed_weight_crc32c(packed, scales)})
        results[fmt] = InferenceSession(model.model).run(None, model.feeds(a))[0]
        np.testing.assert_array_equal(
            ReferenceEvaluator(model.model, new_ops=CUSTOM_OPS).run(None, model.feeds(a))[0], results[fmt])
        assert verify_model(model.model).ok
    np.testing.assert_array_equal(results["rans"], results["base3"])


def test_a_corrupt_stream_fails_session_creation_naming_the_node(rng):
    codes_nk = synthetic_codes(16, 40, 0.5, rng)
    packed = rans.pack_rans(codes_nk, 4)
    packed = packed[:-3]
    model = build_model(packed, np.ones(1, np.float32), attrs={"K": 40, "N": 16, "format": "rans"})
    with pytest.raises(Exception, match="node 'tmm_under_test'.*invalid weights \\(format rans\\)"):
        InferenceSession(model.model)
    with pytest.raises(Exception, match="B must be a 1-D rans stream"):
        InferenceSession(build_model(packed[:8].reshape(2, 4), np.ones(1, np.float32),
                                     attrs={"K": 40, "N": 16, "format": "rans"}).model)


def _sparse_model(rng, zeros: float):
    scale = np.float32(0.125)
    w1 = (synthetic_codes(96, 160, zeros, rng).T * scale).astype(np.float32)  # W [K=160, N=96]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="sparse_mm")]
    return make_model(nodes, [value("x", [2, 160])], [value("y", [2, 96])], [init("W", w1)])


# rans' model costs a few bytes, so it wins from 15 k weights on unless the
# tensor is nearly empty: at 99.9 % zeros (15 nonzeros) zeroruns is smaller.
@pytest.mark.parametrize("zeros, expected", [(0.9, "rans"), (0.999, "zeroruns")])
def test_auto_picks_the_smaller_storage_per_tensor(rng, zeros, expected):
    model = _sparse_model(rng, zeros)
    x = rng.standard_normal((2, 160)).astype(np.float32)
    outputs = {}
    for fmt in ("base3", "auto"):
        out = convert(model, config={"default": {"precision": "ternary", "format": fmt}}, progress=False)
        node = next(n for n in out.model.graph.node if n.op_type == "TernaryMatMul")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["format"].decode() == (expected if fmt == "auto" else "base3")
        assert verify_model(out.model).ok
        outputs[fmt] = InferenceSession(out.model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(outputs["auto"], outputs["base3"])


def test_every_single_byte_flip_of_a_rans_initializer_is_reported(rng):
    out = convert(_sparse_model(rng, 0.9), config={"default": {"precision": "ternary", "format": "rans"}},
                  progress=False)
    model = out.model
    node = next(n for n in model.graph.node if n.op_type == "TernaryMatMul")
    tensors = [t for t in model.graph.initializer if t.name in node.input[1:3]]
    assert len(tensors) == 2
    for tensor in tensors:
        original = tensor.raw_data
        for position in range(len(original)):
            flipped = bytearray(original)
            flipped[position] ^= 0xFF
            tensor.raw_data = bytes(flipped)
            report = verify_model(model)
            assert any(f.where == node.name and f.severity == "error" for f in report.findings), position
        tensor.raw_data = original
    assert verify_model(model).ok
