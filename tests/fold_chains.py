"""Synthetic ONNX graphs mirroring what exporters emit for BitNet QAT layers
(transformers' WeightQuant / ActQuant / offline BitLinear), in the spellings
that differ between exporters, plus a minimal TernaryMatMul packer so tests can
run the folded graph through the real custom op."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

from onnxbit.graph.gs_adapter import export_complete
from onnxbit.graph.queries import ternary_proofs
from onnxbit.passes.base import PassContext


@dataclass
class GraphBuilder:
    """Accumulates nodes; constants become initializers or Constant nodes
    (TorchScript keeps many as Constant nodes, dynamo as initializers)."""

    constants_as_nodes: bool = False
    opset: int = 17
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    _count: int = 0

    def name(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def const(self, value, dtype=np.float32, base: str = "c") -> str:
        array = np.asarray(value, dtype=dtype)
        name = self.name(base)
        if self.constants_as_nodes:
            self.nodes.append(helper.make_node("Constant", [], [name], name=f"{name}_node",
                                               value=numpy_helper.from_array(array, name)))
        else:
            self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def initializer(self, value: np.ndarray, base: str) -> str:
        name = self.name(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], node_name: str | None = None, **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=node_name or out, **attrs))
        return out

    def reduce(self, op_type: str, x: str, axes: list[int] | None, keepdims: int) -> str:
        if axes is None:
            return self.op(op_type, [x], keepdims=keepdims)
        if self.opset >= 18:
            return self.op(op_type, [x, self.const(axes, np.int64, "axes")], keepdims=keepdims)
        return self.op(op_type, [x], axes=axes, keepdims=keepdims)

    def clip(self, x: str, low: float | None, high: float | None) -> str:
        inputs = [x, self.const(low) if low is not None else ""]
        if high is not None:
            inputs.append(self.const(high))
        return self.op("Clip", inputs)

    def model(self, inputs: list, outputs: list) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "bitnet_qat", inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def weight_absmean_chain(b: GraphBuilder, w_nk: np.ndarray, reciprocal: bool = True,
                         with_casts: bool = False, per_row: bool = False) -> str:
    """transformers' WeightQuant on an nn.Linear weight [N, K], then W^T.
    s = 1 / mean|w|.clamp(1e-5); w_q = (w*s).round().clamp(-1, 1) / s."""
    w = b.initializer(w_nk.astype(np.float32), "linear_weight")
    if with_casts:
        w = b.op("Cast", [w], to=TensorProto.FLOAT)
    mean = b.reduce("ReduceMean", b.op("Abs", [w]), [1] if per_row else None, keepdims=int(per_row))
    clamped = b.clip(mean, 1e-5, None)
    s = b.op("Reciprocal", [clamped]) if reciprocal else b.op("Div", [b.const(1.0), clamped])
    q = b.clip(b.op("Round", [b.op("Mul", [w, s])]), -1.0, 1.0)
    w_q = b.op("Div", [q, s])
    if with_casts:
        w_q = b.op("Identity", [b.op("Cast", [w_q], to=TensorProto.FLOAT)])
    return b.op("Transpose", [w_q], perm=[1, 0])


def activation_scale(b: GraphBuilder, x: str, numerator: float = 127.0, eps: float = 1e-5,
                     axis: int = -1, use_max_op: bool = False, reciprocal_scale: bool = False) -> str:
    amax = b.reduce("ReduceMax", b.op("Abs", [x]), [axis], keepdims=1)
    clamped = b.op("Max", [amax, b.const(eps)]) if use_max_op else b.clip(amax, eps, None)
    if reciprocal_scale:  # 127 / t decomposed as reciprocal(t) * 127
        return b.op("Mul", [b.op("Reciprocal", [clamped]), b.const(numerator)])
    return b.op("Div", [b.const(numerator), clamped])


def activation_absmax_chain(b: GraphBuilder, x: str, numerator: float = 127.0, eps: float = 1e-5,
                            axis: int = -1, low: float = -128.0, high: float = 127.0,
                            reciprocal_division: bool = False, use_max_op: bool = False,
                            duplicate_scale: bool = False, reciprocal_scale: bool = False,
                            scale_first: bool = False) -> str:
    """transformers' ActQuant: (x*s).round().clamp(-128, 127) / s."""
    s = activation_scale(b, x, numerator, eps, axis, use_max_op, reciprocal_scale)
    q = b.clip(b.op("Round", [b.op("Mul", [s, x] if scale_first else [x, s])]), low, high)
    divisor = activation_scale(b, x, numerator, eps, axis, use_max_op, reciprocal_scale) \
        if duplicate_scale else s
    if reciprocal_division:
        return b.op("Mul", [q, b.op("Reciprocal", [divisor])])
    return b.op("Div", [q, divisor])


def pack_bitlinear(codes_nk: np.ndarray) -> np.ndarray:
    """transformers' pack_weights: rows i*R..(i+1)*R of W [N, K] (codes + 1)
    go to bits 2i..2i+1 of a uint8 [R = N/4, K] tensor."""
    n, k = codes_nk.shape
    rows = n // 4
    packed = np.zeros((rows, k), np.uint8)
    for i in range(4):
        packed |= ((codes_nk[i * rows:(i + 1) * rows] + 1).astype(np.uint8) << (2 * i))
    return packed


