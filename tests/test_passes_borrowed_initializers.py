"""BorrowedInitializers: the pass manager reads weights from the caller's
model without copying them, never writes to them, and exports exactly what
a deep copy + onnx-graphsurgeon round trip exports."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnx_models import init, make_model, value
from onnxbit.convert import convert
from onnxbit.passes.base import Pass, PassResult
from onnxbit.graph.borrowed import BorrowedInitializers, is_plain_raw
from onnxbit.graph.outer_scope import keep_outer_initializers_once
from onnxbit.passes.manager import PassManager


def reference_round_trip(model, edit):
    """What the manager did before borrowing: deep copy, import, edit, export (outer-scope
    initializers kept once, as the manager's export does), graph copy."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    graph = gs.import_onnx(work)
    edit(graph)
    graph.cleanup(remove_unused_graph_inputs=False, recurse_subgraphs=True)
    graph.toposort(recurse_subgraphs=True)
    exported = gs.export_onnx(graph, do_type_check=False).graph
    keep_outer_initializers_once(exported, (t.name for t in model.graph.initializer))
    work.graph.CopyFrom(exported)
    return work


def borrowed_round_trip(model, edit):
    borrowed = BorrowedInitializers(model)
    work = borrowed.working_copy()
    graph = borrowed.import_graph(work)
    edit(graph)
    graph.cleanup(remove_unused_graph_inputs=False, recurse_subgraphs=True)
    graph.toposort(recurse_subgraphs=True)
    return borrowed.export(graph, work)


def mixed_model(rng, dtype, typed_fields: bool, doc: bool, with_if: bool):
    """An Add chain over initializers in several storage forms, optionally read
    inside an If branch (outer-scope initializer)."""
    a = rng.standard_normal((3, 4)).astype(dtype)
    b = rng.standard_normal((3, 4)).astype(dtype)
    b_proto = (helper.make_tensor("B", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), b.shape, b.ravel().tolist())
               if typed_fields else init("B", b))
    if doc:
        b_proto.doc_string = "documented"
    shape = init("shape", np.array([4, 3], np.int64))
    nodes = [helper.make_node("Add", ["x", "A"], ["s"], name="add_a"),
             helper.make_node("Add", ["s", "B"], ["t"], name="add_b")]
    if with_if:
        then_graph = helper.make_graph([helper.make_node("Mul", ["t", "A"], ["then_y"], name="then_mul")], "then",
                                       [], [value("then_y", [3, 4], b_proto.data_type)])
        else_graph = helper.make_graph([helper.make_node("Sub", ["t", "A"], ["else_y"], name="else_sub")], "else",
                                       [], [value("else_y", [3, 4], b_proto.data_type)])
        nodes.append(helper.make_node("If", ["cond"], ["u"], name="branch", then_branch=then_graph,
                                      else_branch=else_graph))
    else:
        nodes.append(helper.make_node("Identity", ["t"], ["u"], name="copy"))
    nodes.append(helper.make_node("Reshape", ["u", "shape"], ["y"], name="reshape"))
    inputs = [value("x", [3, 4], b_proto.data_type), value("cond", [], TensorProto.BOOL)]
    return make_model(nodes, inputs, [value("y", [4, 3], b_proto.data_type)], [init("A", a), b_proto, shape])


def touch_all_values(graph):
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant):
            np.asarray(tensor.values).sum()


def replace_a_and_rename_b(graph):
    node = next(n for n in graph.nodes if n.name == "add_a")
    node.inputs[1] = gs.Constant("A_new", np.asarray(node.inputs[1].values) * 2)
    node = next(n for n in graph.nodes if n.name == "add_b")
    node.inputs[1].name = "B_renamed"


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from([np.float32, np.float16, np.float64]), typed_fields=st.booleans(), doc=st.booleans(),
       with_if=st.booleans(), edit=st.sampled_from([lambda g: None, touch_all_values, replace_a_and_rename_b]),
       seed=st.integers(0, 2**16))
def test_export_is_byte_identical_to_a_deep_copy_round_trip(dtype, typed_fields, doc, with_if, edit, seed):
    model = mixed_model(np.random.default_rng(seed), dtype, typed_fields, doc, with_if)
    before = model.SerializeToString()
    expected = reference_round_trip(model, edit).SerializeToString()
    assert borrowed_round_trip(model, edit).SerializeToString() == expected
    assert model.SerializeToString() == before


def test_working_copy_holds_no_plain_weight_bytes(rng):
    model = mixed_model(rng, np.float32, typed_fields=True, doc=False, with_if=True)
    work = BorrowedInitializers(model).working_copy()
    stand_ins = {t.name: t for t in work.graph.initializer}
    assert is_plain_raw(initializer(model, "A")) and not stand_ins["A"].HasField("raw_data")
    assert list(stand_ins["A"].dims) == [3, 4] and stand_ins["A"].data_type == TensorProto.FLOAT
    assert not is_plain_raw(initializer(model, "B")) and stand_ins["B"] == initializer(model, "B")  # float_data: copied


