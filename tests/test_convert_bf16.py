"""Float layers whose weights are bfloat16 numbers (a bf16 checkpoint exported to
float32) are stored as bfloat16 on target onnxbit and run by BFloat16MatMul: the same
values in half the bytes, the same outputs up to float32 summation order."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from onnx_models import init, make_model, mlp, value
from onnxbit.convert import convert
from onnxbit.inspect_model import inspect_model
from onnxbit.runtime import InferenceSession


def to_bf16_values(w: np.ndarray) -> np.ndarray:
    """w rounded to the nearest bfloat16 numbers, kept as float32."""
    bits = np.ascontiguousarray(w, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x8000)) & np.uint32(0xFFFF0000)).view(np.float32)


def bf16_mlp(rng) -> onnx.ModelProto:
    model, _ = mlp(rng)
    for tensor in model.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(to_bf16_values(numpy_helper.to_array(tensor)), tensor.name))
    return model


def ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


@pytest.fixture
def op_for_every_size(monkeypatch):
    """BFloat16MatMul for these small test layers too (by default only weights of 16 MiB or
    more run as the op; smaller ones are stored as bfloat16 + Cast)."""
    from onnxbit.targets import bf16_matmul

    monkeypatch.setattr(bf16_matmul, "MIN_WEIGHT_BYTES", 0)


def test_bf16_float_layers_become_bfloat16_matmul_on_target_onnxbit(rng, tmp_path, op_for_every_size):
    model = bf16_mlp(rng)
    result = convert(model, preset="bitnet", progress=False)  # keeps float layers float
    assert ops(result.model) == ["BFloat16MatMul", "Relu", "BFloat16MatMul"]
    stored = {r.node: r for r in result.report.layers}
    assert {r.precision for r in stored.values()} == {"bf16"}
    assert all(r.action == "converted" and "lossless" in r.reason for r in stored.values())
    assert stored["fc1"].bytes_after * 2 == stored["fc1"].bytes_before
    # fc1 was kept float by the preset (fc2, the last layer, by its rule): the note says how it was stored
    assert any("1 float layer(s) kept float (1 of them stored as bfloat16, losslessly)" in note
               for note in result.report.notes)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    expected = InferenceSession(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(InferenceSession(result.model).run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-5)
    # The Gemm's alpha 0.5 and its C travel with the layer; inspect reads the layers back.
    onnx.save(result.model, tmp_path / "out.onnx")
    layers = {layer.node: layer for layer in inspect_model(str(tmp_path / "out.onnx")).layers}
    assert (layers["fc2"].precision, layers["fc2"].k, layers["fc2"].n) == ("bf16", 48, 32)
    assert layers["fc1"].bits_per_weight == 16.0


@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_other_targets_store_bfloat16_and_a_cast_that_gives_the_original_bits(rng, target, tmp_path):
    model = bf16_mlp(rng)
    result = convert(model, preset="bitnet", target=target, progress=False)
    assert sorted(ops(result.model)) == ["Cast", "Cast", "Gemm", "MatMul", "Relu"]  # the nodes unchanged, weights cast
    assert sorted(t.data_type for t in result.model.graph.initializer) == \
        [onnx.TensorProto.FLOAT, onnx.TensorProto.BFLOAT16, onnx.TensorProto.BFLOAT16]  # C stays float
    assert {(r.precision, r.storage) for r in result.report.layers} == {("bf16", "Cast/BFLOAT16")}
    assert any("onnxruntime folds the Cast" in note for note in result.report.notes)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    session = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert np.array_equal(session.run(None, {"x": x})[0], expected[0])
    onnx.save(result.model, tmp_path / "out.onnx")
    assert (tmp_path / "out.onnx").stat().st_size < model.ByteSize() * 0.6
    layers = {layer.node: layer for layer in inspect_model(str(tmp_path / "out.onnx")).layers}
    assert {(layer.precision, layer.storage, layer.k, layer.n) for layer in layers.values()} == \
        {("bf16", "Cast/BFLOAT16", 64, 48), ("bf16", "Cast/BFLOAT16", 48, 32)}


@pytest.mark.parametrize("target", ["onnxbit", "ort", "onnx"])
def test_weights_that_are_not_bfloat16_stay_float(rng, target):
    model, _ = mlp(rng)
    result = convert(model, preset="bitnet", target=target, progress=False)
    assert ops(result.model) == ["MatMul", "Relu", "Gemm"]
    assert {r.action for r in result.report.layers} == {"skipped"}


@pytest.mark.parametrize("target", ["onnxbit", "ort"])
def test_a_table_an_embedding_gather_reads_too_stays_float(rng, target):
    """Tied input and output embeddings: storing the MatMul's copy in bfloat16 would
    leave the float32 table for the Gather and grow the file."""
    table = to_bf16_values(rng.standard_normal((50, 16)))
    nodes = [helper.make_node("Gather", ["table", "ids"], ["h"], name="embed"),
             helper.make_node("Transpose", ["table"], ["table_t"], perm=[1, 0], name="tie"),
             helper.make_node("MatMul", ["h", "table_t"], ["logits"], name="lm_head")]
    model = make_model(nodes, [value("ids", [1, 4], onnx.TensorProto.INT64)], [value("logits", [1, 4, 50])],
                       [init("table", table)])
    result = convert(model, preset="bitnet", target=target, progress=False)
    assert ops(result.model) == ["Gather", "Transpose", "MatMul"]


def test_a_weight_two_layers_share_is_stored_once(rng, op_for_every_size):
    w = to_bf16_values(rng.standard_normal((32, 16)))
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y1"], name="a"),
             helper.make_node("MatMul", ["x", "W"], ["y2"], name="b")]
    model = make_model(nodes, [value("x", [2, 32])], [value("y1", [2, 16]), value("y2", [2, 16])], [init("W", w)])
    result = convert(model, preset="bitnet", progress=False)
    assert ops(result.model) == ["BFloat16MatMul", "BFloat16MatMul"]
    assert len(result.model.graph.initializer) == 1
    assert result.model.graph.initializer[0].data_type == onnx.TensorProto.BFLOAT16
    records = {r.node: r for r in result.report.layers}
    assert records["b"].reason == "shares the stored weight of 'a'" and records["b"].bytes_after == 0


def test_float_storage_chooses_the_form_or_leaves_float_layers_as_they_are(rng, op_for_every_size):
    model = bf16_mlp(rng)
    default = convert(model, preset="bitnet", progress=False)
    assert any("0.88-1.01x at 16-128 rows" in note for note in default.report.notes)  # the op's cost is said
    cast = convert(model, config={"preset": "bitnet", "float_storage": "bf16-cast"}, progress=False)
    assert sorted(ops(cast.model)) == ["Cast", "Cast", "Gemm", "MatMul", "Relu"]
    kept = convert(model, config={"preset": "bitnet", "float_storage": "fp32"}, progress=False, write_noop=True)
    assert ops(kept.model) == ["MatMul", "Relu", "Gemm"]
    with pytest.raises(ValueError, match="float_storage must be one of bf16, bf16-cast, fp32"):
        convert(model, config={"preset": "bitnet", "float_storage": "fp16"}, progress=False)


@pytest.mark.parametrize("target", ["onnxbit", "ort"])
def test_conv_weights_of_bfloat16_values_are_stored_as_bfloat16_and_cast(rng, target, tmp_path):
    """No bfloat16 conv op: every target stores a Conv's bfloat16 weight with a Cast in front,
    which onnxruntime folds, so the Conv computes the original's outputs bit for bit."""
    from op_models import float_conv_model

    model = float_conv_model(to_bf16_values(rng.standard_normal((16, 8, 3, 3))), to_bf16_values(rng.standard_normal(16)),
                             {"pads": [1, 1, 1, 1]})
    result = convert(model, preset="bitnet", target=target, progress=False)
    assert sorted(ops(result.model)) == ["Cast", "Conv"]
    (record,) = [r for r in result.report.layers if r.op_type == "Conv"]
    assert (record.action, record.precision, record.storage) == ("converted", "bf16", "Cast/BFLOAT16")
    x = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    original = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    converted = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.array_equal(converted.run(None, {"X": x})[0], original.run(None, {"X": x})[0])
    onnx.save(result.model, tmp_path / "out.onnx")
    (layer,) = inspect_model(str(tmp_path / "out.onnx")).layers
    assert (layer.precision, layer.storage, layer.details["shape"]) == ("bf16", "Cast/BFLOAT16", [16, 8, 3, 3])


def test_small_layers_on_target_onnxbit_are_stored_as_bfloat16_and_cast(rng):
    """Weights under 16 MiB stay in cache and their layers are bound by compute, where
    onnxruntime's MatMul is faster than BFloat16MatMul: they keep the original's op."""
    result = convert(bf16_mlp(rng), preset="bitnet", progress=False)
    assert sorted(ops(result.model)) == ["Cast", "Cast", "Gemm", "MatMul", "Relu"]
    assert not any("run as BFloat16MatMul" in note for note in result.report.notes)
