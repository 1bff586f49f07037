import numpy as np
import pytest

from onnxbit.graph.queries import ternary_proofs
from fold_chains import (GraphBuilder, activation_absmax_chain, float_input, noisy_absmean_weight,
                               ops_in, reasons, relative_error, run_converted, run_plain, run_qat,
                               weight_absmean_chain)

K, N = 64, 16


def attention_like(rng, chain_options=None, style=None, extra_float_consumer=False):
    """One activation chain shared by q/k/v projections (as in a decoder
    layer), plus a non-MatMul consumer of the quantized activation."""
    b = GraphBuilder(**(style or {}))
    xq = activation_absmax_chain(b, "x", **(chain_options or {}))
    codes = {}
    outputs = []
    for name in ("q_proj", "k_proj", "v_proj"):
        codes[name], weight = noisy_absmean_weight(rng, N, K)
        outputs.append(b.op("MatMul", [xq, weight_absmean_chain(b, weight)], node_name=name))
    total = b.op("Add", [b.op("Add", outputs[:2]), outputs[2]])
    if extra_float_consumer:
        # A plain float layer reading the same quantized activation: not ternary.
        float_weight = rng.standard_normal((K, N)).astype(np.float32)
        total = b.op("Add", [total, b.op("MatMul", [xq, b.initializer(float_weight, "dense")],
                                         node_name="dense")])
    # The quantized activation also feeds a non-MatMul consumer (a second output).
    side = b.op("Neg", [xq])
    model = b.model([float_input("x", [2, 7, K])], [float_input(total, [2, 7, N]), float_input(side, [2, 7, K])])
    return model, codes


STYLES = {
    "torchscript": (dict(constants_as_nodes=True, opset=17), {}),
    "dynamo": (dict(constants_as_nodes=False, opset=18), {}),
    "reciprocal-division": (dict(opset=17), dict(reciprocal_division=True)),
    "max-clamp": (dict(opset=18), dict(use_max_op=True)),
    "duplicated-scale": (dict(opset=17), dict(duplicate_scale=True)),
    "reciprocal-scale-scale-first": (dict(opset=18), dict(reciprocal_scale=True, scale_first=True)),
}


@pytest.mark.parametrize("style", STYLES)
def test_shared_chain_folds_into_every_ternary_consumer(style, rng):
    graph_style, chain_options = STYLES[style]
    model, codes = attention_like(rng, chain_options, graph_style)
    x = (rng.standard_normal((2, 7, K)) * 3).astype(np.float32)
    expected = run_plain(model, {"x": x})[0]

    ctx = run_qat(model)
    assert {name: w.act_quant for name, w in ternary_proofs(ctx.graph).items()} == \
        {"q_proj": 1, "k_proj": 1, "v_proj": 1}
    for name, node in ((n.name, n) for n in ctx.graph.nodes if n.name in codes):
        assert node.inputs[0].name == "x"
        np.testing.assert_array_equal(ternary_proofs(ctx.graph)[name].codes, codes[name].T)
    # The Neg still reads the quantized activation, so one chain remains.
    assert ops_in(ctx).count("Round") == 1
    flagged_one_rounding = "127 / max|x| in one rounding" in reasons(ctx, "folded")["q_proj"]
    assert flagged_one_rounding == (not chain_options.get("reciprocal_scale"))

    actual, side = run_converted(ctx, {"x": x})
    assert relative_error(actual, expected) < 1e-4
    np.testing.assert_array_equal(side, run_plain(model, {"x": x})[1])
    np.testing.assert_array_equal(actual.argmax(-1), expected.argmax(-1))


def test_consumer_without_ternary_weight_keeps_the_chain(rng):
    model, _ = attention_like(rng, extra_float_consumer=True)
    x = rng.standard_normal((2, 7, K)).astype(np.float32)
    expected = run_plain(model, {"x": x})[0]
    ctx = run_qat(model)
    assert "dense" not in ternary_proofs(ctx.graph)
    assert reasons(ctx, "skipped")["dense"] == \
        "activation quantizer kept: the MatMul weight is not proven ternary"
    dense = next(n for n in ctx.graph.nodes if n.name == "dense")
    assert dense.inputs[0].name != "x"
    actual = run_converted(ctx, {"x": x})[0]
    assert relative_error(actual, expected) < 1e-4


