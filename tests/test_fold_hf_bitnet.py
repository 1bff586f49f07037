"""The QAT folding passes on real exports of transformers' BitNetForCausalLM
(tiny, random weights): AutoBitLinear online fake-quant and offline packed
BitLinear, each through the TorchScript and the dynamo exporter."""

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

import onnxbit.convert as cv
from onnxbit.graph.queries import ternary_proofs
from onnxbit.passes.base import PassContext
from onnxbit.passes.fold import qat_passes
from onnxbit.runtime import InferenceSession

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"
VARIANTS = ["online_torchscript", "online_dynamo", "packed_torchscript", "packed_dynamo"]
BITLINEARS = 14  # 2 layers x (q, k, v, o, gate, up, down); lm_head stays float


def load(variant: str) -> onnx.ModelProto:
    path = FIXTURES / f"bitnet_{variant}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} has not been exported (models/export_hf_bitnet.py)")
    return onnx.load(path)


def folded(model: onnx.ModelProto) -> PassContext:
    ctx = PassContext(gs.import_onnx(model))
    for qat_pass in qat_passes():
        qat_pass.run(ctx)
    return ctx


@pytest.fixture(scope="module")
def folded_by_variant():
    return {variant: folded(load(variant)) for variant in VARIANTS
            if (FIXTURES / f"bitnet_{variant}.onnx").is_file()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_bitlinear_is_folded_with_act_quant(variant, folded_by_variant):
    load(variant)
    ctx = folded_by_variant[variant]
    assert len(ternary_proofs(ctx.graph)) == BITLINEARS
    assert all(w.act_quant == 1 and w.scales.shape == (1,) for w in ternary_proofs(ctx.graph).values())
    assert [r for r in ctx.records if r.action == "skipped"] == []
    left = {node.op for node in ctx.graph.nodes}
    assert not left & {"Round", "Abs", "ReduceMax", "BitwiseAnd", "BitShift", "ScatterND"}


def test_all_exports_agree_on_codes_and_scales(folded_by_variant):
    if len(folded_by_variant) < 2:
        pytest.skip("needs at least two exported variants")
    per_variant = {}
    for variant, ctx in folded_by_variant.items():
        ctx.graph.toposort()
        per_variant[variant] = [ternary_proofs(ctx.graph)[n.name] for n in ctx.graph.nodes
                                if n.name in ternary_proofs(ctx.graph)]
    reference = next(iter(per_variant.values()))
    for variant, weights in per_variant.items():
        for mine, theirs in zip(weights, reference):
            np.testing.assert_array_equal(mine.codes, theirs.codes, err_msg=variant)
            # Online: 1/(1/mean|W|) in the graph; packed: 1/weight_scale folded in float32.
            np.testing.assert_allclose(mine.scales, theirs.scales, rtol=2e-6, err_msg=variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_converted_model_reproduces_the_export(variant):
    """Through the whole converter: fold, find weights, pack into TernaryMatMul."""
    model = load(variant)
    result = cv.convert(model, preset="bitnet", target="onnxbit", progress=False, measure_error=False)
    converted_layers = [r for r in result.report.layers if r.action == "converted"]
    assert sum("QAT ternary weight" in r.reason for r in converted_layers) == BITLINEARS
    ops = [node.op_type for node in result.model.graph.node]
    assert ops.count("TernaryMatMul") == BITLINEARS and "Round" not in ops

    converted = InferenceSession(result.model)
    original = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    samples = np.load(FIXTURES / "bitnet_inputs.npz")
    for index in range(3):
        feeds = {name: samples[f"{name}_{index}"] for name in ("input_ids", "attention_mask")}
        expected = original.run(None, feeds)[0]
        actual = converted.run(None, feeds)[0]
        assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()
        np.testing.assert_array_equal(actual.argmax(-1), expected.argmax(-1))
