"""Static int8 activation scales for calibrated layers (activations "static").

After the precision search, the layers it made ternary or binary (the ones
that become TernaryMatMul) and int8 (MatMulInteger) get one fixed activation
scale each (ternary/binary Conv layers too: TernaryConv), measured on the calibration samples
(onnxbit.calibration.statistics) with a range method, and their config rules
say activations "static" with that act_scale, so that `onnxbit quantize
--calibration` emits TernaryMatMul act_quant=2, or QuantizeLinear with that
scale in front of MatMulInteger. int4 layers (MatMulNBits) keep theirs.

The precision search itself measures its budget with float activations;
what int8 activations cost in accuracy is measured on the converted model
(`onnxbit verify ORIGINAL CONVERTED --inputs ...`).
"""

from __future__ import annotations

from typing import Any

import onnx

from onnxbit.calibration.data import CalibrationData
from onnxbit.calibration.statistics import (DEFAULT_BINS, DEFAULT_PERCENTILE, RANGE_METHODS, activation_inputs,
                                            collect_statistics)
from onnxbit.errors import ConfigError

STATIC_PRECISIONS = ("ternary", "binary", "int8")  # TernaryMatMul act_quant=2, MatMulInteger
STATIC_OPS = ("MatMul", "Gemm")  # and Conv for ternary/binary ones (TernaryConv act_quant=2)


def add_static_activations(model: onnx.ModelProto | Any, result, data: CalibrationData, method: str = "minmax",
                           percentile: float = DEFAULT_PERCENTILE, bins: int = DEFAULT_BINS) -> list[str]:
    """Give result's ternary/binary/int8 MatMul and Gemm layers a static activation
    scale from their statistics on data.calibration. Returns the nodes changed."""
    if method not in RANGE_METHODS:
        raise ConfigError(f"unknown activation range method {method!r}; choose one of {', '.join(RANGE_METHODS)}")
    from onnxbit.convert import load_model

    proto, path = load_model(model)
    if path is not None and any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
    ops = {layer.node: layer.op_type for layer in activation_inputs(proto)}
    nodes = [l.node for l in result.layers if l.node in ops and l.precision in STATIC_PRECISIONS
             and (ops[l.node] in STATIC_OPS or (ops[l.node] == "Conv" and l.precision != "int8"))]
    if not nodes:
        return []
    stats = collect_statistics(proto, data.calibration, nodes, bins=bins)
    for node, summary in stats.items():
        threshold = summary.threshold(method, percentile)
        settings: dict[str, Any] = {"activations": "static", "act_scale": summary.scale(method, percentile),
                                    "act_range": method}
        if method == "percentile":
            settings["act_percentile"] = percentile
        result.activations[node] = settings
        result.activation_statistics[node] = {**summary.to_json(), "threshold": threshold,
                                              "clipped_fraction": summary.fraction_above(threshold)}
    return nodes
