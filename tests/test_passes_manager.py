"""PassManager: works on a copy, cleans up, imports the opsets the new ops
need, keeps model metadata; atomic saving with external data."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from onnx_models import init, make_model, value
from onnxbit.config import load_config
from onnxbit.convert import save_model_atomic
from onnxbit.passes.base import Pass, PassResult
from onnxbit.passes.find_weights import FindWeightsPass
from onnxbit.passes.manager import PassManager, default_passes
from onnxbit.passes.pack_weights import PackWeightsPass


def transposed_weight_model(rng):
    w = rng.standard_normal((64, 8)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["Wt"], ["W"], perm=[1, 0]),  # unnamed on purpose
             helper.make_node("MatMul", ["x", "W"], ["y"])]
    model = make_model(nodes, [value("x", [2, 8])], [value("y", [2, 64])], [init("Wt", w)])
    model.producer_name = "unit-test"
    helper.set_model_props(model, {"source": "synthetic"})
    return model, w


def test_rewrite_names_nodes_drops_dead_weight_chain_and_imports_domain(rng):
    model, _ = transposed_weight_model(rng)
    config = load_config({"default": {"precision": "ternary"}})
    out, ctx = PassManager([FindWeightsPass(), PackWeightsPass()], config=config).run(model)
    assert [n.op_type for n in out.graph.node] == ["TernaryMatMul"]
    assert out.graph.node[0].name == "MatMul_1"  # named by the manager, kept by the rewrite
    assert {i.name for i in out.graph.initializer} == {"W_packed_base3", "W_scales"}  # float weight gone
    assert {(o.domain, o.version) for o in out.opset_import} == {("", 17), ("com.onnxbit", 1)}
    assert out.producer_name == "unit-test" and out.metadata_props[0].value == "synthetic"
    assert [n.name for n in model.graph.node] == ["", ""]  # the input proto is untouched
    y = out.graph.output[0].type.tensor_type.shape
    assert [d.dim_value for d in y.dim] == [2, 64]


class RenameOutput(Pass):
    name = "rename_output"
    contract = "test pass: records one note and changes nothing"

    def run(self, ctx):
        ctx.notes.append("ran")
        return PassResult(modified=False)


def test_custom_pass_list_runs_in_order_and_default_pipeline_starts_with_qat_folds(rng):
    model, _ = transposed_weight_model(rng)
    _, ctx = PassManager([RenameOutput(), RenameOutput()]).run(model)
    assert ctx.notes == ["ran", "ran"]
    names = [p.name for p in default_passes()]
    assert names[-4:] == ["find_weights", "pack_weights", "fuse_activation", "store_bf16_tables"] and len(names) > 4


def test_save_with_external_data_is_complete_and_keeps_the_model_loaded(tmp_path, rng):
    model, w = transposed_weight_model(rng)
    path = tmp_path / "big.onnx"
    save_model_atomic(model, path, external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert (tmp_path / "big.onnx.data").stat().st_size >= w.nbytes
    reloaded = onnx.load(path)
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(reloaded.graph.initializer[0]), w)
    # The caller's proto still holds its tensor bytes after the save.
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(model.graph.initializer[0]), w)
    assert gs.import_onnx(reloaded).nodes[0].op == "Transpose"
