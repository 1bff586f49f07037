"""The activations a TernaryConv node can apply to its output (its `activation`
attribute), in numpy float32 with the C library's arithmetic (tconv.h
obx_activate): each product and sum rounded on its own, a NaN staying NaN.

The converter fuses an activation node that reads only a TernaryConv's output
into it (onnxbit/passes/fuse_activation.py), as onnxruntime fuses one into
its own Conv: left as a node of its own, HardSwish alone took 14 of 34 ms a
batch on a PP-LCNet orientation classifier converted to ternary."""

from __future__ import annotations

import numpy as np

# name -> the float attributes it takes, with ONNX's defaults
PARAMETERS: dict[str, dict[str, float]] = {
    "Relu": {},
    "LeakyRelu": {"activation_alpha": 0.01},
    "Clip": {"activation_min": float("-inf"), "activation_max": float("inf")},
    "HardSigmoid": {"activation_alpha": 0.2, "activation_beta": 0.5},
    "HardSwish": {},
    "HardSwishRelu6": {},  # (y * Clip(y + 3, 0, 6)) / 6: paddle2onnx's HardSwish, in its order
    "Sigmoid": {},  # 1 / (1 + _exp(-y))
    "Silu": {},  # y * Sigmoid(y)
}
ALL_PARAMETERS = ("activation_alpha", "activation_beta", "activation_min", "activation_max")


def check(name: str | None, params: dict[str, float]) -> None:
    """Raise ValueError for what the C op refuses: an unknown name, a parameter the activation does not
    take (or one without an activation), Clip with min > max."""
    if name is None:
        extra = sorted(k for k, v in params.items() if v is not None)
        if extra:
            raise ValueError(f"attribute {extra[0]} is set without an activation")
        return
    if name not in PARAMETERS:
        raise ValueError(f"attribute activation='{name}' must be one of: {', '.join(PARAMETERS)}")
    for key, value in params.items():
        if value is not None and key not in PARAMETERS[name]:
            raise ValueError(f"attribute {key} does not apply to activation {name}")
    if name == "Clip":
        lo, hi = _values(name, params)
        if not lo <= hi:
            raise ValueError(f"activation Clip needs activation_min <= activation_max, got {lo:g} and {hi:g}")


def _values(name: str, params: dict[str, float]) -> list[np.float32]:
    taken = PARAMETERS[name]
    return [np.float32(params.get(k) if params.get(k) is not None else default) for k, default in taken.items()]


def _clip(v: np.ndarray, lo, hi) -> np.ndarray:
    return np.where(v < lo, lo, np.where(v > hi, hi, v)).astype(np.float32)


_F = np.float32
_EXP_MAGIC = _F(float.fromhex("0x1.8p+23"))
_LOG2E, _LN2_HI, _LN2_LO = (_F(float.fromhex(h)) for h in ("0x1.715476p+0", "0x1.63p-1", "-0x1.bd0106p-13"))
# exp's Taylor coefficients 1/720 .. 1/6 as float32 quotients, then 1/2, 1, 1
_EXP_TAYLOR = (*(_F(1) / _F(d) for d in (720, 120, 24, 6)), _F(0.5), _F(1), _F(1))


def _exp(x: np.ndarray) -> np.ndarray:
    """exp as the C library computes it for Sigmoid and Silu (tconv_rows_body.h activation_exp_fn), step for
    step in float32: clamp to [-87, 88], n = rint(x log2 e) by adding 1.5 * 2^23, r = (x - n C1) - n C2, a
    degree-6 Taylor polynomial in Horner form, times 2^n built in the exponent bits."""
    x = _clip(np.asarray(x, _F), _F(-87), _F(88))
    shifted = (x * _LOG2E).astype(_F) + _EXP_MAGIC
    n = (shifted - _EXP_MAGIC).astype(_F)
    r = ((x - (n * _LN2_HI).astype(_F)).astype(_F) - (n * _LN2_LO).astype(_F)).astype(_F)
    p = np.full_like(r, _EXP_TAYLOR[0])
    for c in _EXP_TAYLOR[1:]:
        p = ((p * r).astype(_F) + c).astype(_F)
    scale_bits = ((shifted.view(np.uint32) - _EXP_MAGIC.view(np.uint32) + np.uint32(127)) << np.uint32(23))
    return (p * scale_bits.astype(np.uint32).view(_F)).astype(_F)


def apply(y: np.ndarray, name: str | None, params: dict[str, float] | None = None) -> np.ndarray:
    """y (float32) through the activation, as the C op computes it."""
    if name is None:
        return y
    params = params or {}
    check(name, params)
    y = np.asarray(y, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        if name == "Relu":
            return np.where(y < 0, np.float32(0), y).astype(np.float32)
        if name == "LeakyRelu":
            (alpha,) = _values(name, params)
            return np.where(y < 0, (alpha * y).astype(np.float32), y).astype(np.float32)
        if name == "Clip":
            lo, hi = _values(name, params)
            return _clip(y, lo, hi)
        if name == "HardSigmoid":
            alpha, beta = _values(name, params)
            return _clip((alpha * y).astype(np.float32) + beta, np.float32(0), np.float32(1))
        if name in ("Sigmoid", "Silu"):
            sigmoid = (_F(1) / (_F(1) + _exp(-y)).astype(_F)).astype(_F)
            return sigmoid if name == "Sigmoid" else (y * sigmoid).astype(_F)
        if name == "HardSwishRelu6":
            relu6 = _clip((y + np.float32(3)).astype(np.float32), np.float32(0), np.float32(6))
            return ((y * relu6).astype(np.float32) / np.float32(6)).astype(np.float32)
        # HardSwish: ONNX's alpha = 1/6, beta = 0.5
        gate = _clip((np.float32(1.0 / 6.0) * y).astype(np.float32) + np.float32(0.5), np.float32(0), np.float32(1))
        return (y * gate).astype(np.float32)
