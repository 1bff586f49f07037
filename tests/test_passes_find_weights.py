"""find_weights: which MatMul/Gemm weights are found, as what, and why others are skipped."""

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_models import init, make_model, mlp, value
from onnxbit.passes.base import PassContext
from onnxbit.passes.find_weights import FindWeightsPass


def find(model):
    ctx = PassContext(graph=gs.import_onnx(model))
    FindWeightsPass().run(ctx)
    return ctx


def sites_by_node(ctx):
    return {s.node.name: s for s in ctx.weight_sites}


def test_matmul_and_gemm_trans_b_alpha_bias(rng):
    model, w = mlp(rng)
    ctx = find(model)
    sites = sites_by_node(ctx)
    assert list(sites) == ["fc1", "fc2"]
    np.testing.assert_array_equal(sites["fc1"].weight, w["W1"])
    assert sites["fc1"].bias is None and sites["fc1"].position == {"first"}
    np.testing.assert_array_equal(sites["fc2"].weight, w["W2T"].T * np.float32(0.5))
    np.testing.assert_array_equal(sites["fc2"].bias, w["C"])
    assert sites["fc2"].position == {"last"}
    assert sites["fc1"].source_bytes == w["W1"].nbytes
    assert ctx.records == []


def test_gemm_beta_scales_bias_and_matrix_c_becomes_extra_add(rng):
    b = rng.standard_normal((8, 4)).astype(np.float32)
    c_row = rng.standard_normal((1, 4)).astype(np.float32)
    c_full = rng.standard_normal((3, 4)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "B", "Crow"], ["y1"], name="g_row", beta=2.0),
             helper.make_node("Gemm", ["x", "B", "Cfull"], ["y2"], name="g_full", beta=0.5),
             helper.make_node("Gemm", ["x", "B", "c_in"], ["y3"], name="g_dynamic", beta=3.0)]
    model = make_model(nodes, [value("x", [3, 8]), value("c_in", [3, 4])],
                       [value("y1", [3, 4]), value("y2", [3, 4]), value("y3", [3, 4])],
                       [init("B", b), init("Crow", c_row), init("Cfull", c_full)])
    sites = sites_by_node(find(model))
    np.testing.assert_array_equal(sites["g_row"].bias, c_row.reshape(-1) * np.float32(2.0))
    assert sites["g_full"].bias is None
    np.testing.assert_array_equal(sites["g_full"].extra_add.values, c_full * np.float32(0.5))
    assert sites["g_dynamic"].extra_add.name == "c_in" and sites["g_dynamic"].extra_add_scale == 3.0


def test_weight_through_constant_node_transpose_cast_reshape(rng):
    w = rng.standard_normal((6, 4)).astype(np.float32)
    const = helper.make_node("Constant", [], ["Wc"], name="wconst", value=numpy_helper.from_array(w.T.copy(), "v"))
    nodes = [const,
             helper.make_node("Transpose", ["Wc"], ["Wt"], name="t", perm=[1, 0]),
             helper.make_node("Cast", ["W16"], ["W32"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["Wflat", "shape"], ["Wr"], name="reshape"),
             helper.make_node("MatMul", ["x", "Wt"], ["y1"], name="mm_const"),
             helper.make_node("MatMul", ["x", "W32"], ["y2"], name="mm_cast"),
             helper.make_node("MatMul", ["x", "Wr"], ["y3"], name="mm_reshape")]
    model = make_model(nodes, [value("x", [2, 6])], [value(f"y{i}", [2, 4]) for i in (1, 2, 3)],
                       [init("W16", w.astype(np.float16)), init("Wflat", w.reshape(-1)),
                        init("shape", np.array([6, 4], np.int64))])
    sites = sites_by_node(find(model))
    np.testing.assert_array_equal(sites["mm_const"].weight, w)
    np.testing.assert_array_equal(sites["mm_cast"].weight, w.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(sites["mm_reshape"].weight, w)
    assert "transpose" in sites["mm_const"].weight_key and "cast" in sites["mm_cast"].weight_key


def test_shared_weight_has_one_key(rng):
    w = rng.standard_normal((5, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y1"], name="a"),
             helper.make_node("MatMul", ["x", "W"], ["y2"], name="b")]
    model = make_model(nodes, [value("x", [2, 5])], [value("y1", [2, 3]), value("y2", [2, 3])], [init("W", w)])
    sites = find(model).weight_sites
    assert len(sites) == 2 and sites[0].weight_key == sites[1].weight_key == "W"


def test_if_branch_with_outer_scope_weight(rng):
    w = rng.standard_normal((4, 3)).astype(np.float32)
    then = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["yt"], name="then_mm")], "then", [],
                             [value("yt", [2, 3])])
    other = helper.make_graph([helper.make_node("Relu", ["x"], ["xr"], name="r"),
                               helper.make_node("MatMul", ["xr", "W"], ["ye"], name="else_mm")], "else", [],
                              [value("ye", [2, 3])])
    nodes = [helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then, else_branch=other)]
    model = make_model(nodes, [value("x", [2, 4]), value("cond", [], TensorProto.BOOL)], [value("y", [2, 3])],
                       [init("W", w)])
    sites = sites_by_node(find(model))
    assert set(sites) == {"then_mm", "else_mm"}
    assert all(s.in_subgraph for s in sites.values())
    np.testing.assert_array_equal(sites["else_mm"].weight, w)


