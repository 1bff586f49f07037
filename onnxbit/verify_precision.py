"""The default agreement tolerance of `onnxbit verify`, from the precision the
converted model computes with.

The relative error is max |converted - original| / max |original| over an
output (worst over outputs and input batches). Its default bound follows the
lowest precision found among the converted model's ops (subgraphs included):

| class | found | default rtol |
| --- | --- | --- |
| ``exact`` | no low-bit op; or ternary / 2-bit weights while the original is a QAT export (it has fake-quant ``Round`` nodes): the weights were folded losslessly | 1e-4 |
| ``int8`` | ``MatMulNBits`` with bits 5..8, or with ``accuracy_level=4`` (int8 activations, what ``--target ort`` emits for BitNet's per-token activation quantization); ``DequantizeLinear`` or ``Cast`` (integer Conv weights) on an INT8/UINT8 initializer; ``MatMulInteger`` / ``QLinearMatMul`` / ``DynamicQuantizeMatMul`` and friends | 5e-2 |
| ``int4`` | ``MatMulNBits`` with bits 3..4 (4 when the attribute is absent); ``DequantizeLinear`` or ``Cast`` on an INT4/UINT4 initializer | 0.2 |
| ``2bit`` | ternary / binary / 2-bit weights quantized after training (``com.onnxbit::TernaryMatMul`` / ``TernaryConv``, ``MatMulNBits`` bits <= 2, ``DequantizeLinear`` or ``Cast`` on INT2/UINT2) when the original has no fake-quant nodes | 1.0 |

Measured on the committed fixtures (`models/fixtures`): BitNet folds 4e-7 to
7e-7 (``onnxbit`` and ``onnx`` targets), 0.019 on ``ort`` (int8 activations);
int8 heads 0.004 to 0.02; int4 0.035 to 0.098; ternary post-training
quantization of the float digits MLP 0.62. The 2-bit bound is a sanity check
(the error is no larger than the signal), not a quality claim.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import onnx

DEFAULT_RTOL = {"exact": 1e-4, "int8": 5e-2, "int4": 0.2, "2bit": 1.0}
_ORDER = ["exact", "int8", "int4", "2bit"]
LABELS = {"exact": "float or an exact fold", "int8": "int8", "int4": "int4", "2bit": "2-bit/ternary PTQ"}
_INT8_OPS = {"MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "DynamicQuantizeMatMul",
             "MatMulIntegerToFloat", "QGemm", "DynamicQuantizeLSTM"}
_DQ_BITS = {onnx.TensorProto.INT8: 8, onnx.TensorProto.UINT8: 8}
for _name, _bits in (("INT4", 4), ("UINT4", 4), ("INT2", 2), ("UINT2", 2)):
    if hasattr(onnx.TensorProto, _name):
        _DQ_BITS[getattr(onnx.TensorProto, _name)] = _bits
_ACCURACY_INT8 = 4


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    precision: str      # one of DEFAULT_RTOL's keys
    found: str          # what decided it, e.g. "MatMulNBits bits=4 x1, TernaryMatMul (QAT fold) x14"

    def describe(self) -> str:
        """e.g. 'default for int4: MatMulNBits bits=4 x1, ...'"""
        return f"default for {LABELS[self.precision]}: {self.found}"


def default_tolerance(converted: onnx.ModelProto, original: onnx.ModelProto | None = None) -> Tolerance:
    """The tolerance class of the converted model (see the module docstring).
    Both models may be loaded without external data."""
    qat = original is not None and any(node.op_type == "Round" for node, _ in _nodes(original.graph))
    found: Counter[tuple[str, str]] = Counter()
    nodes = list(_nodes(converted.graph))
    # A zero point stored as codes and Cast too is subtracted (Sub input 1): one layer, one count.
    subtrahends = {node.input[1] for node, _ in nodes if node.op_type == "Sub" and len(node.input) > 1}
    for node, constants in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.domain == "com.onnxbit" and node.op_type in ("TernaryMatMul", "TernaryConv"):
            label = node.op_type + (f" act_quant={attrs['act_quant']}" if attrs.get("act_quant", 0) else "")
            found[("exact" if qat else "2bit", label + (" (QAT fold)" if qat else ""))] += 1
        elif node.domain == "com.microsoft" and node.op_type in ("MatMulNBits", "GatherBlockQuantized"):
            bits = int(attrs.get("bits", 4))
            precision = _by_bits(bits, qat)
            label = f"{node.op_type} bits={bits}" + (" (QAT fold)" if bits <= 2 and qat else "")
            if attrs.get("accuracy_level", 0) == _ACCURACY_INT8 and _ORDER.index(precision) < _ORDER.index("int8"):
                precision, label = "int8", label + " with int8 activations"
            found[(precision, label)] += 1
        elif node.op_type in ("DequantizeLinear", "Cast") and node.domain in ("", "ai.onnx") and node.input \
                and not (node.op_type == "Cast" and node.output and node.output[0] in subtrahends):
            # Cast of integer codes: how every target stores integer Conv weights (Cast * scale)
            data_type = constants.get(node.input[0])
            bits = _DQ_BITS.get(data_type)
            if bits is not None:
                kind = onnx.TensorProto.DataType.Name(data_type)
                found[(_by_bits(bits, qat), f"{node.op_type} {kind}" + (" (QAT fold)" if bits <= 2 and qat
                                                                          else ""))] += 1
        elif node.op_type in _INT8_OPS:
            found[("int8", node.op_type)] += 1
    if not found:
        return Tolerance(DEFAULT_RTOL["exact"], "exact", "no low-bit ops")
    lowest = max((precision for precision, _ in found), key=_ORDER.index)
    ranked = sorted(found.items(), key=lambda item: (-_ORDER.index(item[0][0]), item[0][1]))
    text = ", ".join(f"{label} x{count}" for (_, label), count in ranked)
    return Tolerance(DEFAULT_RTOL[lowest], lowest, text)


def passing_rtol(measured: float) -> float:
    """The measured relative error rounded up to two significant digits: an
    --rtol that passes."""
    if not math.isfinite(measured):
        return measured
    if measured <= 0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(measured)) - 1)
    digits = math.ceil(measured / step)
    value = float(f"{digits * step:.2g}")
    while value < measured:  # float rounding of digits * step
        digits += 1
        value = float(f"{digits * step:.2g}")
    return value


def _by_bits(bits: int, qat: bool) -> str:
    if bits <= 2:
        return "exact" if qat else "2bit"
    return "int4" if bits <= 4 else "int8"


def _nodes(graph: onnx.GraphProto,
           outer: dict[str, int] | None = None) -> Iterator[tuple[onnx.NodeProto, dict[str, int]]]:
    """Every node (subgraphs included) with the element types of the constants it can see."""
    constants = dict(outer or {})
    constants.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    constants[node.output[0]] = attr.t.data_type
    for node in graph.node:
        yield node, constants
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g, constants)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _nodes(sub, constants)
