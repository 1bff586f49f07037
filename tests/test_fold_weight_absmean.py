import numpy as np
import pytest

from onnxbit.graph.queries import ternary_proofs
from onnxbit.passes.fold import WeightAbsmeanFold
from onnxbit.passes.fold.exact_ternary import ExactTernary, ternary_values
from fold_chains import (GraphBuilder, activation_absmax_chain, export, float_input,
                               noisy_absmean_weight, ops_in, reasons, relative_error, run_converted,
                               run_plain, run_qat, weight_absmean_chain)


def single_layer(rng, style: dict, k=48, n=20, per_row=False, chain_options=None):
    codes, weight = noisy_absmean_weight(rng, n, k)
    b = GraphBuilder(**style)
    w = weight_absmean_chain(b, weight, per_row=per_row, **(chain_options or {}))
    y = b.op("MatMul", ["x", w], node_name="fc")
    model = b.model([float_input("x", [3, 4, k])], [float_input(y, [3, 4, n])])
    return model, codes, weight


STYLES = {
    "torchscript-constants-reciprocal": (dict(constants_as_nodes=True, opset=17), dict(reciprocal=True)),
    "dynamo-initializers-div": (dict(constants_as_nodes=False, opset=18), dict(reciprocal=False)),
    "casts-and-identity": (dict(constants_as_nodes=False, opset=17), dict(reciprocal=False, with_casts=True)),
}


@pytest.mark.parametrize("style", STYLES)
def test_weight_chain_becomes_exact_constant(style, rng):
    graph_style, chain_options = STYLES[style]
    model, codes, _ = single_layer(rng, graph_style, chain_options=chain_options)
    x = rng.standard_normal((3, 4, 48)).astype(np.float32)
    expected = run_plain(model, {"x": x})[0]

    ctx = run_qat(model, [WeightAbsmeanFold()])
    weight = ternary_proofs(ctx.graph)["fc"]
    np.testing.assert_array_equal(weight.codes, codes.T)  # nn.Linear's W^T: [K, N]
    assert weight.scales.shape == (1,) and weight.act_quant == 0
    assert not {"Round", "ReduceMean", "Abs", "Clip", "Transpose"} & set(ops_in(ctx))
    # The folded constant holds the very values the chain computed in onnxruntime.
    assert np.array_equal(run_plain(export(ctx), {"x": x})[0], expected)
    assert reasons(ctx, "folded")["fc"].startswith("absmean weight chain")


def test_scale_is_the_graph_reciprocal_of_the_mean(rng):
    model, _, weight = single_layer(rng, dict(opset=17))
    ctx = run_qat(model, [WeightAbsmeanFold()])
    mean = np.float32(np.abs(weight.astype(np.float64)).mean())
    # 1/(1/mean) within a couple of float32 ulps of the mean; exactness is checked above.
    assert ternary_proofs(ctx.graph)["fc"].scales[0] == pytest.approx(mean, rel=1e-6)


def test_per_row_absmean_gives_per_channel_scales(rng):
    model, codes, weight = single_layer(rng, dict(opset=18), per_row=True)
    x = rng.standard_normal((3, 4, 48)).astype(np.float32)
    ctx = run_qat(model, [WeightAbsmeanFold()])
    folded = ternary_proofs(ctx.graph)["fc"]
    np.testing.assert_array_equal(folded.codes, codes.T)
    assert folded.scales.shape == (20,)
    np.testing.assert_allclose(folded.scales, np.abs(weight).mean(axis=1), rtol=1e-5)
    assert np.array_equal(run_plain(export(ctx), {"x": x})[0], run_plain(model, {"x": x})[0])


def test_wrong_clip_range_is_refused_with_reason(rng):
    k, n = 32, 8
    codes, weight = noisy_absmean_weight(rng, n, k)
    weight[0, :4] *= 4  # pushes a few values to +-2 levels once the clip allows them
    b = GraphBuilder(opset=17)
    w = b.initializer(weight, "w")
    mean = b.reduce("ReduceMean", b.op("Abs", [w]), None, keepdims=0)
    s = b.op("Reciprocal", [b.clip(mean, 1e-5, None)])
    q = b.clip(b.op("Round", [b.op("Mul", [w, s])]), -2.0, 2.0)
    wt = b.op("Transpose", [b.op("Div", [q, s])], perm=[1, 0])
    y = b.op("MatMul", ["x", wt], node_name="fc")
    model = b.model([float_input("x", [2, k])], [float_input(y, [2, n])])

    ctx = run_qat(model)
    assert "fc" not in ternary_proofs(ctx.graph)
    reason = reasons(ctx, "skipped")["fc"]
    assert "not exactly ternary" in reason and "magnitudes 0.0372326 and 0.0744652" in reason
    assert "Round" in ops_in(ctx)  # the chain stays


