"""onnxruntime's com.microsoft::MatMulNBits for 2/4/8-bit weights, and for
ternary/binary weights on target "ort" (2-bit codes w + 1 with zero point 1).
The benchmark's MatMulNBits peers are packed here too (pack_nbits), so they
measure exactly what the converter emits.

Layout (onnxruntime contrib op spec): B uint8 [N, n_blocks, blob_size] holds
W^T in blocks of block_size along K, codes packed least significant bits
first; scales float32 [N * n_blocks]; zero_points uint8 [N, ceil(n_blocks *
bits / 8)] packed the same way (default 2^(bits-1) when absent). The weight is
(code - zero_point) * scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxbit.layers.base import WeightSite
from onnxbit.passes.base import PassContext
from onnxbit.passes.rewrite import array_constant, emit_op
from onnxbit.targets.base import LayerInfo, ModelIndex, PackedWeight, bits_per_weight, int_attribute

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


def unsigned_codes(weight, bits: int) -> np.ndarray:
    """uint8 [K, N] codes for MatMulNBits: asymmetric codes as they are,
    signed ones shifted by 2^(bits-1) (the default zero point)."""
    if weight.zero_points is not None:
        return weight.codes.astype(np.uint8)
    return (weight.codes.astype(np.int16) + (1 << (bits - 1))).astype(np.uint8)


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


@dataclass(frozen=True)
class NBitsArrays:
    """The weight inputs of MatMulNBits: b uint8 [N, n_blocks, block * bits / 8],
    scales float32 [N * n_blocks], zero_points uint8 (packed) or None."""

    b: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    k: int
    n: int
    bits: int
    block_size: int

    @property
    def nbytes(self) -> int:
        return self.b.nbytes + self.scales.nbytes + (0 if self.zero_points is None else self.zero_points.nbytes)


def pack_nbits(unsigned_codes: np.ndarray, bits: int, scales: np.ndarray, zero_points: np.ndarray | None,
               granularity: str, group_size: int) -> NBitsArrays:
    """unsigned_codes: uint8 [K, N] in [0, 2^bits); scales and zero points as
    QuantResult holds them ([1] | [N] | [groups, N]), zero_points None for the
    default 2^(bits-1). Group sizes are MatMulNBits block sizes."""
    if bits not in (2, 4, 8):
        raise ValueError(f"MatMulNBits bits must be 2, 4 or 8, got {bits}")
    if granularity == "group" and (group_size < 16 or group_size & (group_size - 1)):
        raise ValueError(f"MatMulNBits block_size must be a power of two >= 16, got {group_size}")
    k, n = unsigned_codes.shape
    if unsigned_codes.size and int(unsigned_codes.max()) >= 1 << bits:
        raise ValueError(f"codes must be < {1 << bits} for {bits}-bit blocks")
    block = choose_block_size(k, granularity, group_size)
    n_blocks = -(-k // block)
    default_zero = 1 << (bits - 1)
    rows = np.full((n, n_blocks * block), default_zero if zero_points is None else 0, dtype=np.uint8)
    rows[:, :k] = unsigned_codes.T
    packed_zero_points = None
    if zero_points is not None:
        # Padding codes equal the block's zero point, so they dequantize to 0.
        zp_rows = block_values(zero_points, granularity, group_size, block, k, n).astype(np.uint8)
        if zp_rows.size and int(zp_rows.max()) >= 1 << bits:
            raise ValueError(f"zero points must be < {1 << bits} for {bits}-bit blocks")
        pad = n_blocks * block - k
        if pad:
            rows[:, k:] = zp_rows[:, -1:]
        per_byte = 8 // bits
        padded = np.zeros((n, -(-n_blocks // per_byte) * per_byte), dtype=np.uint8)
        padded[:, :n_blocks] = zp_rows
        packed_zero_points = pack_low_bits_first(padded, bits).reshape(-1)
    packed = pack_low_bits_first(rows.reshape(n, n_blocks, block), bits)
    block_scales = block_values(scales, granularity, group_size, block, k, n).astype(np.float32)
    return NBitsArrays(packed, block_scales.reshape(-1), packed_zero_points, k, n, bits, block)


def nbits_dequantized(arrays: NBitsArrays) -> np.ndarray:
    """The float32 [K, N] weight packed MatMulNBits inputs stand for (for checks)."""
    per_byte = 8 // arrays.bits
    mask = (1 << arrays.bits) - 1
    flat = arrays.b.reshape(arrays.n, -1)
    codes = np.stack([(flat >> np.uint8(arrays.bits * i)) & mask for i in range(per_byte)], axis=-1)
    codes = codes.reshape(arrays.n, -1)[:, :arrays.k].astype(np.float32)
    n_blocks = -(-arrays.k // arrays.block_size)
    if arrays.zero_points is None:
        zeros = np.full((arrays.n, n_blocks), 1 << (arrays.bits - 1), np.float32)
    else:
        zp = arrays.zero_points.reshape(arrays.n, -1)
        zeros = np.stack([(zp >> np.uint8(arrays.bits * i)) & mask for i in range(per_byte)], axis=-1)
        zeros = zeros.reshape(arrays.n, -1)[:, :n_blocks].astype(np.float32)
    block_of_k = np.arange(arrays.k) // arrays.block_size
    scales = arrays.scales.reshape(arrays.n, n_blocks)
    return np.ascontiguousarray(((codes - zeros[:, block_of_k]) * scales[:, block_of_k]).T)


def pack_matmulnbits(ctx: PassContext, base: str, *, precision: str, unsigned_codes: np.ndarray, bits: int,
                     scales: np.ndarray, zero_points: np.ndarray | None, granularity: str, group_size: int,
                     accuracy_level: int) -> PackedWeight:
    """unsigned_codes: uint8 [K, N] in [0, 2^bits); zero_points like scales, or None for 2^(bits-1)."""
    arrays = pack_nbits(unsigned_codes, bits, scales, zero_points, granularity, group_size)
    constants = [array_constant(ctx, f"{base}_q{bits}", arrays.b),
                 array_constant(ctx, f"{base}_scales", arrays.scales)]
    if arrays.zero_points is not None:
        constants.append(array_constant(ctx, f"{base}_zero_points", arrays.zero_points))
    attrs = {"K": arrays.k, "N": arrays.n, "bits": bits, "block_size": arrays.block_size,
             "accuracy_level": accuracy_level}
    return PackedWeight(precision=precision, storage=f"MatMulNBits/{bits}bit", constants=constants, attrs=attrs,
                        k=arrays.k, n=arrays.n)


def emit_matmulnbits(ctx: PassContext, site: WeightSite, packed: PackedWeight) -> gs.Node:
    return emit_op(ctx, site, packed, "MatMulNBits", DOMAIN, OPSET, bias_input=5)


def recognize(node: onnx.NodeProto, attrs: dict, index: ModelIndex) -> LayerInfo | None:
    if node.domain != DOMAIN or node.op_type != "MatMulNBits":
        return None
    k, n, bits = int_attribute(attrs, "K"), int_attribute(attrs, "N"), int_attribute(attrs, "bits")
    size = index.constant_bytes([i for i in node.input[1:4] if i])
    return LayerInfo(node.name, node.op_type, f"int{bits}", f"MatMulNBits/{bits}bit", k, n, size,
                     bits_per_weight(size, k * n if k and n else None),
                     {"block_size": int_attribute(attrs, "block_size"),
                      "accuracy_level": int_attribute(attrs, "accuracy_level", 0)})
