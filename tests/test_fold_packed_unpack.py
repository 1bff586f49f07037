import numpy as np
import pytest

from onnxbit.graph.queries import ternary_proofs
from fold_chains import (GraphBuilder, float_input, integer_activation_quant, ops_in, pack_bitlinear,
                               packed_unpack_chain, reasons, relative_error, run_converted, run_plain,
                               run_qat, ternary_codes)

K, N = 64, 32


def bitlinear_block(rng, arithmetic=False, division="product", weight_scale_input=False):
    """Three offline-BitLinear projections sharing one integer activation
    quantizer: y = (q @ unpack(W)^T) / (weight_scale * s) + bias."""
    b = GraphBuilder(opset=18)
    q, s = integer_activation_quant(b, "x")
    codes, weight_scales, outputs = {}, {}, []
    for index, name in enumerate(("gate_proj", "up_proj", "o_proj")):
        codes[name] = ternary_codes(rng, (N, K))
        weight_scales[name] = np.float32(1 / 0.031 * (index + 1))
        y = b.op("MatMul", [q, packed_unpack_chain(b, pack_bitlinear(codes[name]), arithmetic)], node_name=name)
        ws = "ws" if weight_scale_input else b.const([weight_scales[name]])
        if division == "product":
            y = b.op("Div", [y, b.op("Mul", [ws, s])])
        elif division == "product-swapped":
            y = b.op("Div", [y, b.op("Mul", [s, ws])])
        elif division == "two-steps":
            y = b.op("Div", [b.op("Div", [y, s]), ws])
        y = b.op("Add", [y, b.const(rng.standard_normal(N).astype(np.float32))])
        outputs.append(y)
    out = b.op("Add", [b.op("Add", outputs[:2]), outputs[2]])
    inputs = [float_input("x", [3, 5, K])] + ([float_input("ws", [1])] if weight_scale_input else [])
    return b.model(inputs, [float_input(out, [3, 5, N])]), codes, weight_scales


@pytest.mark.parametrize("arithmetic", [False, True], ids=["bitwise", "div-mod"])
@pytest.mark.parametrize("division", ["product", "product-swapped", "two-steps"])
def test_packed_bitlinear_folds_to_act_quant_and_weight_scale(arithmetic, division, rng):
    model, codes, weight_scales = bitlinear_block(rng, arithmetic, division)
    x = (rng.standard_normal((3, 5, K)) * 2).astype(np.float32)
    expected = run_plain(model, {"x": x})[0]

    ctx = run_qat(model)
    for name, code in codes.items():
        folded = ternary_proofs(ctx.graph)[name]
        np.testing.assert_array_equal(folded.codes, code.T)
        assert folded.act_quant == 1 and folded.source == "fold-packed-unpack"
        assert folded.scales.tolist() == [np.float32(1) / weight_scales[name]]
    remaining = ops_in(ctx)
    assert not {"BitwiseAnd", "BitShift", "Mod", "Round", "Div", "Cast"} & set(remaining)

    actual = run_converted(ctx, {"x": x})[0]
    assert relative_error(actual, expected) < 1e-4
    np.testing.assert_array_equal(actual.argmax(-1), expected.argmax(-1))


def test_weight_scale_from_a_graph_input_keeps_the_integer_chain(rng):
    model, codes, _ = bitlinear_block(rng, weight_scale_input=True)
    x = rng.standard_normal((3, 5, K)).astype(np.float32)
    ws = np.array([21.5], np.float32)
    expected = run_plain(model, {"x": x, "ws": ws})[0]
    ctx = run_qat(model)
    skipped = reasons(ctx, "skipped")
    for name in codes:
        assert skipped[name] == ("activation quantizer kept: the weight scale dividing the MatMul output "
                                 "is not a constant")
        assert ternary_proofs(ctx.graph)[name].act_quant == 0
        assert ternary_proofs(ctx.graph)[name].scales.tolist() == [1.0]
    assert "BitwiseAnd" not in ops_in(ctx) and "Round" in ops_in(ctx)
    actual = run_converted(ctx, {"x": x, "ws": ws})[0]
    assert relative_error(actual, expected) < 1e-4


