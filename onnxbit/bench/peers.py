"""Single-op ONNX models that compute Y = A @ W for one weight matrix, one per
kernel family the matmul benchmark compares:

* onnxruntime's own ops: fp32 ``MatMul``, ``quantize_dynamic`` int8
  (QInt8 weights, uint8 dynamic activations) and ``com.microsoft::MatMulNBits``
  with 4- and 2-bit blocks;
* ``com.onnxbit::TernaryMatMul`` from this project.

Every builder takes the same ternary weight ``codes * scale`` (codes in
{-1,0,1}, one float scale) so all models compute the same product and their
outputs can be checked against one float64 reference. A single per-tensor
scale is also exactly representable by every peer: int8 per-tensor symmetric
quantization maps ``+-scale`` to ``+-127``, MatMulNBits stores it per block.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxbit.targets.matmulnbits import NBitsArrays, pack_nbits

OPSET_ONNX = 17
MS_DOMAIN = "com.microsoft"
ONNXBIT_DOMAIN = "com.onnxbit"

# Symbolic batch dimension: the same model serves every M, like a decoder layer.
BATCH_DIM = "M"


def _io(k: int, n: int) -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    a = helper.make_tensor_value_info("A", TensorProto.FLOAT, [BATCH_DIM, k])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [BATCH_DIM, n])
    return a, y


def _model(node: onnx.NodeProto, k: int, n: int, initializers: list[onnx.TensorProto],
           name: str, extra_domains: tuple[str, ...] = ()) -> onnx.ModelProto:
    a, y = _io(k, n)
    graph = helper.make_graph([node], name, [a], [y], initializers)
    opsets = [helper.make_opsetid("", OPSET_ONNX)]
    opsets += [helper.make_opsetid(domain, 1) for domain in extra_domains]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="onnxbit-bench")
    # ir_version 9 is read by every onnxruntime this project supports (>= 1.17).
    model.ir_version = 9
    return model


def _check_ternary(codes: np.ndarray, scale: float) -> None:
    if codes.ndim != 2:
        raise ValueError(f"ternary codes must be a 2-D [K, N] array, got shape {codes.shape}")
    if codes.size and (codes.min() < -1 or codes.max() > 1):
        raise ValueError("ternary codes must all be -1, 0 or 1")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"the weight scale must be finite and > 0, got {scale}")


def dequantized_weight(codes: np.ndarray, scale: float) -> np.ndarray:
    """The float32 [K, N] weight every model in this module represents."""
    _check_ternary(codes, scale)
    return codes.astype(np.float32) * np.float32(scale)


def fp32_matmul_model(codes: np.ndarray, scale: float) -> onnx.ModelProto:
    """Plain ``MatMul`` with the dequantized float32 weight as initializer."""
    k, n = codes.shape
    weight = numpy_helper.from_array(dequantized_weight(codes, scale), "W")
    node = helper.make_node("MatMul", ["A", "W"], ["Y"], name="matmul")
    return _model(node, k, n, [weight], "fp32_matmul")


def int8_dynamic_model(codes: np.ndarray, scale: float) -> onnx.ModelProto:
    """``quantize_dynamic`` of :func:`fp32_matmul_model` with QInt8 weights
    (onnxruntime's stock int8 path: uint8 per-tensor dynamic activations).

    reduce_range keeps weights in 7 bits: without it, x86 CPUs lacking VNNI run
    the u8 x s8 product through VPMADDUBSW, whose int16 pair sums saturate (on
    this project's Zen1 test machine the error of a K=200 product grew ~80x).
    The ternary weight maps to +-64 either way, so nothing else changes."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs a pre-processing hint on the root logger for every
    # model; it does not apply to a lone MatMul.
    previous_disable = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(prefix="onnxbit-bench-") as tmp:
            out = Path(tmp) / "int8_dynamic.onnx"
            quantize_dynamic(fp32_matmul_model(codes, scale), out, weight_type=QuantType.QInt8,
                             reduce_range=True)
            return onnx.load(out)
    finally:
        logging.disable(previous_disable)


def matmul_nbits_model(weights: NBitsArrays, accuracy_level: int = 4) -> onnx.ModelProto:
    """``com.microsoft::MatMulNBits`` over weights packed as the converter packs them."""
    inits = [numpy_helper.from_array(weights.b, "B"), numpy_helper.from_array(weights.scales, "scales")]
    if weights.zero_points is not None:
        inits.append(numpy_helper.from_array(weights.zero_points, "zero_points"))
    node = helper.make_node("MatMulNBits", ["A"] + [t.name for t in inits], ["Y"],
                            domain=MS_DOMAIN, name="matmul_nbits", K=weights.k, N=weights.n,
                            bits=weights.bits, block_size=weights.block_size,
                            accuracy_level=accuracy_level)
    return _model(node, weights.k, weights.n, inits, f"matmul_nbits{weights.bits}", (MS_DOMAIN,))


def ternary_as_nbits(codes: np.ndarray, scale: float, bits: int, block_size: int = 32) -> NBitsArrays:
    """A ternary [K, N] weight as MatMulNBits blocks: code = w + 2**(bits-1),
    zero point 2**(bits-1), every block scale equal to ``scale`` (exact)."""
    _check_ternary(codes, scale)
    k, n = codes.shape
    n_blocks = -(-k // block_size)
    zero = 1 << (bits - 1)
    unsigned = (codes.astype(np.int16) + zero).astype(np.uint8)
    return pack_nbits(unsigned, bits, np.full((n_blocks, n), scale, dtype=np.float32),
                      np.full((n_blocks, n), zero, dtype=np.uint8), "group", block_size)


def ternary_matmul_model(packed: np.ndarray, scale: float, k: int, n: int, fmt: str,
                         act_quant: int) -> onnx.ModelProto:
    """``com.onnxbit::TernaryMatMul`` over W^T packed rows (uint8 [N, row_bytes])."""
    if fmt not in ("2bit", "base3"):
        raise ValueError(f"TernaryMatMul format must be '2bit' or 'base3', got {fmt!r}")
    if act_quant not in (0, 1):
        raise ValueError(f"act_quant must be 0 or 1, got {act_quant}")
    if packed.dtype != np.uint8 or packed.ndim != 2 or packed.shape[0] != n:
        raise ValueError(f"packed weights must be uint8 [N={n}, row_bytes], got {packed.dtype} {packed.shape}")
    inits = [numpy_helper.from_array(packed, "B"),
             numpy_helper.from_array(np.array([scale], dtype=np.float32), "scales")]
    node = helper.make_node("TernaryMatMul", ["A", "B", "scales"], ["Y"], domain=ONNXBIT_DOMAIN,
                            name="ternary_matmul", K=k, N=n, format=fmt, group_size=0,
                            act_quant=act_quant)
    return _model(node, k, n, inits, f"ternary_matmul_{fmt}_a{act_quant}", (ONNXBIT_DOMAIN,))


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every initializer: the weight traffic one run streams."""
    total = 0
    for tensor in model.graph.initializer:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        total += int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
    return total