NEAR_MISSES = {
    "numerator": (dict(numerator=100.0), "scale numerator is 100.0, act_quant=1 uses 127"),
    "eps": (dict(eps=1e-3), "max|x| is clamped at 0.001, act_quant=1 clamps at 1e-5"),
    "clip-range": (dict(low=-127.0), "q is clipped to [-127.0, 127.0], act_quant=1 clips to [-128, 127]"),
    "axis-0": (dict(axis=0), "ReduceMax over axis 0 of a rank-3 tensor; act_quant=1 reduces over the last axis (-1)"),
    "axis-1": (dict(axis=1), "ReduceMax over axis 1 of a rank-3 tensor; act_quant=1 reduces over the last axis (-1)"),
}


@pytest.mark.parametrize("case", NEAR_MISSES)
def test_near_miss_chain_is_refused_and_kept(case, rng):
    chain_options, expected_reason = NEAR_MISSES[case]
    model, codes = attention_like(rng, chain_options)
    x = rng.standard_normal((2, 7, K)).astype(np.float32)
    expected = run_plain(model, {"x": x})[0]

    ctx = run_qat(model)
    skipped = reasons(ctx, "skipped")
    for name in codes:
        assert skipped[name] == f"activation quantizer kept: {expected_reason}"
        assert ternary_proofs(ctx.graph)[name].act_quant == 0  # the weight itself is still exact
    assert ops_in(ctx).count("Round") == 1
    actual = run_converted(ctx, {"x": x})[0]
    assert relative_error(actual, expected) < 1e-4


def test_last_axis_given_as_positive_index_is_accepted(rng):
    b = GraphBuilder(opset=18)
    codes, weight = noisy_absmean_weight(rng, N, K)
    y = b.op("MatMul", [activation_absmax_chain(b, "x", axis=2), weight_absmean_chain(b, weight)],
             node_name="fc")
    model = b.model([float_input("x", [2, 3, K])], [float_input(y, [2, 3, N])])
    ctx = run_qat(model)
    assert ternary_proofs(ctx.graph)["fc"].act_quant == 1


def test_per_tensor_max_is_not_per_token(rng):
    b = GraphBuilder(opset=17)
    _, weight = noisy_absmean_weight(rng, N, K)
    x = "x"
    amax = b.op("ReduceMax", [b.op("Abs", [x])], keepdims=1)  # no axes: the whole tensor
    s = b.op("Div", [b.const(127.0), b.clip(amax, 1e-5, None)])
    xq = b.op("Div", [b.clip(b.op("Round", [b.op("Mul", [x, s])]), -128.0, 127.0), s])
    y = b.op("MatMul", [xq, weight_absmean_chain(b, weight)], node_name="fc")
    model = b.model([float_input("x", [4, K])], [float_input(y, [4, N])])
    ctx = run_qat(model)
    assert reasons(ctx, "skipped")["fc"] == ("activation quantizer kept: ReduceMax reduces over all axes "
                                             "(per-tensor), act_quant=1 is per token (axis -1)")


def test_chain_scaling_a_different_tensor_is_refused(rng):
    b = GraphBuilder(opset=17)
    _, weight = noisy_absmean_weight(rng, N, K)
    s = b.op("Div", [b.const(127.0), b.clip(b.reduce("ReduceMax", b.op("Abs", ["x"]), [-1], 1), 1e-5, None)])
    other = b.op("Relu", ["x"])
    xq = b.op("Div", [b.clip(b.op("Round", [b.op("Mul", [other, s])]), -128.0, 127.0), s])
    y = b.op("MatMul", [xq, weight_absmean_chain(b, weight)], node_name="fc")
    model = b.model([float_input("x", [4, K])], [float_input(y, [4, N])])
    ctx = run_qat(model)
    assert reasons(ctx, "skipped")["fc"] == ("activation quantizer kept: the tensor scaled by s is not the "
                                             "tensor whose max|x| defines s")
