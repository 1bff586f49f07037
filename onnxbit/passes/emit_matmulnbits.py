"""Emit onnxruntime's com.microsoft::MatMulNBits for 2/4/8-bit weights, and for
ternary/binary weights on target "ort" (2-bit codes w + 1 with zero point 1).

Layout (onnxruntime contrib op spec): B uint8 [N, n_blocks, blob_size] holds
W^T in blocks of block_size along K, codes packed least significant bits
first; scales float32 [N * n_blocks]; zero_points uint8 [N, ceil(n_blocks *
bits / 8)] packed the same way (default 2^(bits-1) when absent). The weight is
(code - zero_point) * scale.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxbit.passes.base import PassContext, WeightSite
from onnxbit.passes.packed_weight import PackedWeight
from onnxbit.passes.rewrite import activation_for, array_constant, replace_node

DOMAIN = "com.microsoft"
OPSET = 1
DEFAULT_BLOCK = 128  # MLAS's fast paths cover block sizes 16..256
ACCURACY_FP32 = 0  # float32 activations and accumulation
ACCURACY_INT8 = 4  # int8 activations quantized per block (the closest stock scheme to BitNet's A8)


def pack_low_bits_first(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes [..., L] (L * bits a multiple of 8) -> bytes [..., L * bits / 8]."""
    per_byte = 8 // bits
    grouped = codes.reshape(*codes.shape[:-1], codes.shape[-1] // per_byte, per_byte).astype(np.uint8)
    out = grouped[..., 0].copy()
    for i in range(1, per_byte):
        out |= grouped[..., i] << np.uint8(bits * i)
    return out


def choose_block_size(k: int, granularity: str, group_size: int) -> int:
    if granularity == "group":
        return group_size
    block = 16
    while block < min(k, DEFAULT_BLOCK):
        block *= 2
    return block


def block_values(values: np.ndarray, granularity: str, group_size: int, block: int, k: int, n: int) -> np.ndarray:
    """Per-block scales or zero points [N, n_blocks] from QuantResult's [1] | [N] | [groups, N]."""
    n_blocks = -(-k // block)
    values = np.asarray(values)
    if granularity == "tensor":
        return np.broadcast_to(values.reshape(1, 1), (n, n_blocks)).copy()
    if granularity == "channel":
        return np.broadcast_to(values.reshape(n, 1), (n, n_blocks)).copy()
    if group_size != block:
        raise ValueError(f"group size {group_size} differs from the MatMulNBits block size {block}")
    return np.ascontiguousarray(values.T)


def pack_matmulnbits(ctx: PassContext, base: str, *, precision: str, unsigned_codes: np.ndarray, bits: int,
                     scales: np.ndarray, zero_points: np.ndarray | None, granularity: str, group_size: int,
                     accuracy_level: int) -> PackedWeight:
    """unsigned_codes: uint8 [K, N] in [0, 2^bits); zero_points like scales, or None for 2^(bits-1)."""
    k, n = unsigned_codes.shape
    block = choose_block_size(k, granularity, group_size)
    n_blocks = -(-k // block)
    default_zero = 1 << (bits - 1)
    rows = np.full((n, n_blocks * block), default_zero if zero_points is None else 0, dtype=np.uint8)
    rows[:, :k] = unsigned_codes.T
    if zero_points is not None:
        # Padding codes equal the block's zero point, so they dequantize to 0.
        zp_rows = block_values(zero_points, granularity, group_size, block, k, n).astype(np.uint8)
        pad = n_blocks * block - k
        if pad:
            rows[:, k:] = zp_rows[:, -1:]
    packed = pack_low_bits_first(rows.reshape(n, n_blocks, block), bits)
    block_scales = block_values(scales, granularity, group_size, block, k, n).astype(np.float32)
    constants = [array_constant(ctx, f"{base}_q{bits}", packed),
                 array_constant(ctx, f"{base}_scales", block_scales.reshape(-1))]
    if zero_points is not None:
        per_byte = 8 // bits
        padded = np.zeros((n, -(-n_blocks // per_byte) * per_byte), dtype=np.uint8)
        padded[:, :n_blocks] = zp_rows
        constants.append(array_constant(ctx, f"{base}_zero_points", pack_low_bits_first(padded, bits).reshape(-1)))
    attrs = {"K": k, "N": n, "bits": bits, "block_size": block, "accuracy_level": accuracy_level}
    return PackedWeight(precision=precision, storage=f"MatMulNBits/{bits}bit", constants=constants, attrs=attrs,
                        k=k, n=n)


def emit_matmulnbits(ctx: PassContext, site: WeightSite, packed: PackedWeight) -> gs.Node:
    ctx.require_opset(DOMAIN, OPSET)
    inputs = [activation_for(ctx, site), *packed.constants]
    return replace_node(ctx, site, "MatMulNBits", DOMAIN, inputs, dict(packed.attrs), bias_input=5)
