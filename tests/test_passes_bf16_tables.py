"""store_bf16_tables: embedding tables of bfloat16 values are stored as bfloat16 and the
Gathers' rows cast back, exactly; every other table stays as it is."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from onnx_models import init, make_model, value
from onnxbit.convert import convert
from test_convert_bf16 import to_bf16_values


def embedding_model(table: np.ndarray, *, tied: bool = False, opset: int = 17) -> onnx.ModelProto:
    vocab, hidden = table.shape
    nodes = [helper.make_node("Gather", ["table", "ids"], ["h"], name="embed"),
             helper.make_node("Relu", ["h"], ["y"], name="act")]
    outputs = [value("y", [1, 3, hidden])]
    if tied:
        nodes += [helper.make_node("Transpose", ["table"], ["table_t"], perm=[1, 0], name="tie"),
                  helper.make_node("MatMul", ["y", "table_t"], ["logits"], name="lm_head")]
        outputs = [value("logits", [1, 3, vocab])]
    return make_model(nodes, [value("ids", [1, 3], TensorProto.INT64)], outputs, [init("table", table)], opset=opset)


def run(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"ids": ids})[0]


@pytest.mark.parametrize("target", ["onnxbit", "ort", "onnx"])
def test_a_bf16_table_is_stored_in_half_the_bytes_and_gives_the_same_rows(rng, target):
    model = embedding_model(to_bf16_values(rng.standard_normal((500, 16))))
    result = convert(model, preset="bitnet", target=target, progress=False)
    (table,) = result.model.graph.initializer
    assert table.data_type == TensorProto.BFLOAT16 and len(table.raw_data) == 500 * 16 * 2
    ids = np.array([[0, 499, 7]], np.int64)
    assert np.array_equal(run(result.model, ids), run(model, ids))
    (record,) = [r for r in result.report.layers if r.node == "embed"]
    assert (record.action, record.precision, record.bytes_before, record.bytes_after) == \
        ("converted", "bf16", 32000, 16000)


def test_tables_that_stay_float32(rng):
    floats = embedding_model(rng.standard_normal((500, 16)).astype(np.float32))
    old_opset = embedding_model(to_bf16_values(rng.standard_normal((500, 16))), opset=11)
    for model in (floats, old_opset):
        result = convert(model, preset="bitnet", progress=False, write_noop=True)
        assert [t.data_type for t in result.model.graph.initializer] == [TensorProto.FLOAT]
        assert [r.action for r in result.report.layers if r.node == "embed"] == ["skipped"]


def test_a_table_the_output_layer_also_reads_stays_float32(rng):
    model = embedding_model(to_bf16_values(rng.standard_normal((500, 16))), tied=True)
    result = convert(model, preset="bitnet", progress=False)
    assert [t.data_type for t in result.model.graph.initializer] == [TensorProto.FLOAT]
    assert "Cast" not in {n.op_type for n in result.model.graph.node}


def test_float_storage_fp32_keeps_tables_float32(rng):
    model = embedding_model(to_bf16_values(rng.standard_normal((500, 16))))
    result = convert(model, config={"preset": "bitnet", "float_storage": "fp32"}, progress=False, write_noop=True)
    assert [t.data_type for t in result.model.graph.initializer] == [TensorProto.FLOAT]


def test_a_table_in_external_data_is_scanned_from_the_file_and_nothing_is_printed(rng, tmp_path, capfd):
    """The table is read a chunk at a time from the input's data file (gs_adapter.float32_chunks),
    and onnx-graphsurgeon's warning that bfloat16 has no numpy type does not reach the user."""
    from onnxbit.graph.gs_adapter import float32_chunks  # noqa: F401  (the path under test)

    model = embedding_model(to_bf16_values(rng.standard_normal((5000, 64))))
    source = tmp_path / "in.onnx"
    stored = onnx.ModelProto()
    stored.CopyFrom(model)  # onnx.save points the tensors it externalizes at the file
    onnx.save(stored, source, save_as_external_data=True, all_tensors_to_one_file=True, location="in.onnx.data",
              size_threshold=0)
    result = convert(source, preset="bitnet", output_path=tmp_path / "out.onnx", progress=False)
    assert [r.precision for r in result.report.layers if r.node == "embed"] == ["bf16"]
    ids = np.array([[4999, 0, 17]], np.int64)
    assert np.array_equal(run(onnx.load(tmp_path / "out.onnx"), ids), run(model, ids))
    captured = capfd.readouterr()
    assert "[W]" not in captured.out + captured.err
