"""Folded ternary codes of a large model wait in a spill file between the fold and the
packing (onnxbit/graph/ternary.py): the conversion must come out byte-identical either way."""

import numpy as np
import onnx

from onnxbit.convert import convert
from onnxbit.graph import ternary
from onnxbit.graph.ternary import TernaryProof

from test_acceptance_bitnet import FIXTURES


def test_spilled_codes_read_back_exactly_and_are_shared_by_changed_proofs(monkeypatch):
    monkeypatch.setattr(ternary, "SPILL_BYTES", 0)
    codes = np.random.default_rng(3).integers(-1, 2, size=(37, 11)).astype(np.int8)
    proof = TernaryProof(codes, np.ones(1, np.float32), source="test")
    assert proof._codes is None and proof.shape == (37, 11)
    np.testing.assert_array_equal(proof.codes, codes)
    other = proof.with_changes(act_quant=1, scales=np.full(11, 2.0, np.float32))
    assert other._spilled == proof._spilled and other.act_quant == 1 and proof.act_quant == 0
    np.testing.assert_array_equal(other.float_weight(), codes * 2.0)


def test_conversion_is_byte_identical_with_codes_spilled(monkeypatch, tmp_path):
    model = FIXTURES / "bitnet_online_torchscript.onnx"
    kept = tmp_path / "kept.onnx"
    convert(model, output_path=kept, progress=False)
    monkeypatch.setattr(ternary, "SPILL_BYTES", 0)
    spilled = tmp_path / "spilled.onnx"
    result = convert(model, output_path=spilled, progress=False)
    assert len(result.report.converted) == 14
    assert kept.read_bytes() == spilled.read_bytes()
    assert any(n.op_type == "TernaryMatMul" for n in onnx.load(str(spilled)).graph.node)
