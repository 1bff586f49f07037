"""The contract every conversion target implements.

A target is what the converted model runs on: `onnxbit` (our custom ops),
`ort` (stock onnxruntime contrib ops) or `onnx` (standard ops only). It says
which layer settings it can express (check), which opsets its ops need
(required_opsets, known before any pass runs), how a quantized weight
becomes initializers (pack) and how the layer's node is rewritten to use
them (emit). Each op it emits has a builder module here (ternary_matmul,
matmulnbits, dequantize) with the packing, the emitting and recognize(),
which reads such a layer back for `onnxbit inspect`.

Adding a target is one new module plus one line in onnxbit/targets/__init__.py.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxbit.errors import ConfigError
from onnxbit.graph.gs_adapter import constant_nbytes


@dataclass
class QuantizedWeight:
    """Codes and scales of one weight before packing (codes None on the fused
    fast path, where packed_rows already hold W^T in `fmt`)."""

    kind: str  # "ternary" | "binary" | "int"
    k: int
    n: int
    codes: np.ndarray | None  # int8 (signed) or uint8 (with zero points) [K, N]
    scales: np.ndarray
    zero_points: np.ndarray | None
    granularity: str
    group_size: int
    packed_rows: np.ndarray | None = None
    conv: Any = None  # the site's ConvSpec for Conv/ConvTranspose (codes are then its [K, N] view)
    proven: bool = False  # codes of a QAT fold (its act_quant is then part of what the graph computed)


@dataclass
class PackedWeight:
    """What a target builds for one weight: the new constant inputs and op
    attributes, plus the storage facts the report needs. Built once per
    distinct weight (and settings) and reused by every node sharing it."""

    precision: str  # "ternary" | "binary" | "int2" | "int4" | "int8"
    storage: str  # "TernaryMatMul/2bit", "MatMulNBits/2bit", "DequantizeLinear/INT4", ...
    constants: list[gs.Constant]  # the op's inputs after the activation, in order
    attrs: dict
    k: int
    n: int
    min_default_opset: int = 0  # the ai.onnx opset the emitted nodes need
    act_quant: int = 0  # DequantizeLinear path: emit the per-token int8 activation chain
    weight_error: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # DequantizeLinear path: per-column scales applied by a Mul after the
    # MatMul instead of inside DequantizeLinear (dequantize.pack_dequantize says why)
    column_scale: gs.Constant | None = None

    @property
    def bytes_after(self) -> int:
        extra = [self.column_scale] if self.column_scale is not None else []
        return sum(constant_nbytes(c) for c in [*self.constants, *extra])

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.bytes_after / (self.k * self.n)


@dataclass
class LayerInfo:
    """One weight layer of a model as `onnxbit inspect` shows it."""

    node: str
    op_type: str
    precision: str
    storage: str
    k: int | None
    n: int | None
    bytes: int
    bits_per_weight: float | None
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""


class ModelIndex(Protocol):
    """What recognize() may ask about the model being inspected."""

    def constant_bytes(self, names) -> int:
        """Bytes of the constants among `names` (validated sizes)."""

    def constant_tensor(self, name: str) -> onnx.TensorProto | None:
        """The initializer or Constant value named `name`, or None."""

    def producer(self, name: str) -> onnx.NodeProto | None:
        """The node writing `name`, or None."""

    def consumers(self, name: str) -> list[onnx.NodeProto]:
        """The nodes reading `name`."""


def bits_per_weight(size: int, count: int | None) -> float | None:
    return 8 * size / count if count else None


def int_attribute(attrs: dict[str, Any], name: str, default: int | None = None) -> int | None:
    value = attrs.get(name, default)
    return int(value) if isinstance(value, int) else None


class Target(abc.ABC):
    """One deployment target (see the module docstring)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for --help and the README

    @abc.abstractmethod
    def check(self, settings, where: str) -> None:
        """Raise ConfigError naming `where` and the alternatives when this
        target cannot store or compute `settings` (a LayerSettings)."""

    @abc.abstractmethod
    def required_opsets(self, settings) -> dict[str, int]:
        """Domain -> version the ops emitted for `settings` need ("" is ai.onnx)."""

    def fused_format(self, settings) -> str | None:
        """A ternary storage format this target packs straight from float
        weights (absmean quantize + pack in one C pass), or None."""
        return None

    @abc.abstractmethod
    def pack(self, ctx, base: str, weight: QuantizedWeight, settings) -> PackedWeight:
        """The initializers (and attributes) storing one quantized weight."""

    @abc.abstractmethod
    def emit(self, ctx, site, packed: PackedWeight) -> gs.Node:
        """Rewrite site's node to compute with `packed`; returns the new node."""

    def pack_float(self, ctx, base: str, site) -> PackedWeight | None:
        """A float layer's weight stored losslessly in fewer bytes (emitted with
        emit_float), or None to leave the layer as it is. Any runtime: bfloat16
        values as bfloat16 + Cast (bf16_cast), which onnxruntime folds at load."""
        from onnxbit.targets.bf16_cast import pack_bf16_cast

        return pack_bf16_cast(ctx, base, site)

    def emit_float(self, ctx, site, packed: PackedWeight) -> gs.Node:
        from onnxbit.targets.bf16_cast import emit_bf16_cast

        return emit_bf16_cast(ctx, site, packed)

    def notes(self, settings, packed: PackedWeight) -> list[str]:
        """Model-level remarks a layer converted this way calls for (each
        reported once)."""
        return []

    def required_conv_opsets(self, settings, op_type: str, spatial_rank: int) -> dict[str, int]:
        """Domain -> version the ops emitted for a Conv/ConvTranspose layer need."""
        if settings.precision == "fp32":
            return {}
        from onnxbit.targets.dequantize_conv import cast_opset

        return {"": cast_opset(2 if settings.precision in ("ternary", "binary") else settings.bits)}

    def pack_conv(self, ctx, base: str, weight: QuantizedWeight, settings) -> PackedWeight:
        """A Conv/ConvTranspose weight as integer codes turned into the float weight in the graph (Cast + Mul,
        dequantize_conv.py) + the node's own op (ternary and binary as INT2); targets with a conv op of their
        own override this."""
        from onnxbit.targets.dequantize_conv import pack_integer_conv

        if settings.activations == "static":
            raise ConfigError(f"weight '{base}': activations 'static' for Conv layers runs in TernaryConv "
                              "(act_quant=2: ternary/binary weights, target onnxbit, 1-D and 2-D Conv); this "
                              "layer is stored as integer weights + Conv: give it activations 'float'")

        if weight.codes is None:  # the fused absmean path packed the rows already
            from onnxbit import codecs

            weight.codes = codecs.unpack_ternary(weight.packed_rows, weight.k, self.fused_format(settings)).T
        if weight.kind in ("ternary", "binary"):
            return pack_integer_conv(ctx, base, precision=settings.precision, conv=weight.conv, codes=weight.codes,
                                     bits=2, signed=True, scales=weight.scales, zero_points=None,
                                     granularity=weight.granularity, group_size=weight.group_size)
        return pack_integer_conv(ctx, base, precision=settings.precision, conv=weight.conv, codes=weight.codes,
                                 bits=settings.bits, signed=weight.zero_points is None, scales=weight.scales,
                                 zero_points=weight.zero_points, granularity=weight.granularity,
                                 group_size=weight.group_size)

    def emit_conv(self, ctx, site, packed: PackedWeight) -> gs.Node:
        from onnxbit.targets.dequantize_conv import emit_integer_conv

        return emit_integer_conv(ctx, site, packed)

    def conv_notes(self, settings, packed: PackedWeight) -> list[str]:
        from onnxbit.targets.dequantize_conv import CAST_STORAGE

        return [CONV_FLOAT_ACTIVATIONS_NOTE] if packed.storage.startswith(CAST_STORAGE + "/") and settings.act_quant \
            else []


CONV_FLOAT_ACTIVATIONS_NOTE = (
    "Conv layers stored as integer weights + Conv (Cast + Mul) compute with float32 "
    "activations: act_quant=1 (int8 activations per im2col row) exists only in com.onnxbit::TernaryConv "
    "(target 'onnxbit')")
