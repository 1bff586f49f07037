"""Conv and ConvTranspose with a constant weight.

The logical [K, N] view has one column per output channel (N = M) holding
the K = C/group * prod(kernel) weights that channel's reduction reads, in
(c, kernel...) order: column m is row m of the flattened Conv weight
[M, C/group * prod(kernel)], which is exactly TernaryConv's packed B. A
ConvTranspose weight [C, M/group, *kernel] is regrouped to the same
[M, C/group * prod(kernel)] rows. Per-channel and per-group scales are then
per output channel and along each channel's reduction, as for MatMul.
A constant bias (input 2) becomes the new op's bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxbit.graph.gs_adapter import proof_of
from onnxbit.graph.queries import NotConstant, resolve_constant
from onnxbit.layers.base import LayerKind, WeightSite, constant_weight, source_nbytes


@dataclass(frozen=True)
class ConvSpec:
    """What a rewrite needs to rebuild a Conv/ConvTranspose around a new weight."""

    op: str  # "Conv" | "ConvTranspose"
    weight_shape: tuple[int, ...]  # as the node stores it
    group: int
    attrs: dict = field(default_factory=dict, hash=False, compare=False)  # the node's attributes

    @property
    def spatial_rank(self) -> int:
        return len(self.weight_shape) - 2

    @property
    def out_channels(self) -> int:
        return self.weight_shape[0] if self.op == "Conv" else self.weight_shape[1] * self.group

    @property
    def rows_shape(self) -> tuple[int, int]:
        """[M, K]: one row per output channel."""
        m = self.out_channels
        return m, int(np.prod(self.weight_shape)) // m

    def rows_of(self, weight: np.ndarray) -> np.ndarray:
        """The node's weight as [M, K] rows."""
        if self.op == "Conv":
            return weight.reshape(self.rows_shape)
        c, per_group = self.weight_shape[:2]
        kernel = self.weight_shape[2:]
        regrouped = weight.reshape(self.group, c // self.group, per_group, *kernel).swapaxes(1, 2)
        return regrouped.reshape(self.rows_shape)

    def layout_from_rows(self) -> list[tuple[str, object]]:
        """Steps turning [M, K] rows back into the node's weight layout:
        ("reshape", shape) and ("transpose", perm)."""
        if self.op == "Conv":
            return [("reshape", self.weight_shape)]
        c, per_group = self.weight_shape[:2]
        kernel = self.weight_shape[2:]
        grouped = (self.group, per_group, c // self.group, *kernel)
        perm = (0, 2, 1, *range(3, 3 + len(kernel)))
        return [("reshape", grouped), ("transpose", perm), ("reshape", self.weight_shape)]


class ConvLayer(LayerKind):
    op_types = ("Conv", "ConvTranspose")

    def match(self, node: gs.Node, graph: gs.Graph, in_subgraph: bool) -> WeightSite:
        activation, weight_tensor, weight, key = constant_weight(node)
        if weight.ndim < 3:
            raise NotConstant(f"{node.op} weight '{weight_tensor.name}' has rank {weight.ndim}")
        group = int(node.attrs.get("group", 1))
        spec = ConvSpec(node.op, tuple(int(d) for d in weight.shape), group, dict(node.attrs))
        if node.op == "ConvTranspose" and weight.shape[0] % group:
            raise NotConstant(f"ConvTranspose weight '{weight_tensor.name}' has {weight.shape[0]} input channels, "
                              f"not a multiple of group={group}")
        m, k = spec.rows_shape
        bias = None
        if len(node.inputs) > 2 and node.inputs[2].name:
            try:
                values, _ = resolve_constant(node.inputs[2])
            except NotConstant as why:
                raise NotConstant(f"{node.op} bias '{node.inputs[2].name}' is not a constant ({why})") from None
            bias = np.ascontiguousarray(values.reshape(-1), dtype=np.float32)
            if bias.size != m:
                raise NotConstant(f"{node.op} bias '{node.inputs[2].name}' has {bias.size} values for {m} channels")

        def load_weight() -> np.ndarray:
            values = resolve_constant(weight_tensor)[0].astype(np.float32, copy=False)
            return spec.rows_of(values).T  # [K, N]: a view for Conv

        return WeightSite(kind=self, node=node, graph=graph, activation=activation, output=node.outputs[0],
                          load_weight=load_weight, shape=(k, m), weight_key=f"{key}|{node.op}-rows:{group}",
                          weight_name=weight_tensor.name, source_bytes=source_nbytes(weight_tensor, weight),
                          proof=proof_of(weight_tensor), bias=bias, in_subgraph=in_subgraph, conv=spec)
