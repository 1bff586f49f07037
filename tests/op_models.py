"""Builders of small models holding one com.onnxbit::TernaryMatMul node, for the op tests.

B, scales and bias go in as initializers (``constant=True``: the kernel
prepacks them once, at session creation) or as graph inputs fed on every run
(``constant=False``: the kernel prepacks per call).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxbit.reference import rans as rans_reference
from onnxbit.reference.codecs import pack_ternary
from onnxbit.ops.schemas import DOMAIN, OPSET_VERSION

NODE_NAME = "tmm_under_test"


@dataclass
class OpModel:
    model: onnx.ModelProto
    # Feeds for the inputs that are graph inputs rather than initializers
    # (everything but A); merge A into a copy per run.
    weight_feeds: dict[str, np.ndarray] = field(default_factory=dict)

    def feeds(self, a: np.ndarray) -> dict[str, np.ndarray]:
        return {"A": a, **self.weight_feeds}


def pack_codes(codes_kn: np.ndarray, fmt: str) -> np.ndarray:
    """Pack ternary codes W[K, N] into B's layout: [N, row_bytes] uint8 rows of W^T.

    Uses the pure numpy codec, so what the C kernels decode was not produced
    by the C encoder."""
    return pack_ternary(np.ascontiguousarray(np.asarray(codes_kn, dtype=np.int8).T), fmt)


def build_model(packed: np.ndarray, scales: np.ndarray, bias: np.ndarray | None = None, *,
                attrs: dict[str, Any], a_shape: Sequence[Any] | None = ("m", "k"),
                constant: bool = True, a_dtype: int = TensorProto.FLOAT,
                node_name: str = NODE_NAME) -> OpModel:
    """One TernaryMatMul node over raw arrays (any attributes, valid or not).

    a_shape None declares A without a shape (so tests can feed any rank);
    a "k" in a_shape is replaced by attrs["K"] when that is an int.
    """
    k = attrs.get("K") if isinstance(attrs.get("K"), int) else None
    if a_shape is not None:
        a_shape = [k if (dim == "k" and k is not None) else dim for dim in a_shape]
        if "k" in a_shape:
            a_shape[a_shape.index("k")] = None
    weights = {"B": np.asarray(packed), "scales": np.asarray(scales)}
    if bias is not None:
        weights["bias"] = np.asarray(bias)
    node = helper.make_node("TernaryMatMul", ["A", *weights], ["Y"], domain=DOMAIN,
                            name=node_name, **attrs)
    inputs = [helper.make_tensor_value_info("A", a_dtype, a_shape)]
    initializers, weight_feeds = [], {}
    for name, value in weights.items():
        if constant:
            initializers.append(numpy_helper.from_array(value, name))
        else:
            # Rank only, so tests can feed other shapes at run time.
            inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(value.dtype), [None] * value.ndim))
            weight_feeds[name] = value
    # Y's rank only (the checker wants a shape on graph outputs); its dims are
    # left for shape inference to fill in.
    y_shape = None if a_shape is None else [None] * len(a_shape)
    graph = helper.make_graph([node], "ternary_matmul", inputs,
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape)],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(DOMAIN, OPSET_VERSION)])
    model.ir_version = 8  # loadable by onnxruntime 1.17 too
    return OpModel(model, weight_feeds)


def ternary_matmul_model(codes_kn: np.ndarray, scales: np.ndarray, bias: np.ndarray | None = None,
                         *, fmt: str = "2bit", group_size: int = 0, act_quant: int = 0,
                         act_scale: float | None = None, constant: bool = True, b_2d: bool = True,
                         a_shape: Sequence[Any] | None = ("m", "k"),
                         node_name: str = NODE_NAME) -> OpModel:
    """A valid model computing A @ (codes_kn * scales) (+ bias)."""
    k, n = codes_kn.shape
    packed = pack_codes(codes_kn, fmt)
    if not b_2d:
        packed = packed.reshape(-1)
    attrs = {"K": k, "N": n, "format": fmt}
    if group_size:
        attrs["group_size"] = group_size
    if act_quant:
        attrs["act_quant"] = act_quant
    if act_scale is not None:
        attrs["act_scale"] = float(act_scale)
    return build_model(packed, scales, bias, attrs=attrs, a_shape=a_shape, constant=constant,
                       node_name=node_name)


def random_scales(rng: np.random.Generator, kind: str, k: int, n: int,
                  group_size: int = 0) -> np.ndarray:
    """Positive float32 scales: kind "tensor" [1], "channel" [N] or "group" [N, G]."""
    if kind == "tensor":
        shape: tuple[int, ...] = (1,)
    elif kind == "channel":
        shape = (n,)
    else:
        shape = (n, -(-k // group_size))
    return rng.uniform(0.25, 2.0, size=shape).astype(np.float32)


def ternary_conv_model(codes: np.ndarray, scales: np.ndarray, bias: np.ndarray | None = None, *,
                       fmt: str = "2bit", group_size: int = 0, act_quant: int = 0, constant: bool = True,
                       act_scale: float | None = None,
                       conv_attrs: dict[str, Any] | None = None, node_name: str = "tconv_under_test",
                       x_rank: int | None = None) -> OpModel:
    """One TernaryConv node computing Conv(X, codes * scales) (+ bias); codes
    int8 of the weight's logical shape [M, C/group, *kernel]. Feeds use "X"."""
    m = codes.shape[0]
    rows_mk = np.ascontiguousarray(codes.reshape(m, -1))
    if fmt == "rans":  # the numpy encoder's stream of base3 rows, so C decodes what C did not write
        packed = np.frombuffer(rans_reference.encode(pack_ternary(rows_mk, "base3"), block_rows=4), np.uint8).copy()
    elif fmt == "zeroruns":  # its encoder is numpy already
        from onnxbit.zero_runs import pack_zero_runs

        packed = pack_zero_runs(rows_mk)
    elif fmt == "sparse":
        from onnxbit.sparse import pack_sparse

        packed = pack_sparse(rows_mk)
    else:
        packed = pack_ternary(rows_mk, fmt)
    attrs: dict[str, Any] = {"weight_shape": list(codes.shape), "format": fmt, **(conv_attrs or {})}
    if group_size:
        attrs["group_size"] = group_size
    if act_quant:
        attrs["act_quant"] = act_quant
    if act_scale is not None:
        attrs["act_scale"] = float(act_scale)
    weights = {"B": packed, "scales": np.asarray(scales)}
    if bias is not None:
        weights["bias"] = np.asarray(bias)
    node = helper.make_node("TernaryConv", ["X", *weights], ["Y"], domain=DOMAIN, name=node_name, **attrs)
    rank = x_rank if x_rank is not None else codes.ndim
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None] * rank)]
    initializers, weight_feeds = [], {}
    for name, value in weights.items():
        if constant:
            initializers.append(numpy_helper.from_array(value, name))
        else:
            inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(value.dtype), [None] * value.ndim))
            weight_feeds[name] = value
    graph = helper.make_graph([node], "ternary_conv", inputs,
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None] * rank)],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(DOMAIN, OPSET_VERSION)])
    model.ir_version = 8
    return ConvOpModel(model, weight_feeds)


@dataclass
class ConvOpModel(OpModel):
    def feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"X": x, **self.weight_feeds}


def float_conv_model(weight: np.ndarray, bias: np.ndarray | None, conv_attrs: dict[str, Any]) -> onnx.ModelProto:
    """onnxruntime's own Conv with a float weight (the comparison for TernaryConv)."""
    inits = [numpy_helper.from_array(weight.astype(np.float32), "W")]
    names = ["X", "W"]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(np.float32), "bias"))
        names.append("bias")
    node = helper.make_node("Conv", names, ["Y"], **conv_attrs)
    rank = weight.ndim
    graph = helper.make_graph([node], "float_conv",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None] * rank)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None] * rank)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
