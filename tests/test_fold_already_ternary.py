import numpy as np
import pytest

from onnxbit.graph.queries import ternary_proofs
from onnxbit.passes.fold import AlreadyTernary
from fold_chains import (GraphBuilder, activation_absmax_chain, export, float_input, ops_in, reasons,
                               relative_error, run_converted, run_plain, run_qat, ternary_codes)

K, N = 40, 24


def matmul_model(weight_kn: np.ndarray, through_transpose: bool, constant_node: bool = False):
    b = GraphBuilder(constants_as_nodes=constant_node, opset=17)
    stored = weight_kn.T.copy() if through_transpose else weight_kn
    w = b.const(stored, base="weight") if constant_node else b.initializer(stored, "weight")
    if through_transpose:
        w = b.op("Transpose", [w], perm=[1, 0])
    y = b.op("MatMul", [activation_absmax_chain(b, "x"), w], node_name="fc")
    return b.model([float_input("x", [6, K])], [float_input(y, [6, N])])


@pytest.mark.parametrize("through_transpose,constant_node", [(False, False), (True, False), (True, True)])
def test_per_tensor_ternary_initializer_is_recorded_as_is(through_transpose, constant_node, rng):
    codes = ternary_codes(rng, (K, N))
    scale = np.float32(0.0123)
    model = matmul_model(codes * scale, through_transpose, constant_node)
    ctx = run_qat(model)
    recorded = ternary_proofs(ctx.graph)["fc"]
    np.testing.assert_array_equal(recorded.codes, codes)
    assert recorded.scales.tolist() == [scale] and recorded.act_quant == 1
    assert recorded.source == "fold-already-ternary"

    x = rng.standard_normal((6, K)).astype(np.float32)
    assert relative_error(run_converted(ctx, {"x": x})[0], run_plain(model, {"x": x})[0]) < 1e-4


def test_per_channel_ternary_initializer(rng):
    codes = ternary_codes(rng, (K, N))
    column_scales = rng.uniform(0.01, 0.2, N).astype(np.float32)
    model = matmul_model(codes * column_scales, through_transpose=True)
    ctx = run_qat(model, [AlreadyTernary()])
    recorded = ternary_proofs(ctx.graph)["fc"]
    np.testing.assert_array_equal(recorded.codes, codes)
    np.testing.assert_array_equal(recorded.scales, column_scales)
    x = rng.standard_normal((6, K)).astype(np.float32)
    # Only the weight was recorded: the float graph computes exactly what it did.
    assert np.array_equal(run_plain(export(ctx), {"x": x})[0], run_plain(model, {"x": x})[0])


def test_float_weight_is_left_alone_without_a_record(rng):
    weight = rng.standard_normal((K, N)).astype(np.float32)
    weight[0, 0] = 0.0
    model = matmul_model(weight, through_transpose=False)
    ctx = run_qat(model)
    assert ternary_proofs(ctx.graph) == {}
    assert "fc" not in reasons(ctx, "folded") and "fc" in reasons(ctx, "skipped")
    assert reasons(ctx, "skipped")["fc"] == "activation quantizer kept: the MatMul weight is not proven ternary"
    assert ops_in(ctx).count("Round") == 1


def test_nearly_ternary_weight_is_never_re_ternarized(rng):
    codes = ternary_codes(rng, (K, N))
    weight = (codes * np.float32(0.5)).astype(np.float32)
    weight[3, 7] = np.nextafter(weight[3, 7], np.float32(2)) if weight[3, 7] else np.float32(1e-3)
    ctx = run_qat(matmul_model(weight, through_transpose=False), [AlreadyTernary()])
    assert ternary_proofs(ctx.graph) == {}


def test_gemm_with_transposed_b_records_k_by_n_codes(rng):
    codes = ternary_codes(rng, (K, N))
    scale = np.float32(0.25)
    b = GraphBuilder(opset=17)
    w = b.initializer((codes.T * scale).astype(np.float32), "weight")  # [N, K], transB=1
    bias = b.initializer(rng.standard_normal(N).astype(np.float32), "bias")
    y = b.op("Gemm", [activation_absmax_chain(b, "x"), w, bias], node_name="fc", transB=1)
    model = b.model([float_input("x", [6, K])], [float_input(y, [6, N])])
    ctx = run_qat(model)
    recorded = ternary_proofs(ctx.graph)["fc"]
    np.testing.assert_array_equal(recorded.codes, codes)
    assert recorded.act_quant == 1
    gemm = next(n for n in ctx.graph.nodes if n.name == "fc")
    assert gemm.inputs[0].name == "x" and gemm.inputs[1].values.shape == (N, K)
    # Without the op's act_quant the graph would differ; with plain float weights it still runs.
    assert run_plain(export(ctx), {"x": np.ones((6, K), np.float32)})[0].shape == (6, N)


def test_gemm_with_alpha_is_refused(rng):
    codes = ternary_codes(rng, (K, N))
    b = GraphBuilder(opset=17)
    y = b.op("Gemm", ["x", b.initializer(codes.astype(np.float32), "w")], node_name="fc", alpha=0.5)
    model = b.model([float_input("x", [6, K])], [float_input(y, [6, N])])
    ctx = run_qat(model)
    assert "fc" not in ternary_proofs(ctx.graph)
    assert reasons(ctx, "skipped")["fc"] == "initializer w_1: Gemm with alpha=0.5 scales the product"
