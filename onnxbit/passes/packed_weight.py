"""What an emit module builds for one weight: the new constant inputs and op
attributes, plus the storage facts the report needs. Built once per distinct
weight (and settings) and reused by every node sharing it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxbit.model_size import tensor_nbytes


@dataclass
class PackedWeight:
    precision: str  # "ternary" | "binary" | "int2" | "int4" | "int8"
    storage: str  # "TernaryMatMul/2bit", "MatMulNBits/2", "DequantizeLinear/INT4", ...
    constants: list[gs.Constant]  # the op's inputs after the activation, in order
    attrs: dict
    k: int
    n: int
    min_default_opset: int = 0  # the ai.onnx opset the emitted nodes need
    act_quant: int = 0  # DequantizeLinear path: emit the per-token int8 activation chain
    weight_error: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def bytes_after(self) -> int:
        return sum(_constant_nbytes(c) for c in self.constants)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.bytes_after / (self.k * self.n)


def _constant_nbytes(c: gs.Constant) -> int:
    values = c._values
    if hasattr(values, "tensor"):  # LazyValues over a TensorProto
        return tensor_nbytes(values.tensor)
    return int(np.asarray(values).nbytes)
