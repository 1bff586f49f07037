"""numpy implementations of the com.onnxbit ops for onnx.reference.ReferenceEvaluator.

    from onnx.reference import ReferenceEvaluator
    from onnxbit.ops.reference import CUSTOM_OPS
    ReferenceEvaluator(model, new_ops=CUSTOM_OPS).run(None, feeds)

They decode the packed weights with the pure numpy codecs and compute with the
numpy reference arithmetic, so they share no code with the C library and serve
as an independent check of what onnxruntime computes.
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun

from onnxbit.ops.schemas import DOMAIN, FORMATS, register_schemas
from onnxbit.reference.codecs import packed_row_bytes, unpack_ternary
from onnxbit.formats import STREAM_ROW_FORMAT as ROW_FORMAT
from onnxbit.formats import SPARSE, STREAMS, ZERO_RUNS
from onnxbit.reference.crc32c import packed_weight_crc32c
from onnxbit.reference import sparse, zero_runs
from onnxbit.reference.rans import decode as rans_decode
from onnxbit.reference.bf16_matmul import bf16_matmul_reference
from onnxbit.reference import activation as activations
from onnxbit.reference.ternary_conv import ternary_conv_reference
from onnxbit.reference.ternary_matmul import ternary_matmul_reference


def _decode_stream(fmt: str, packed: np.ndarray, k: int, n: int) -> np.ndarray:
    """A stream format's B -> int8 codes [N, K], by the pure Python decoders."""
    if fmt == ZERO_RUNS:
        return zero_runs.decode_codes(packed.tobytes(), n, k)
    if fmt == SPARSE:
        return sparse.decode_codes(packed.tobytes(), n, k)
    return unpack_ternary(rans_decode(packed.tobytes(), n, packed_row_bytes(k, ROW_FORMAT)), k, ROW_FORMAT)


def _check_act_scale(name: str, act_quant: int, act_scale) -> None:
    """act_scale: required, finite and > 0 with act_quant 2; refused otherwise (as the C ops)."""
    if act_quant == 2:
        if act_scale is None:
            raise ValueError(f"{name}: required attribute act_scale is missing (act_quant=2)")
        if not (np.isfinite(np.float32(act_scale)) and np.float32(act_scale) > 0):
            raise ValueError(f"{name}: attribute act_scale={act_scale} must be finite and > 0")
    elif act_scale is not None:
        raise ValueError(f"{name}: attribute act_scale is only used with act_quant=2, but act_quant={act_quant}")