def packed_unpack_chain(b: GraphBuilder, packed: np.ndarray, arithmetic: bool = False) -> str:
    """transformers' unpack_weights then W^T: [N/4, K] uint8 -> float [K, N]."""
    p = b.initializer(packed, "packed_weight")
    pieces = []
    for i in range(4):
        if arithmetic:  # x // 4**i % 4 after a Cast, as some exporters spell shifts
            wide = b.op("Cast", [p], to=TensorProto.INT32)
            field_ = b.op("Mod", [b.op("Div", [wide, b.const(4 ** i, np.int32)]), b.const(4, np.int32)])
        else:
            masked = b.op("BitwiseAnd", [p, b.const(3 << (2 * i), np.uint8)])
            field_ = b.op("BitShift", [masked, b.const(2 * i, np.uint8)], direction="RIGHT")
        pieces.append(field_)
    stacked = b.op("Concat", pieces, axis=0)
    codes = b.op("Sub", [b.op("Cast", [stacked], to=TensorProto.FLOAT), b.const(1.0)])
    return b.op("Transpose", [codes], perm=[1, 0])


def integer_activation_quant(b: GraphBuilder, x: str, numerator: float = 127.0) -> tuple[str, str]:
    """BitLinear.activation_quant: (q as int8 then back to float, s)."""
    s = activation_scale(b, x, numerator)
    q = b.clip(b.op("Round", [b.op("Mul", [x, s])]), -128.0, 127.0)
    q = b.op("Cast", [b.op("Cast", [q], to=TensorProto.INT8)], to=TensorProto.FLOAT)
    return q, s


def ternary_codes(rng: np.random.Generator, shape: tuple[int, int], zero_fraction: float = 0.35) -> np.ndarray:
    codes = rng.choice(np.array([-1, 0, 1], np.int8), size=shape,
                       p=[(1 - zero_fraction) / 2, zero_fraction, (1 - zero_fraction) / 2])
    return codes.astype(np.int8)


def float_input(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def pack_2bit_rows(codes_kn: np.ndarray) -> np.ndarray:
    """W^T [N, K] packed four codes a byte (code = w + 1, element i at bits 2*(i%4))."""
    rows = codes_kn.T.astype(np.int16) + 1
    n, k = rows.shape
    padded = np.zeros((n, (k + 3) // 4 * 4), np.uint8)
    padded[:, :k] = rows
    quads = padded.reshape(n, -1, 4)
    return (quads[..., 0] | quads[..., 1] << 2 | quads[..., 2] << 4 | quads[..., 3] << 6).astype(np.uint8)


def emit_ternary_matmuls(ctx: PassContext) -> None:
    """Replace every recorded MatMul by com.onnxbit::TernaryMatMul packed from
    the recorded codes (what the converter's packing pass does, minus its
    bookkeeping)."""
    graph = ctx.graph
    by_name = {node.name: node for node in graph.nodes}
    for name, weight in ternary_proofs(ctx.graph).items():
        node = by_name[name]
        assert node.op == "MatMul", "the test packer handles MatMul only"
        k, n = weight.codes.shape
        packed = gs.Constant(f"{name}.packed", pack_2bit_rows(weight.codes))
        scales = gs.Constant(f"{name}.scales", np.asarray(weight.scales, np.float32).reshape(-1))
        replacement = gs.Node("TernaryMatMul", f"{name}.ternary", domain="com.onnxbit",
                              attrs={"K": k, "N": n, "format": "2bit", "group_size": 0,
                                     "act_quant": int(weight.act_quant)},
                              inputs=[node.inputs[0], packed, scales], outputs=list(node.outputs))
        node.outputs.clear()
        graph.nodes.append(replacement)
    graph.cleanup().toposort()


def export(ctx: PassContext) -> onnx.ModelProto:
    model = export_complete(ctx.graph)
    if any(node.domain == "com.onnxbit" for node in model.graph.node):
        model.opset_import.append(helper.make_opsetid("com.onnxbit", 1))
    model.ir_version = 8
    return model


def run_qat(model: onnx.ModelProto, passes=None) -> PassContext:
    from onnxbit.passes.fold import qat_passes

    ctx = PassContext(gs.import_onnx(model))
    for qat_pass in passes if passes is not None else qat_passes():
        qat_pass.run(ctx)
    return ctx


def run_plain(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def run_converted(ctx: PassContext, feeds: dict) -> list[np.ndarray]:
    """Pack the recorded weights into TernaryMatMul and run with the onnxbit library."""
    from onnxbit.runtime import InferenceSession

    emit_ternary_matmuls(ctx)
    return InferenceSession(export(ctx)).run(None, feeds)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(float(np.abs(expected).max()), 1e-30))


def ops_in(ctx_or_model) -> list[str]:
    if isinstance(ctx_or_model, PassContext):
        return [node.op for node in ctx_or_model.graph.nodes]
    return [node.op_type for node in ctx_or_model.graph.node]


def reasons(ctx: PassContext, action: str) -> dict[str, str]:
    return {r.node: r.reason for r in ctx.records if r.action == action}


def noisy_absmean_weight(rng: np.random.Generator, n: int, k: int,
                         magnitude: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(codes [N, K], float weight [N, K]) such that BitNet's absmean quantizer
    returns exactly ``codes``: nonzero codes sit at magnitude*(1 +- 20%), zeros
    within +-10% of magnitude, far from any rounding boundary."""
    codes = ternary_codes(rng, (n, k))
    noise = rng.uniform(-0.2, 0.2, (n, k)).astype(np.float32)
    weight = np.where(codes != 0, codes * magnitude * (1 + noise), magnitude * noise * 0.5)
    return codes, weight.astype(np.float32)
