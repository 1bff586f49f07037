"""Acceptance on the KV-cache BitNet LM (models/export_bitnet_llm.py --tiny, 2 layers):
every linear folds into TernaryMatMul act_quant=1, the converted model decodes what the
exported graph decodes, and decoding with the cache equals recomputing without it."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxbit.bench.llm import CacheLayout, generate
from onnxbit.convert import convert
from onnxbit.runtime import InferenceSession

MODEL = Path(__file__).resolve().parent.parent / "models" / "fixtures" / "bitnet_llm_tiny.onnx"
LAYERS = 2
STEPS = 6


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The default conversion, with the head run by BFloat16MatMul as a 0.7B model's is
    (this head, 512 KiB, is under the op's 16 MiB threshold)."""
    from onnxbit.targets import bf16_matmul

    out = tmp_path_factory.mktemp("llm") / "ternary.onnx"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bf16_matmul, "MIN_WEIGHT_BYTES", 0)
        result = convert(MODEL, output_path=out, progress=False)
    return out, result.report


@pytest.fixture(scope="module")
def layout():
    return CacheLayout.of(MODEL)


def prompts():
    rng = np.random.default_rng(7)
    return [rng.integers(3, 1000, size=(1, n), dtype=np.int64) for n in (1, 5, 12)] + \
        [rng.integers(3, 1000, size=(2, 9), dtype=np.int64)]


def test_every_linear_folds_into_ternary_matmul_with_int8_activations(converted):
    path, report = converted
    ternary = [r for r in report.layers if r.action == "converted" and r.precision == "ternary"]
    assert len(ternary) == 7 * LAYERS, [r.to_json() for r in report.layers]
    nodes = onnx.load(str(path)).graph.node
    assert "Round" not in {n.op_type for n in nodes}
    matmuls = [n for n in nodes if n.op_type == "TernaryMatMul"]
    assert len(matmuls) == 7 * LAYERS
    assert all(any(a.name == "act_quant" and a.i == 1 for a in n.attribute) for n in matmuls)
    # lm_head stays float (BitNet b1.58 keeps the output head in high precision): its weights are
    # bfloat16 numbers, as in the released checkpoints, so they are stored in bfloat16, losslessly
    head = [r for r in report.layers if "lm_head" in r.node]
    assert [(r.precision, r.storage, r.weight_error["mse"]) for r in head] == [("bf16", "BFloat16MatMul/bf16", 0.0)]
    assert [n.op_type for n in nodes if "lm_head" in n.name] == ["BFloat16MatMul"]


def test_the_cache_interface_is_what_bench_llm_drives(layout):
    assert len(layout.past) == 2 * LAYERS and layout.kv_heads == 4 and layout.head_dim == 32
    assert layout.present[0] == "present.0.key" and layout.vocab == 1000


@pytest.mark.parametrize("which", ["original", "converted"])
def test_decoding_with_the_cache_equals_recomputing_without_it(which, converted, layout):
    path = MODEL if which == "original" else converted[0]
    session = (ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) if which == "original"
               else InferenceSession(path))
    for ids in prompts():
        tokens, logits = generate(session, layout, ids, STEPS)
        # One prefill over the whole sequence, no cache: position t predicts token t + 1.
        _, full = generate_full(session, layout, np.concatenate([ids, tokens], axis=1))
        recomputed = full[:, ids.shape[1] - 1:]
        cached = np.stack(logits, axis=1)
        np.testing.assert_array_equal(recomputed[:, :-1].argmax(-1), tokens)
        np.testing.assert_allclose(cached, recomputed, atol=1e-5 * np.abs(recomputed).max(), rtol=0)


def generate_full(session, layout, ids):
    empty = np.zeros((ids.shape[0], layout.kv_heads, 0, layout.head_dim), np.float32)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), **{n: empty for n in layout.past}}
    result = session.run(["logits"], feeds)
    return None, result[0]


def test_the_converted_model_decodes_the_same_tokens_as_the_exported_graph(converted, layout):
    original = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    session = InferenceSession(converted[0])
    for ids in prompts():
        expected_tokens, expected = generate(original, layout, ids, STEPS)
        tokens, actual = generate(session, layout, ids, STEPS)
        np.testing.assert_array_equal(tokens, expected_tokens)
        for want, got in zip(expected, actual):
            # the tolerance of tests/test_acceptance_bitnet.py: the fold is exact up to float summation order
            assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
            np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


def test_on_target_onnx_the_bf16_head_and_embedding_decode_the_same_tokens(tmp_path, layout):
    """Standard ops only: the head and the token embedding stored as bfloat16 (+ Cast),
    the ternary layers as INT2 DequantizeLinear; greedy decoding keeps every token."""
    out = tmp_path / "onnx.onnx"
    report = convert(MODEL, target="onnx", output_path=out, progress=False).report
    stored = {r.node: r.storage for r in report.layers if r.precision == "bf16"}
    assert sorted(stored.values()) == ["Cast/BFLOAT16", "Gather/BFLOAT16"], stored
    original = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for ids in prompts():
        expected_tokens, _ = generate(original, layout, ids, STEPS)
        tokens, _ = generate(session, layout, ids, STEPS)
        np.testing.assert_array_equal(tokens, expected_tokens)