def test_one_chain_feeding_two_matmuls_is_folded_for_both(rng):
    k, n = 32, 12
    codes, weight = noisy_absmean_weight(rng, n, k)
    b = GraphBuilder(opset=18)
    w = weight_absmean_chain(b, weight)
    y1 = b.op("MatMul", ["x", w], node_name="first")
    y2 = b.op("MatMul", [b.op("Relu", ["x"]), w], node_name="second")
    out = b.op("Add", [y1, y2])
    model = b.model([float_input("x", [5, k])], [float_input(out, [5, n])])
    ctx = run_qat(model)
    assert set(ternary_proofs(ctx.graph)) == {"first", "second"}
    nodes = {node.name: node for node in ctx.graph.nodes}
    assert nodes["first"].inputs[1] is nodes["second"].inputs[1]
    recorded = ternary_proofs(ctx.graph)["first"]
    np.testing.assert_array_equal(nodes["first"].inputs[1].values,
                                  ternary_values(ExactTernary(recorded.codes, recorded.scales)))


@pytest.mark.parametrize("constants_as_nodes,opset", [(True, 17), (False, 18)])
def test_two_layer_qat_mlp_matches_original_through_ternary_matmul(constants_as_nodes, opset, rng):
    k, h, n = 64, 40, 10
    codes1, w1 = noisy_absmean_weight(rng, h, k)
    codes2, w2 = noisy_absmean_weight(rng, n, h)
    b = GraphBuilder(constants_as_nodes=constants_as_nodes, opset=opset)
    hidden = b.op("MatMul", [activation_absmax_chain(b, "x"), weight_absmean_chain(b, w1)], node_name="fc1")
    hidden = b.op("Relu", [hidden])
    y = b.op("MatMul", [activation_absmax_chain(b, hidden), weight_absmean_chain(b, w2, reciprocal=False)],
             node_name="fc2")
    model = b.model([float_input("x", [16, k])], [float_input(y, [16, n])])
    x = rng.standard_normal((16, k)).astype(np.float32)
    expected = run_plain(model, {"x": x})[0]

    ctx = run_qat(model)
    assert {name: w.act_quant for name, w in ternary_proofs(ctx.graph).items()} == {"fc1": 1, "fc2": 1}
    np.testing.assert_array_equal(ternary_proofs(ctx.graph)["fc1"].codes, codes1.T)
    np.testing.assert_array_equal(ternary_proofs(ctx.graph)["fc2"].codes, codes2.T)
    actual = run_converted(ctx, {"x": x})[0]
    assert ops_in(ctx).count("TernaryMatMul") == 2 and "Round" not in ops_in(ctx)
    assert relative_error(actual, expected) < 1e-4
    np.testing.assert_array_equal(actual.argmax(-1), expected.argmax(-1))


def _absmean_scale_in_onnxruntime(weight: np.ndarray) -> np.float32:
    b = GraphBuilder(opset=17)
    w = b.initializer(weight, "w")
    s = b.op("Reciprocal", [b.clip(b.reduce("ReduceMean", b.op("Abs", [w]), None, 0), 1e-5, None)])
    return run_plain(b.model([], [float_input(s, [])]), {})[0]


def _weight_on_a_rounding_boundary(rng):
    """A weight [N, K] with one element w such that round(w * s) differs
    between onnxruntime's s and numpy's s (ReduceMean sums in another order):
    folding with a numpy re-implementation would flip that code."""
    for _ in range(50):
        weight = (rng.standard_normal((64, 512)) * 0.02).astype(np.float32)
        s_ort = _absmean_scale_in_onnxruntime(weight)
        s_numpy = np.float32(1) / np.abs(weight).mean(dtype=np.float32)
        if s_ort == s_numpy:
            continue
        candidate = np.float32(0.5) / s_ort
        for _ in range(8):
            if np.rint(candidate * s_ort) != np.rint(candidate * s_numpy):
                # Replace the element nearest in value, so the mean barely moves.
                index = np.unravel_index(np.argmin(np.abs(weight - candidate)), weight.shape)
                moved = weight.copy()
                moved[index] = candidate
                s_ort = _absmean_scale_in_onnxruntime(moved)
                s_numpy = np.float32(1) / np.abs(moved).mean(dtype=np.float32)
                if np.rint(candidate * s_ort) != np.rint(candidate * s_numpy):
                    return moved, index, int(np.rint(candidate * s_ort))
            candidate = np.nextafter(candidate, np.float32(1))
    raise AssertionError("no weight on a rounding boundary found")


def test_codes_follow_onnxruntime_arithmetic_not_numpy(rng):
    weight, (n, k), ort_code = _weight_on_a_rounding_boundary(rng)
    b = GraphBuilder(opset=17)
    y = b.op("MatMul", ["x", weight_absmean_chain(b, weight)], node_name="fc")
    model = b.model([float_input("x", [2, 512])], [float_input(y, [2, 64])])
    ctx = run_qat(model, [WeightAbsmeanFold()])
    assert ternary_proofs(ctx.graph)["fc"].codes[k, n] == ort_code
    x = rng.standard_normal((2, 512)).astype(np.float32)
    assert np.array_equal(run_plain(export(ctx), {"x": x})[0], run_plain(model, {"x": x})[0])
