import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto

from onnxbit.passes.fold.evaluate import NotConstantError, constant_subgraph, evaluate_constants
from onnxbit.passes.fold.exact_ternary import NotTernaryError, split_exact_ternary, ternary_values
from onnxbit.passes.fold.matching import (clip_bounds, constant_value, equivalent, reduce_axes,
                                          skip_transparent)
from fold_chains import GraphBuilder, float_input, weight_absmean_chain


def test_evaluation_is_bit_identical_to_the_full_model_in_onnxruntime(rng):
    weight = (rng.standard_normal((96, 200)) * 0.02).astype(np.float32)
    b = GraphBuilder(opset=18)
    w = weight_absmean_chain(b, weight, reciprocal=False)
    mean = b.op("ReduceMean", [b.op("Abs", [w])], keepdims=0)  # a float result, not just codes
    model = b.model([], [float_input(w, [200, 96]), float_input(mean, [])])
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    folded = evaluate_constants(graph, [tensors[w], tensors[mean]])
    # The original model, run with every optimization (which constant-folds it).
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})
    for got, want in zip(folded, expected):
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_graph_input_dependency_is_named():
    b = GraphBuilder(opset=17)
    y = b.op("Mul", [b.op("Abs", ["x"]), b.const(2.0)])
    graph = gs.import_onnx(b.model([float_input("x", [3])], [float_input(y, [3])]))
    with pytest.raises(NotConstantError, match="depends on the graph input 'x'"):
        constant_subgraph([graph.tensors()[y]])


def test_subgraph_excludes_unrelated_nodes():
    b = GraphBuilder(opset=17)
    c = b.op("Neg", [b.const([1.0, 2.0])])
    y = b.op("Add", ["x", c])
    graph = gs.import_onnx(b.model([float_input("x", [2])], [float_input(y, [2])]))
    nodes = constant_subgraph([graph.tensors()[c]])
    assert [n.op for n in nodes] == ["Neg"]
    np.testing.assert_array_equal(evaluate_constants(graph, [graph.tensors()[c]])[0], [-1.0, -2.0])


def test_constant_value_sees_through_constant_nodes_identity_and_cast():
    b = GraphBuilder(constants_as_nodes=True, opset=17)
    c = b.const(127, np.int64)
    casted = b.op("Identity", [b.op("Cast", [c], to=TensorProto.FLOAT)])
    y = b.op("Mul", ["x", casted])
    graph = gs.import_onnx(b.model([float_input("x", [2])], [float_input(y, [2])]))
    value = constant_value(graph.tensors()[casted])
    assert value.dtype == np.float32 and value == 127.0
    assert constant_value(graph.tensors()["x"]) is None


def test_clip_bounds_from_attributes_and_inputs():
    old = gs.Node("Clip", attrs={"min": -1.0, "max": 1.0}, inputs=[gs.Variable("a")], outputs=[gs.Variable("b")])
    assert clip_bounds(old) == (-1.0, 1.0)
    new = gs.Node("Clip", inputs=[gs.Variable("a"), gs.Constant("lo", np.array(1e-5, np.float32)),
                                  gs.Variable.empty()], outputs=[gs.Variable("c")])
    low, high = clip_bounds(new)
    assert np.float32(low) == np.float32(1e-5) and high is None


def test_reduce_axes_from_attribute_or_input():
    attr = gs.Node("ReduceMax", attrs={"axes": [-1]}, inputs=[gs.Variable("a")], outputs=[gs.Variable("b")])
    given_input = gs.Node("ReduceMax", inputs=[gs.Variable("a"), gs.Constant("ax", np.array([2], np.int64))],
                          outputs=[gs.Variable("c")])
    assert reduce_axes(attr) == [-1] and reduce_axes(given_input) == [2]


def test_equivalent_recognises_a_recomputed_expression():
    x = gs.Variable("x", np.float32)
    outs = []
    for i in range(2):
        absolute = gs.Variable(f"abs{i}")
        gs.Node("Abs", inputs=[x], outputs=[absolute])
        out = gs.Variable(f"m{i}")
        gs.Node("ReduceMax", attrs={"axes": [-1], "keepdims": 1}, inputs=[absolute], outputs=[out])
        outs.append(out)
    other = gs.Variable("other")
    gs.Node("ReduceMax", attrs={"axes": [0], "keepdims": 1}, inputs=[outs[0].inputs[0].inputs[0]],
            outputs=[other])
    assert equivalent(outs[0], outs[1])
    assert not equivalent(outs[0], other)
    identity_out = gs.Variable("id")
    gs.Node("Identity", inputs=[outs[0]], outputs=[identity_out])
    assert skip_transparent(identity_out) is outs[0] and equivalent(identity_out, outs[1])


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 9), n=st.integers(1, 9), seed=st.integers(0, 2**32 - 1),
       scale=st.floats(float(np.float32(1e-30)), float(np.float32(1e30)), width=32), per_channel=st.booleans())