def test_unpack_without_the_minus_one_is_not_ternary(rng):
    b = GraphBuilder(opset=18)
    code = ternary_codes(rng, (N, K))
    p = b.initializer(pack_bitlinear(code), "packed")
    fields = [b.op("BitShift", [b.op("BitwiseAnd", [p, b.const(3 << 2 * i, np.uint8)]),
                                b.const(2 * i, np.uint8)], direction="RIGHT") for i in range(4)]
    w = b.op("Transpose", [b.op("Cast", [b.op("Concat", fields, axis=0)], to=1)], perm=[1, 0])
    y = b.op("MatMul", ["x", w], node_name="proj")
    model = b.model([float_input("x", [2, K])], [float_input(y, [2, N])])
    ctx = run_qat(model)
    assert "proj" not in ternary_proofs(ctx.graph)
    reason = reasons(ctx, "skipped")["proj"]
    assert reason.startswith("packed weight unpack chain on packed_")
    assert "not exactly ternary: column 3 holds magnitudes 1 and 2" in reason


def single_bitlinear(rng, weight_scale: np.ndarray, expose_matmul_output: bool = False):
    b = GraphBuilder(opset=18)
    q, s = integer_activation_quant(b, "x")
    code = ternary_codes(rng, (N, K))
    y = b.op("MatMul", [q, packed_unpack_chain(b, pack_bitlinear(code))], node_name="proj")
    out = b.op("Div", [y, b.op("Mul", [b.const(weight_scale), s])])
    outputs = [float_input(out, [4, N])] + ([float_input(y, [4, N])] if expose_matmul_output else [])
    return b.model([float_input("x", [4, K])], outputs), code


def test_per_channel_weight_scale_becomes_per_channel_scales(rng):
    weight_scale = rng.uniform(5, 50, N).astype(np.float32)
    model, code = single_bitlinear(rng, weight_scale)
    x = rng.standard_normal((4, K)).astype(np.float32)
    expected = run_plain(model, {"x": x})[0]
    ctx = run_qat(model)
    folded = ternary_proofs(ctx.graph)["proj"]
    assert folded.act_quant == 1
    np.testing.assert_array_equal(folded.scales, np.float32(1) / weight_scale)
    assert relative_error(run_converted(ctx, {"x": x})[0], expected) < 1e-4


def test_matmul_output_that_is_a_graph_output_keeps_the_division(rng):
    model, _ = single_bitlinear(rng, np.array([20.0], np.float32), expose_matmul_output=True)
    ctx = run_qat(model)
    assert ternary_proofs(ctx.graph)["proj"].act_quant == 0
    assert reasons(ctx, "skipped")["proj"] == ("activation quantizer kept: the MatMul output is a graph "
                                               "output, so the division after it cannot move into the op")
    x = rng.standard_normal((4, K)).astype(np.float32)
    expected = run_plain(model, {"x": x})
    actual = run_converted(ctx, {"x": x})
    for got, want in zip(actual, expected):
        assert relative_error(got, want) < 1e-4


def test_gemm_bias_before_the_division_keeps_the_division(rng):
    b = GraphBuilder(opset=18)
    q, s = integer_activation_quant(b, "x")
    code = ternary_codes(rng, (N, K))
    # Codes stored as uint8 codes+1 (one per byte), unpacked by Cast and Sub(1).
    w = b.op("Sub", [b.op("Cast", [b.initializer((code + 1).astype(np.uint8), "codes_plus_one")], to=1),
                     b.const(1.0)])
    y = b.op("Gemm", [q, w, b.const(np.full(N, 0.5, np.float32))], node_name="proj", transB=1)
    out = b.op("Div", [y, b.op("Mul", [b.const([8.0]), s])])
    model = b.model([float_input("x", [4, K])], [float_input(out, [4, N])])
    ctx = run_qat(model)
    np.testing.assert_array_equal(ternary_proofs(ctx.graph)["proj"].codes, code.T)
    assert ternary_proofs(ctx.graph)["proj"].act_quant == 0
    assert reasons(ctx, "skipped")["proj"] == ("activation quantizer kept: the Gemm adds C before the "
                                               "division, so the division cannot move into the op")
