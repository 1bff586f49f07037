"""Find every MatMul/Gemm that multiplies by a constant [K, N] weight.

Weights may be initializers, Constant nodes, or a constant seen through
Identity / Cast / Transpose / Reshape / Squeeze / Unsqueeze nodes; nodes inside
If / Loop / Scan bodies are searched too (their weights are often outer-scope
initializers). Each match becomes a :class:`WeightSite` in ctx.weight_sites;
each node that cannot be converted is recorded as skipped with the reason.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxbit.passes.base import Pass, PassContext, PassResult, WeightSite
from onnxbit.passes.borrowed_initializers import read_constant

_FLOAT_DTYPES = (np.float32, np.float16, np.float64)
# Value-preserving ops a weight may be read through.
_TRANSFORMS = ("Identity", "Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze")


class NotConstant(Exception):
    """The weight is not a compile-time constant; the message says why."""


def constant_array(tensor: gs.Constant) -> np.ndarray:
    """A constant's values, read without keeping them in the graph."""
    return np.asarray(read_constant(tensor))


def _constant_node_value(node: gs.Node) -> np.ndarray:
    attrs = node.attrs
    if "value" in attrs:
        return constant_array(attrs["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    raise NotConstant(f"Constant node '{node.name}' holds {sorted(attrs)} (only dense values are read)")


def _reshape_target(shape: np.ndarray, data: np.ndarray, allowzero: int) -> list[int]:
    dims = [int(d) for d in shape]
    if not allowzero:
        dims = [data.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return dims


def resolve_constant(tensor: gs.Tensor) -> tuple[np.ndarray, str]:
    """The value of `tensor` when it is computed from constants only by
    value-preserving ops, plus a key naming the source and the ops applied."""
    if isinstance(tensor, gs.Constant):
        return constant_array(tensor), tensor.name
    if not tensor.inputs:
        raise NotConstant(f"'{tensor.name}' is a graph input, not a constant")
    node = tensor.inputs[0]
    op = node.op
    if op == "Constant":
        return _constant_node_value(node), f"{node.name or tensor.name}"
    if op not in _TRANSFORMS:
        raise NotConstant(f"'{tensor.name}' comes from {op} node '{node.name}', not from a constant through "
                          f"{'/'.join(_TRANSFORMS)}")
    data, key = resolve_constant(node.inputs[0])
    if op == "Identity":
        return data, key
    if op == "Cast":
        to = onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"])
        if not (np.issubdtype(to, np.floating) and np.issubdtype(data.dtype, np.floating)):
            raise NotConstant(f"Cast node '{node.name}' converts {data.dtype} to {to}, not between float types")
        return data.astype(to), f"{key}|cast:{np.dtype(to).name}"
    if op == "Transpose":
        perm = node.attrs.get("perm")
        perm = list(perm) if perm is not None else list(reversed(range(data.ndim)))
        return np.transpose(data, perm), f"{key}|transpose:{perm}"
    # Reshape / Squeeze / Unsqueeze: the shape or axes come from an input or an attribute.
    if len(node.inputs) > 1 and node.inputs[1].name:
        operand, _ = resolve_constant(node.inputs[1])
    elif "axes" in node.attrs:
        operand = np.asarray(node.attrs["axes"])
    else:
        operand = None
    if op == "Reshape":
        dims = _reshape_target(operand, data, node.attrs.get("allowzero", 0))
        return data.reshape(dims), f"{key}|reshape:{dims}"
    if op == "Squeeze":
        axes = tuple(int(a) for a in operand) if operand is not None else None
        return np.squeeze(data, axis=axes), f"{key}|squeeze:{axes}"
    axes = sorted(int(a) % (data.ndim + len(operand)) for a in operand)
    return np.expand_dims(data, axis=tuple(axes)), f"{key}|unsqueeze:{axes}"


def _is_constant(tensor: gs.Tensor) -> bool:
    try:
        resolve_constant(tensor)
    except NotConstant:
        return False
    return True


def _tensor_nbytes(tensor: gs.Tensor, fallback: np.ndarray) -> int:
    """Bytes the weight's source constant occupies in the original model."""
    t = tensor
    while not isinstance(t, gs.Constant) and t.inputs and t.inputs[0].op != "Constant" and t.inputs[0].inputs:
        t = t.inputs[0].inputs[0]
    if isinstance(t, gs.Constant):
        return int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize
    return int(fallback.nbytes)


def iter_graphs(graph: gs.Graph):
    """The graph, then every If/Loop/Scan body inside it, depth first."""
    yield graph
    for node in graph.nodes:
        for value in node.attrs.values():
            if isinstance(value, gs.Graph):
                yield from iter_graphs(value)


class RuntimeDependence:
    """Whether a tensor's value depends on anything but constants (a graph
    input, a subgraph's outer-scope variable, a random or control-flow op).
    Memoized over one pass, so the cost is linear in the graph."""

    def __init__(self) -> None:
        self._memo: dict[int, bool] = {}

    def __call__(self, tensor: gs.Tensor) -> bool:
        stack = [tensor]
        while stack:
            t = stack[-1]
            if id(t) in self._memo:
                stack.pop()
                continue
            if isinstance(t, gs.Constant):
                self._memo[id(t)] = False
                stack.pop()
                continue
            if not t.inputs:
                self._memo[id(t)] = bool(t.name)  # an empty name is an omitted optional input
                stack.pop()
                continue
            node = t.inputs[0]
            if node.op == "Constant":
                self._memo[id(t)] = False
                stack.pop()
                continue
            if not node.inputs or any(isinstance(v, gs.Graph) for v in node.attrs.values()):
                self._memo[id(t)] = True  # RandomNormal-like sources and If/Loop/Scan outputs
                stack.pop()
                continue
            pending = [i for i in node.inputs if id(i) not in self._memo]
            if pending:
                stack.extend(pending)
                continue
            self._memo[id(t)] = any(self._memo[id(i)] for i in node.inputs)
            stack.pop()
        return self._memo[id(tensor)]


class FindWeightsPass(Pass):
    name = "find_weights"
    contract = (
        "Matches MatMul(A, W) with constant 2-D W, and Gemm(A, B, C) with constant B (transB, alpha and a constant "
        "C broadcastable to [N] folded in; other C kept as an Add). Adds one WeightSite per match to "
        "ctx.weight_sites, in topological order; records every other MatMul/Gemm reading a constant as skipped "
        "with the reason (a product of two run-time values, like attention scores, is not a weight layer). "
        "Does not change the graph."
    )

    def run(self, ctx: PassContext) -> PassResult:
        ctx.weight_sites.clear()
        runtime = RuntimeDependence()
        for graph in iter_graphs(ctx.graph):
            graph.toposort(recurse_subgraphs=False)
            for node in graph.nodes:
                if node.op not in ("MatMul", "Gemm") or node.domain not in ("", "ai.onnx", None):
                    continue
                try:
                    site = self._site(node, graph, in_subgraph=graph is not ctx.graph)
                except NotConstant as why:
                    if len(node.inputs) >= 2 and runtime(node.inputs[0]) and runtime(node.inputs[1]):
                        continue  # activation x activation (attention scores): not a weight layer
                    ctx.record(node=node.name, op_type=node.op, action="skipped", reason=str(why), pass_name=self.name)
                    continue
                ctx.weight_sites.append(site)
        main_sites = [s for s in ctx.weight_sites if not s.in_subgraph]
        if main_sites:
            main_sites[0].position = main_sites[0].position | {"first"}
            main_sites[-1].position = main_sites[-1].position | {"last"}
        return PassResult(modified=False, summary=f"{len(ctx.weight_sites)} convertible layer(s)")

    def _site(self, node: gs.Node, graph: gs.Graph, in_subgraph: bool) -> WeightSite:
        if len(node.inputs) < 2 or len(node.outputs) != 1:
            raise NotConstant(f"{node.op} node '{node.name}' has {len(node.inputs)} inputs / {len(node.outputs)} outputs")
        activation, weight_tensor = node.inputs[0], node.inputs[1]
        try:
            weight, key = resolve_constant(weight_tensor)
        except NotConstant as why:
            if _is_constant(activation):
                raise NotConstant(f"{why}; the constant is the left operand (W @ x), and only x @ W maps to the "
                                  "low-bit ops") from None
            raise
        if isinstance(activation, gs.Constant):
            raise NotConstant("both operands are constants (constant folding, not weight packing, applies)")
        if weight.dtype.type not in _FLOAT_DTYPES:
            raise NotConstant(f"weight '{weight_tensor.name}' has dtype {weight.dtype}; only float weights are quantized")
        if activation.dtype is not None and np.dtype(activation.dtype) != np.float32:
            raise NotConstant(f"activation '{activation.name}' is {np.dtype(activation.dtype)}; the low-bit ops take float32")
        if node.op == "MatMul":
            if weight.ndim != 2:
                raise NotConstant(f"weight '{weight_tensor.name}' has rank {weight.ndim}; only 2-D [K, N] weights pack")
            if activation.shape is not None and len(activation.shape) < 2:
                raise NotConstant(f"activation '{activation.name}' is 1-D; the op needs [..., K]")
            site = WeightSite(node=node, graph=graph, activation=activation, output=node.outputs[0],
                              load_weight=lambda: resolve_constant(weight_tensor)[0].astype(np.float32, copy=False),
                              shape=tuple(weight.shape), weight_key=key,
                              weight_name=weight_tensor.name, source_bytes=_tensor_nbytes(weight_tensor, weight),
                              in_subgraph=in_subgraph)
            _absorb_bias_add(site, graph)
            return site
        return self._gemm_site(node, graph, activation, weight_tensor, weight, key, in_subgraph)

    def _gemm_site(self, node, graph, activation, weight_tensor, weight, key, in_subgraph) -> WeightSite:
        alpha = float(node.attrs.get("alpha", 1.0))
        beta = float(node.attrs.get("beta", 1.0))
        if weight.ndim != 2:
            raise NotConstant(f"Gemm weight '{weight_tensor.name}' has rank {weight.ndim}")
        trans_b = bool(node.attrs.get("transB", 0))
        if trans_b:
            key = f"{key}|transpose:[1, 0]"
        if alpha != 1.0:
            key = f"{key}|scale:{alpha!r}"

        def load_weight() -> np.ndarray:
            values = resolve_constant(weight_tensor)[0]
            # Kept as a view: a [N, K] weight read through transB packs as W^T rows without a copy.
            values = (values.T if trans_b else values).astype(np.float32, copy=False)
            return values * np.float32(alpha) if alpha != 1.0 else values

        shape = (weight.shape[1], weight.shape[0]) if trans_b else tuple(weight.shape)
        n = shape[1]
        bias = None
        extra_add = None
        extra_add_scale = 1.0
        if len(node.inputs) > 2 and node.inputs[2].name and beta != 0.0:
            c_tensor = node.inputs[2]
            try:
                c, _ = resolve_constant(c_tensor)
            except NotConstant:
                c = None
            if c is not None and (c.size == 1 or (c.ndim in (1, 2) and c.size == n and c.shape[-1] == n)):
                bias = np.broadcast_to(c.astype(np.float32).reshape(-1), (n,)) * np.float32(beta)
                bias = np.ascontiguousarray(bias, dtype=np.float32)
            elif c is not None:
                extra_add = gs.Constant(f"{node.name}_C_scaled", np.ascontiguousarray(c.astype(np.float32) * np.float32(beta)))
            else:
                extra_add, extra_add_scale = c_tensor, beta
        return WeightSite(node=node, graph=graph, activation=activation, output=node.outputs[0],
                          load_weight=load_weight, shape=shape, weight_key=key, weight_name=weight_tensor.name,
                          source_bytes=_tensor_nbytes(weight_tensor, weight), bias=bias, extra_add=extra_add,
                          extra_add_scale=extra_add_scale,
                          transpose_activation=bool(node.attrs.get("transA", 0)), in_subgraph=in_subgraph)



def _absorb_bias_add(site: WeightSite, graph: gs.Graph) -> None:
    """MatMul followed by Add of a constant [N] vector (how exporters write
    Linear with bias): the Add becomes the new op's bias. Only when the
    MatMul's output feeds that Add alone."""
    product = site.output
    if product in graph.outputs or len(product.outputs) != 1:
        return
    add = product.outputs[0]
    if add.op != "Add" or len(add.inputs) != 2 or len(add.outputs) != 1:
        return
    other = add.inputs[1] if add.inputs[0] is product else add.inputs[0]
    try:
        bias, _ = resolve_constant(other)
    except NotConstant:
        return
    if bias.dtype.kind != "f" or bias.ndim < 1 or bias.size != site.n or bias.shape[-1] != site.n:
        return
    if add.outputs[0].shape is not None and product.shape is not None and \
            len(add.outputs[0].shape) != len(product.shape):
        return  # the bias would add leading dimensions
    site.bias = np.ascontiguousarray(bias.reshape(-1), dtype=np.float32)
    site.fused_add = add
    site.output = add.outputs[0]
