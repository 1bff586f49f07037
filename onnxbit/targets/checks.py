"""Setting checks more than one target shares (the ConfigError messages name
the layer or rule and what to use instead)."""

from __future__ import annotations

from onnxbit.errors import ConfigError
from onnxbit.formats import DEFAULT as DEFAULT_FORMAT


def check_act_quant(settings, where: str) -> None:
    if settings.act_quant and settings.precision not in ("ternary", "binary"):
        raise ConfigError(f"{where}: act_quant=1 (BitNet per-token int8 activations) applies to ternary/binary "
                          f"layers, not {settings.precision!r}")


def check_static_activations(settings, target: str, where: str) -> None:
    """activations "static": TernaryMatMul act_quant=2 for ternary/binary layers
    on target onnxbit; QuantizeLinear + MatMulInteger for int8 layers (one scale
    per tensor or channel) on every target."""
    from onnxbit.targets import matmul_integer

    if settings.activations != "static" or settings.precision == "fp32" or matmul_integer.supports(settings):
        return
    if settings.precision == "int8":
        raise ConfigError(f"{where}: activations 'static' with int8 weights runs as QuantizeLinear + MatMulInteger, "
                          f"which needs one weight scale per tensor or channel, not granularity "
                          f"{settings.granularity!r}")
    if target != "onnxbit":
        raise ConfigError(f"{where}: activations 'static' (a calibrated int8 scale per layer) runs ternary/binary "
                          f"layers in the onnxbit TernaryMatMul/TernaryConv ops (act_quant=2); target {target!r} has no static "
                          "form for them yet: use target 'onnxbit', int8 weights (MatMulInteger), or activations "
                          "'int8' (dynamic scales) or 'float'")
    if settings.precision not in ("ternary", "binary"):
        raise ConfigError(f"{where}: activations 'static' applies to ternary/binary layers (TernaryMatMul "
                          f"act_quant=2) and int8 ones (MatMulInteger), not {settings.precision!r}; use "
                          "activations 'int8' or 'float' there")


def check_two_bit_storage(settings, target: str, where: str) -> None:
    """Stock-op targets store ternary/binary codes as plain 2-bit values."""
    if settings.precision in ("ternary", "binary") and settings.format not in (None, DEFAULT_FORMAT):
        raise ConfigError(f"{where}: format {settings.format!r} exists only in the onnxbit TernaryMatMul op; "
                          f"target {target!r} stores ternary weights as 2-bit codes")


def check_block_size(group_size: int, where: str) -> None:
    if group_size < 16 or group_size & (group_size - 1):
        raise ConfigError(f"{where}: onnxruntime's MatMulNBits needs a block (group) size that is a power of two "
                          f">= 16, got {group_size}")


def is_ternary(settings) -> bool:
    return settings.precision in ("ternary", "binary")