def test_split_exact_ternary_recovers_codes_and_scales(k, n, seed, scale, per_channel):
    rng = np.random.default_rng(seed)
    codes = rng.integers(-1, 2, size=(k, n)).astype(np.int8)
    scales = (rng.uniform(0.5, 2.0, n) * scale).astype(np.float32) if per_channel else np.float32([scale])
    weight = (codes * scales).astype(np.float32)
    split = split_exact_ternary(weight)
    np.testing.assert_array_equal(split.codes, codes)
    np.testing.assert_array_equal(ternary_values(split), weight)
    used = np.abs(codes).max(axis=0) > 0
    if split.scales.size == 1:
        assert np.all(weight[codes != 0] == np.abs(split.scales[0]) * codes[codes != 0])
    else:
        np.testing.assert_array_equal(split.scales[used], np.broadcast_to(scales, (n,))[used])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_one_off_value_is_not_ternary(seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(-1, 2, size=(6, 5)).astype(np.int8)
    codes[0, 0] = 1
    codes[1, 0] = -1
    weight = (codes * np.float32(0.75)).astype(np.float32)
    weight[1, 0] = np.nextafter(weight[1, 0], np.float32(0))  # one ulp off in a column with another +-v
    with pytest.raises(NotTernaryError, match="not exactly ternary"):
        split_exact_ternary(weight)


def test_non_finite_and_wrong_rank_are_reported():
    with pytest.raises(NotTernaryError, match="NaN or Inf"):
        split_exact_ternary(np.array([[1.0, np.nan]], np.float32))
    with pytest.raises(NotTernaryError, match="rank 3"):
        split_exact_ternary(np.zeros((1, 2, 3), np.float32))
    split = split_exact_ternary(np.zeros((3, 2), np.float32))
    assert split.scales.tolist() == [1.0] and not split.codes.any()


def test_batches_split_by_size_and_a_failing_tensor_does_not_hide_the_others(monkeypatch):
    from onnxbit.passes.fold import evaluate

    b = GraphBuilder(opset=17)
    good = [b.op("Neg", [b.initializer(np.full((4, 4), i, np.float32), "w")]) for i in range(3)]
    # Shapes that cannot broadcast: onnxruntime fails on this one only.
    bad = b.op("Add", [b.initializer(np.ones((3, 2), np.float32), "a"), b.initializer(np.ones((4,), np.float32), "b")])
    y = b.op("Add", ["x", good[0]])
    graph = gs.import_onnx(b.model([float_input("x", [4, 4])], [float_input(y, [4, 4])]))
    monkeypatch.setattr(evaluate, "BATCH_BYTES", 100)  # two 64-byte weights never share a session
    sessions = []
    original_run = evaluate._run
    monkeypatch.setattr(evaluate, "_run", lambda g, ts: sessions.append(len(ts)) or original_run(g, ts))
    tensors = graph.tensors()
    values = [value for _, value in evaluate.iter_evaluated(graph, [tensors[g] for g in good] + [tensors[bad]])]
    for i, value in enumerate(values[:3]):
        np.testing.assert_array_equal(value, np.full((4, 4), -i, np.float32))
    assert isinstance(values[3], NotConstantError) and bad in str(values[3])
    assert sessions == [1, 1, 1, 1]


def test_equivalent_compares_tensor_attributes():
    shape = gs.Constant("shape", np.array([2, 2], np.int64))
    filled = []
    for i, fill in enumerate((0.0, 1.0, 0.0)):
        out = gs.Variable(f"filled{i}")
        gs.Node("ConstantOfShape", attrs={"value": gs.Constant(f"v{i}", np.array([fill], np.float32))},
                inputs=[shape], outputs=[out])
        filled.append(out)
    assert not equivalent(filled[0], filled[1])
    assert equivalent(filled[0], filled[2])