def test_unconvertible_nodes_are_recorded_with_reasons(rng):
    w3 = rng.standard_normal((2, 4, 3)).astype(np.float32)
    wi = rng.integers(-3, 3, size=(4, 3)).astype(np.int32)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W3"], ["y2"], name="batched_weight"),
             helper.make_node("MatMul", ["xi", "Wi"], ["y3"], name="int_weight"),
             helper.make_node("Mul", ["W", "two"], ["W2"], name="double"),
             helper.make_node("MatMul", ["x", "W2"], ["y4"], name="computed_weight"),
             helper.make_node("MatMul", ["x", "dyn"], ["y1"], name="activation_product"),
             helper.make_node("Relu", ["dyn"], ["dr"], name="relu"),
             helper.make_node("MatMul", ["x", "dr"], ["y5"], name="activation_product_2")]
    model = make_model(nodes, [value("x", [2, 4]), value("dyn", [4, 3]), value("xi", [2, 4], TensorProto.INT32)],
                       [value("y1", [2, 3]), value("y2", [2, 2, 3]), value("y3", [2, 3], TensorProto.INT32),
                        value("y4", [2, 3]), value("y5", [2, 3])],
                       [init("W3", w3), init("Wi", wi), init("W", w), init("two", np.float32(2.0))])
    ctx = find(model)
    assert ctx.weight_sites == []
    reasons = {r.node: r.reason for r in ctx.records}
    # Products of two run-time values are not weight layers: listed as such, not skipped.
    assert set(reasons) == {"batched_weight", "int_weight", "computed_weight", "activation_product",
                            "activation_product_2"}
    assert "rank 3" in reasons["batched_weight"]
    assert "dtype int32" in reasons["int_weight"]
    assert reasons["computed_weight"].startswith("'W2' comes from Mul node 'double', not from a constant")
    actions = {r.node: r.action for r in ctx.records}
    assert actions.pop("activation_product") == actions.pop("activation_product_2") == "listed"
    assert "both inputs are activations" in reasons["activation_product"]
    assert set(actions.values()) == {"skipped"} and all(r.pass_name == "find_weights" for r in ctx.records)


@pytest.mark.parametrize("perm", [None, [1, 0]])
def test_transpose_default_perm_reverses_axes(rng, perm):
    w = rng.standard_normal((3, 5)).astype(np.float32)
    attrs = {} if perm is None else {"perm": perm}
    nodes = [helper.make_node("Transpose", ["W"], ["Wt"], name="t", **attrs),
             helper.make_node("MatMul", ["x", "Wt"], ["y"], name="mm")]
    model = make_model(nodes, [value("x", [2, 5])], [value("y", [2, 3])], [init("W", w)])
    np.testing.assert_array_equal(find(model).weight_sites[0].weight, w.T)


def test_left_constant_operand_and_column_shaped_c(rng):
    w = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((4, 3)).astype(np.float32)
    c_col = rng.standard_normal((3, 1)).astype(np.float32)  # broadcasts along N, not a bias
    nodes = [helper.make_node("MatMul", ["W", "x"], ["y1"], name="left_const"),
             helper.make_node("Gemm", ["x2", "B", "Ccol"], ["y2"], name="gemm_col")]
    model = make_model(nodes, [value("x", [3, 5]), value("x2", [3, 4])], [value("y1", [3, 5]), value("y2", [3, 3])],
                       [init("W", w), init("B", b), init("Ccol", c_col)])
    ctx = find(model)
    assert "left operand (W @ x)" in {r.node: r.reason for r in ctx.records}["left_const"]
    site = sites_by_node(ctx)["gemm_col"]
    assert site.bias is None and site.extra_add.values.shape == (3, 1)


def test_matmul_then_constant_add_becomes_the_bias(rng):
    w = rng.standard_normal((6, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["p"], name="fused"),
             helper.make_node("Add", ["b", "p"], ["y1"], name="bias_add"),
             helper.make_node("MatMul", ["x", "W"], ["q"], name="shared_output"),
             helper.make_node("Add", ["q", "b"], ["y2"], name="add2"),
             helper.make_node("Relu", ["q"], ["y3"], name="relu")]
    model = make_model(nodes, [value("x", [2, 6])], [value(n, [2, 4]) for n in ("y1", "y2", "y3")],
                       [init("W", w), init("b", b)])
    sites = sites_by_node(find(model))
    np.testing.assert_array_equal(sites["fused"].bias, b)
    assert sites["fused"].output.name == "y1" and sites["fused"].fused_add.name == "bias_add"
    assert sites["shared_output"].bias is None and sites["shared_output"].output.name == "q"
