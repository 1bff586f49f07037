"""MatMul(x, W) with a constant 2-D W: the weight is W itself ([K, N]). A
constant [N] bias added right after (how exporters write Linear with bias)
becomes the new op's bias."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxbit.graph.gs_adapter import proof_of
from onnxbit.graph.queries import NotConstant, resolve_constant
from onnxbit.layers.base import LayerKind, WeightSite, constant_weight, source_nbytes


class MatMulLayer(LayerKind):
    op_types = ("MatMul",)

    def match(self, node: gs.Node, graph: gs.Graph, in_subgraph: bool) -> WeightSite:
        activation, weight_tensor, weight, key = constant_weight(node)
        if weight.ndim != 2:
            raise NotConstant(f"weight '{weight_tensor.name}' has rank {weight.ndim}; only 2-D [K, N] weights pack")
        if activation.shape is not None and len(activation.shape) < 2:
            raise NotConstant(f"activation '{activation.name}' is 1-D; the op needs [..., K]")
        site = WeightSite(kind=self, node=node, graph=graph, activation=activation, output=node.outputs[0],
                          load_weight=lambda: resolve_constant(weight_tensor)[0].astype(np.float32, copy=False),
                          shape=tuple(weight.shape), weight_key=key, weight_name=weight_tensor.name,
                          source_bytes=source_nbytes(weight_tensor, weight), proof=proof_of(weight_tensor),
                          in_subgraph=in_subgraph)
        _absorb_bias_add(site, graph)
        return site


def _absorb_bias_add(site: WeightSite, graph: gs.Graph) -> None:
    """MatMul followed by Add of a constant [N] vector: the Add becomes the
    new op's bias. Only when the MatMul's output feeds that Add alone."""
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
