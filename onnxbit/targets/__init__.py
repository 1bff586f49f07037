"""Conversion targets: one module each, one line here (see targets/base.py)."""

from __future__ import annotations

from onnxbit.errors import ConfigError
from onnxbit.targets.base import LayerInfo, PackedWeight, QuantizedWeight, Target
from onnxbit.targets.onnx import OnnxTarget
from onnxbit.targets.onnxbit import OnnxbitTarget
from onnxbit.targets.ort import OrtTarget

TARGETS: dict[str, Target] = {t.name: t for t in (OnnxbitTarget(), OrtTarget(), OnnxTarget())}
NAMES: tuple[str, ...] = tuple(TARGETS)


def get_target(target: "str | Target") -> Target:
    """The target object for a name (or the object itself)."""
    if isinstance(target, Target):
        return target
    found = TARGETS.get(target) if isinstance(target, str) else None
    if found is None:
        raise ConfigError(f"unknown target {target!r}; choose one of {', '.join(NAMES)}")
    return found


def recognizers():
    """Functions reading one converted layer back, one per emitted op (for inspect)."""
    from onnxbit.targets import (bf16_cast, bf16_matmul, dequantize, dequantize_conv, matmul_integer, matmulnbits,
                                 ternary_conv, ternary_matmul)

    return (ternary_matmul.recognize, ternary_conv.recognize, bf16_matmul.recognize, bf16_cast.recognize,
            matmulnbits.recognize, matmul_integer.recognize, dequantize.recognize, dequantize_conv.recognize)


__all__ = ["NAMES", "TARGETS", "LayerInfo", "PackedWeight", "QuantizedWeight", "Target", "get_target",
           "recognizers"]
