"""The emitters' packing against onnxruntime's own reading of it, over shapes
that exercise padding: K not a multiple of the block, odd block counts for
packed zero points, element counts that do not fill the last byte."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from onnxbit.passes.base import PassContext
from onnxbit.targets.dequantize import subbyte_proto
from onnxbit.targets.matmulnbits import pack_matmulnbits


def run(nodes, initializers, inputs, feeds, opset):
    graph = helper.make_graph(nodes, "emit", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 11 if opset >= 25 else 10
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def to_proto(constant: gs.Constant) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(np.asarray(constant.values), constant.name)


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 80), n=st.integers(1, 9), bits=st.sampled_from([2, 4, 8]),
       granularity=st.sampled_from(["tensor", "channel", "group"]), asymmetric=st.booleans(), seed=st.integers(0, 99))
def test_matmulnbits_packing_matches_onnxruntime(k, n, bits, granularity, asymmetric, seed):
    rng = np.random.default_rng(seed)
    group = 16 if granularity == "group" else 0
    n_groups = -(-k // 16)
    shape = {"tensor": (1,), "channel": (n,), "group": (n_groups, n)}[granularity]
    codes = rng.integers(0, 2**bits, size=(k, n)).astype(np.uint8)
    scales = rng.uniform(0.5, 2.0, size=shape).astype(np.float32)
    zeros = rng.integers(0, 2**bits, size=shape).astype(np.uint8) if asymmetric else None
    ctx = PassContext(graph=gs.Graph())
    packed = pack_matmulnbits(ctx, "w", precision=f"int{bits}", unsigned_codes=codes, bits=bits, scales=scales,
                              zero_points=zeros, granularity=granularity, group_size=group, accuracy_level=0)
    zero_full = np.full(shape, 2 ** (bits - 1), np.float32) if zeros is None else zeros.astype(np.float32)
    expand = {"tensor": lambda v: v.reshape(1, 1), "channel": lambda v: v.reshape(1, n),
              "group": lambda v: np.repeat(v, 16, axis=0)[:k]}[granularity]
    weight = (codes.astype(np.float32) - expand(zero_full)) * expand(scales)
    names = [c.name for c in packed.constants]
    node = helper.make_node("MatMulNBits", ["x", *names], ["y"], domain="com.microsoft", **packed.attrs)
    x = rng.standard_normal((3, k)).astype(np.float32)
    y = run([node], [to_proto(c) for c in packed.constants], [helper.make_tensor_value_info("x", 1, [3, k])],
            {"x": x}, 21)
    # float32 accumulation: the error scales with sum |x * w|, not with the result.
    bound = 1e-5 * (np.abs(x).astype(np.float64) @ np.abs(weight)).max()
    np.testing.assert_allclose(y, x.astype(np.float64) @ weight, rtol=0, atol=bound)
    assert packed.bytes_after == sum(np.asarray(c.values).nbytes for c in packed.constants)


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 13), n=st.integers(1, 7), bits=st.sampled_from([2, 4, 8]), signed=st.booleans(),
       seed=st.integers(0, 99))
def test_subbyte_initializers_dequantize_in_onnxruntime(k, n, bits, signed, seed):
    rng = np.random.default_rng(seed)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else (0, 2**bits)
    values = rng.integers(low, high, size=(k, n)).astype(np.int8 if signed else np.uint8)
    proto = subbyte_proto("q", values, bits, signed)
    scale = onnx.numpy_helper.from_array(np.array(0.5, np.float32), "s")
    node = helper.make_node("DequantizeLinear", ["q", "s"], ["y"])
    y = run([node], [proto, scale], [], {}, 25)
    np.testing.assert_array_equal(y, values.astype(np.float32) * 0.5)