def initializer(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


class ScaleWeightInPlace(Pass):
    name = "scale-in-place"
    contract = "Multiplies the MatMul weight in place (a broken pass)."

    def run(self, ctx):
        node = next(n for n in ctx.graph.nodes if n.op == "MatMul")
        node.inputs[1].values *= 2
        return PassResult(True, "scaled")


def test_a_pass_cannot_write_into_the_callers_weight(rng):
    w = rng.standard_normal((8, 4)).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [value("x", [2, 8])],
                       [value("y", [2, 4])], [init("W", w)])
    before = model.SerializeToString()
    with pytest.raises(ValueError, match="read-only"):
        PassManager([ScaleWeightInPlace()]).run(model)
    assert model.SerializeToString() == before


def test_kept_float_weight_reaches_the_output_unchanged_and_input_stays_intact(rng):
    """A layer kept fp32 is read by the weight passes (loaded) and must still
    be exported byte for byte from the caller's tensor; the packed layer's
    new constants are filled in from numpy."""
    w_keep = rng.standard_normal((16, 16)).astype(np.float32)
    w_pack = rng.standard_normal((8, 16)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "Wk"], ["h"], name="keep"),
             helper.make_node("Gemm", ["h", "Wp"], ["y"], name="pack", transB=1)]
    model = make_model(nodes, [value("x", [2, 16])], [value("y", [2, 8])], [init("Wk", w_keep), init("Wp", w_pack)])
    before = model.SerializeToString()
    config = {"default": {"precision": "ternary"}, "rules": [{"match": {"name": "keep"}, "precision": "fp32"}]}
    out = convert(model, config=config, progress=False).model
    assert model.SerializeToString() == before
    assert initializer(out, "Wk") == initializer(model, "Wk")
    assert "Wp" not in {t.name for t in out.graph.initializer}
    packed = [t for t in out.graph.initializer if t.name.startswith("Wp_packed")]
    assert len(packed) == 1 and numpy_helper.to_array(packed[0]).size > 0
    onnx.checker.check_model(out, full_check=True)
    model.graph.initializer[0].raw_data = bytes(len(model.graph.initializer[0].raw_data))
    assert numpy_helper.to_array(initializer(out, "Wk")).tobytes() == w_keep.tobytes()  # the output owns its bytes


def test_raw_data_of_the_wrong_length_is_named(rng):
    model = make_model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [value("x", [2, 8])],
                       [value("y", [2, 4])], [init("W", rng.standard_normal((8, 4)).astype(np.float32))])
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-4]
    with pytest.raises(ValueError, match="W: initializer: raw_data holds 124 bytes, but FLOAT\\[8, 4\\] needs 128"):
        convert(model, config={"default": {"precision": "ternary"}}, progress=False)


def branch_weight_model(rng):
    """Both branches of an If read one main-graph weight W (as Silero VAD's LSTM weights are read),
    and a MatMul in the main graph has a weight to convert."""
    w = rng.standard_normal((16, 16)).astype(np.float32)
    m = rng.standard_normal((16, 16)).astype(np.float32)
    then_graph = helper.make_graph([helper.make_node("MatMul", ["h", "W"], ["then_y"], name="then_mm")], "then",
                                   [], [value("then_y", [2, 16])])
    else_graph = helper.make_graph([helper.make_node("Gemm", ["h", "W"], ["else_y"], name="else_gemm", alpha=2.0)],
                                   "else", [], [value("else_y", [2, 16])])
    nodes = [helper.make_node("MatMul", ["x", "M"], ["h"], name="main_mm"),
             helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_graph, else_branch=else_graph)]
    return make_model(nodes, [value("x", [2, 16]), value("cond", [], TensorProto.BOOL)], [value("y", [2, 16])],
                      [init("W", w), init("M", m)])


def test_a_weight_both_branches_read_is_written_once_in_the_main_graph(rng, tmp_path):
    """onnx-graphsurgeon's export copies an outer-scope weight into every branch that reads it; the
    converted model keeps it once, where the input had it, and runs as the original does."""
    import onnxruntime as ort

    from onnxbit.graph.queries import proto_graphs

    model = branch_weight_model(rng)
    config = {"default": {"precision": "int8"}, "rules": [{"match": {"name": "then_mm"}, "precision": "fp32"},
                                                           {"match": {"name": "else_gemm"}, "precision": "fp32"}]}
    out = convert(model, config=config, target="ort", progress=False).model
    holders = [g.name for g in proto_graphs(out.graph) for t in g.initializer if t.name == "W"]
    assert holders == [out.graph.name]
    assert initializer(out, "W") == initializer(model, "W")
    original, converted = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                           for m in (model, out))
    x = rng.standard_normal((2, 16)).astype(np.float32)
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        np.testing.assert_allclose(converted.run(None, feeds)[0], original.run(None, feeds)[0], rtol=0.05, atol=0.05)
    assert out.ByteSize() < model.ByteSize()


def test_keep_outer_initializers_once_leaves_different_tensors_of_one_name_alone():
    def branch(name, values):
        return helper.make_graph([helper.make_node("Identity", ["C"], [f"{name}_y"])], name, [],
                                 [value(f"{name}_y", [2])], [init("C", np.array(values, np.float32))])

    graph = helper.make_graph([helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", [1, 2]),
                                                else_branch=branch("else", [3, 4]))], "main",
                              [value("cond", [], TensorProto.BOOL)], [value("y", [2])])
    before = graph.SerializeToString()
    keep_outer_initializers_once(graph, ["C"])
    assert graph.SerializeToString() == before