class TernaryMatMul(OpRun):
    """com.onnxbit::TernaryMatMul (contract: onnxbit/ops/schemas.py)."""

    op_domain = DOMAIN

    def _run(self, A, B, scales, bias=None, K=None, N=None, format=None,  # noqa: A002 (ONNX name)
             group_size=0, act_quant=0, act_scale=None, crc32c=None):
        name = f"TernaryMatMul node {self.onnx_node.name!r}"
        fmt = format.decode() if isinstance(format, bytes) else format
        if K is None or N is None or fmt is None:
            raise ValueError(f"{name}: attributes K, N and format are required")
        k, n = int(K), int(N)
        group_size = int(group_size or 0)
        act_quant = int(act_quant or 0)
        if k <= 0 or n <= 0:
            raise ValueError(f"{name}: K={k} and N={n} must be positive")
        if fmt not in FORMATS:
            raise ValueError(f"{name}: format={fmt!r} is not one of {', '.join(FORMATS)}")
        if group_size < 0 or act_quant not in (0, 1, 2):
            raise ValueError(f"{name}: group_size={group_size} must be >= 0 and "
                             f"act_quant={act_quant} 0, 1 or 2")
        _check_act_scale(name, act_quant, act_scale)
        a = np.asarray(A)
        if a.dtype != np.float32 or a.ndim == 0 or a.shape[-1] != k:
            raise ValueError(f"{name}: A must be float32 [..., K={k}], got {a.dtype} {a.shape}")
        packed = np.asarray(B)
        if fmt in STREAMS:
            if packed.dtype != np.uint8 or packed.ndim != 1:
                raise ValueError(f"{name}: B must be a 1-D uint8 {fmt} stream, got {packed.dtype} {packed.shape}")
        elif packed.dtype != np.uint8 or packed.size != n * packed_row_bytes(k, fmt):
            raise ValueError(f"{name}: B must be uint8 with N * row bytes = {n * packed_row_bytes(k, fmt)} elements, "
                             f"got {packed.dtype} {packed.shape}")
        scales = np.asarray(scales)
        groups = -(-k // group_size) if group_size else 1
        allowed = [(n, groups)] if group_size else [(1,), (n,), ()]
        if scales.dtype != np.float32 or scales.shape not in allowed:
            shapes = " or ".join(map(str, allowed))
            raise ValueError(f"{name}: scales must be float32 of shape {shapes}, "
                             f"got {scales.dtype} {scales.shape}")
        if crc32c is not None and packed_weight_crc32c(packed, scales) != int(crc32c):
            raise ValueError(f"{name}: corrupt weights: B and scales do not match the crc32c attribute")
        if not np.all(np.isfinite(scales) & (scales > 0)):
            raise ValueError(f"{name}: scales must be finite and > 0")
        try:
            if fmt in STREAMS:
                codes_kn = _decode_stream(fmt, packed, k, n).T
            else:
                codes_kn = unpack_ternary(packed.reshape(n, -1), k, fmt).T
        except ValueError as error:
            raise ValueError(f"{name}: invalid weights (format {fmt}): {error}") from error
        y = ternary_matmul_reference(a, codes_kn, scales, group_size, act_quant,
                                     None if bias is None else np.asarray(bias, dtype=np.float32),
                                     act_scale=act_scale)
        return (y.astype(np.float32),)


class TernaryConv(OpRun):
    """com.onnxbit::TernaryConv (contract: onnxbit/ops/schemas.py)."""

    op_domain = DOMAIN

    def _run(self, X, B, scales, bias=None, weight_shape=None, format=None,  # noqa: A002 (ONNX name)
             group_size=0, act_quant=0, group=1, strides=None, pads=None, dilations=None, auto_pad="NOTSET",
             crc32c=None, act_scale=None, activation=None, activation_alpha=None, activation_beta=None,
             activation_min=None, activation_max=None):
        name = f"TernaryConv node {self.onnx_node.name!r}"
        fmt = format.decode() if isinstance(format, bytes) else format
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else (auto_pad or "NOTSET")
        if weight_shape is None or fmt not in FORMATS:
            raise ValueError(f"{name}: attributes weight_shape and format (one of {', '.join(FORMATS)}) are required")
        weight_shape = [int(d) for d in weight_shape]
        _check_act_scale(name, int(act_quant or 0), act_scale)
        activation = activation.decode() if isinstance(activation, bytes) else activation
        activation_params = dict(zip(activations.ALL_PARAMETERS,
                                     (activation_alpha, activation_beta, activation_min, activation_max)))
        try:
            activations.check(activation, activation_params)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from error
        m, k = weight_shape[0], int(np.prod(weight_shape[1:]))
        packed = np.asarray(B)
        if fmt in STREAMS:
            if packed.dtype != np.uint8 or packed.ndim != 1:
                raise ValueError(f"{name}: B must be a 1-D uint8 {fmt} stream, got {packed.dtype} {packed.shape}")
        elif packed.dtype != np.uint8 or packed.size != m * packed_row_bytes(k, fmt):
            raise ValueError(f"{name}: B must be uint8 with M * row bytes = {m * packed_row_bytes(k, fmt)} "
                             f"elements, got {packed.dtype} {packed.shape}")
        if crc32c is not None and packed_weight_crc32c(packed, np.asarray(scales, dtype=np.float32)) != int(crc32c):
            raise ValueError(f"{name}: corrupt weights: B and scales do not match the crc32c attribute")
        try:
            if fmt in STREAMS:
                codes = _decode_stream(fmt, packed, k, m)
            else:
                codes = unpack_ternary(packed.reshape(m, -1), k, fmt)
        except ValueError as error:
            raise ValueError(f"{name}: invalid weights (format {fmt}): {error}") from error
        y = ternary_conv_reference(np.asarray(X), codes, np.asarray(scales), weight_shape=weight_shape,
                                   group=int(group or 1), group_size=int(group_size or 0),
                                   act_quant=int(act_quant or 0), bias=bias, strides=strides, pads=pads,
                                   dilations=dilations, auto_pad=auto_pad, act_scale=act_scale)
        return (activations.apply(y, activation, activation_params),)


class BFloat16MatMul(OpRun):
    """com.onnxbit::BFloat16MatMul (contract: onnxbit/ops/schemas.py)."""

    op_domain = DOMAIN

    def _run(self, A, B, bias=None):
        name = f"BFloat16MatMul node {self.onnx_node.name!r}"
        a, b = np.asarray(A), np.asarray(B)
        if b.ndim != 2 or b.dtype.itemsize != 2 or b.dtype == np.float16:
            raise ValueError(f"{name}: B must be bfloat16 [K, N], got {b.dtype} {b.shape}")
        if a.dtype != np.float32 or a.ndim == 0 or a.shape[-1] != b.shape[0]:
            raise ValueError(f"{name}: A must be float32 [..., K={b.shape[0]}], got {a.dtype} {a.shape}")
        # onnx hands bfloat16 tensors over as ml_dtypes.bfloat16 (or raw uint16 bits)
        return (bf16_matmul_reference(a, b.view(np.uint16), None if bias is None else np.asarray(bias)),)


CUSTOM_OPS = [TernaryMatMul, TernaryConv, BFloat16MatMul]

register_schemas()
