"""Gemm(A, B, C) with a constant B: the weight is alpha * B, transposed when
transB = 1 (PyTorch's Linear layout, [N, K]); transA = 1 transposes the
activation; beta * C becomes the bias when it broadcasts to [N], else an Add
kept after the new op."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxbit.graph.gs_adapter import proof_of
from onnxbit.graph.queries import NotConstant, resolve_constant
from onnxbit.layers.base import LayerKind, WeightSite, constant_weight, source_nbytes


class GemmLayer(LayerKind):
    op_types = ("Gemm",)

    def match(self, node: gs.Node, graph: gs.Graph, in_subgraph: bool) -> WeightSite:
        activation, weight_tensor, weight, key = constant_weight(node)
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
                extra_add = gs.Constant(f"{node.name}_C_scaled",
                                        np.ascontiguousarray(c.astype(np.float32) * np.float32(beta)))
            else:
                extra_add, extra_add_scale = c_tensor, beta
        return WeightSite(kind=self, node=node, graph=graph, activation=activation, output=node.outputs[0],
                          load_weight=load_weight, shape=shape, weight_key=key, weight_name=weight_tensor.name,
                          source_bytes=source_nbytes(weight_tensor, weight), proof=proof_of(weight_tensor),
                          bias=bias, extra_add=extra_add, extra_add_scale=extra_add_scale,
                          transpose_activation=bool(node.attrs.get("transA", 0)), in_subgraph=in_subgraph)
