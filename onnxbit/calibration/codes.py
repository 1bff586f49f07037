"""The codes file: quantized weights calibration chose (GPTQ error
compensation needs the activations, which conversion does not have).

`onnxbit calibrate -o calib.json` writes `calib.codes.npz` next to it when
any layer's codes were chosen with error compensation; the config's rule for
such a layer names the file (`"codes": "calib.codes.npz"`, relative to the
calibration file) and `onnxbit quantize --calibration calib.json` stores
those codes instead of rounding the weight itself. Each layer is keyed by
its weight's name and carries the SHA-256 of the float weight it was
computed from, so codes are never applied to a different model's weights.
"""

from __future__ import annotations

import hashlib
import io
from functools import lru_cache
from pathlib import Path

import numpy as np

from onnxbit.errors import ConfigError
from onnxbit.quant.result import QuantResult

FIELDS = ("codes", "scales", "zero_points", "sha256", "bits")


def weight_digest(weight: np.ndarray) -> str:
    """SHA-256 of a float32 [K, N] weight's bytes (row-major)."""
    return hashlib.sha256(np.ascontiguousarray(weight, dtype=np.float32).tobytes()).hexdigest()


def codes_bytes(layers: dict[str, tuple[QuantResult, str]]) -> bytes:
    """An .npz of weight name -> (its quantized form, the float weight's digest)."""
    arrays: dict[str, np.ndarray] = {}
    for name, (result, digest) in layers.items():
        arrays[f"{name}|codes"] = result.codes
        arrays[f"{name}|scales"] = np.asarray(result.scales, np.float32)
        if result.zero_points is not None:
            arrays[f"{name}|zero_points"] = result.zero_points
        arrays[f"{name}|sha256"] = np.array(digest)
        arrays[f"{name}|bits"] = np.array(result.bits)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int):
    """The open .npz: members are read when asked for, one layer at a time."""
    try:
        return np.load(path)
    except Exception as exc:  # numpy raises several kinds for a bad file
        raise ConfigError(f"codes file {path} is not a readable .npz file: {exc}") from None


def load_codes(path: str | Path, weight_name: str, weight: np.ndarray, bits: int, symmetric: bool,
               granularity: str, group_size: int | None):
    """(codes, scales, zero points) calibration stored for `weight_name`,
    checked against the weight and the layer's settings."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"codes file {path} (named by the calibration) does not exist")
    data = _load(str(path), path.stat().st_mtime_ns)
    if f"{weight_name}|codes" not in data.files:
        raise ConfigError(f"codes file {path} holds no codes for weight {weight_name!r}")
    if str(data[f"{weight_name}|sha256"]) != weight_digest(weight):
        raise ConfigError(f"codes file {path}: weight {weight_name!r} differs from the one calibration quantized; "
                          "calibrate this model again")
    codes = data[f"{weight_name}|codes"]
    scales = data[f"{weight_name}|scales"]
    zeros = data[f"{weight_name}|zero_points"] if f"{weight_name}|zero_points" in data.files else None
    k, n = weight.shape
    groups = -(-k // group_size) if granularity == "group" else 1
    expected_scales = (groups, n) if granularity == "group" else (n,)
    if (int(data[f"{weight_name}|bits"]) != bits or codes.shape != (k, n) or scales.shape != expected_scales
            or (zeros is None) != symmetric or (zeros is not None and zeros.shape != expected_scales)):
        raise ConfigError(f"codes file {path}: the codes for {weight_name!r} do not fit the layer's settings "
                          f"({bits}-bit, {granularity}, {'symmetric' if symmetric else 'asymmetric'}, "
                          f"weight {k}x{n})")
    low, high = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    if codes.min() < low or codes.max() > high or not np.isfinite(scales).all():
        raise ConfigError(f"codes file {path}: the codes or scales of {weight_name!r} are out of range")
    return codes, scales, zeros
