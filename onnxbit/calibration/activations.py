"""Static int8 activation scales for calibrated layers (activations "static").

After the precision search, the layers it made ternary or binary (the ones
that become TernaryMatMul) and int8 (MatMulInteger) get one fixed activation
scale each (ternary/binary Conv layers too: TernaryConv), measured on the calibration samples
(onnxbit.calibration.statistics) with a range method, and their config rules
say activations "static" with that act_scale, so that `onnxbit quantize
--calibration` emits TernaryMatMul act_quant=2, or QuantizeLinear with that
scale in front of MatMulInteger. int4 layers (MatMulNBits) keep theirs.

Then the choice between int8 and float activations per layer
(check_static_activations): the model converted with every static scale runs
in onnxruntime on the calibration samples (the real ops, not a simulation);
while it misses the budget, the layer whose static activations cost the most
(measured by converting with that layer alone back to float activations)
goes back to float activations. The result reports each decision and the
budget on the held-out samples.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
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


def _outputs(model, feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    from onnxbit import runtime

    session = runtime.InferenceSession(model)
    return [session.run(None, feed) for feed in feeds]


def _converted_outputs(model, result, feeds, static: set[str]) -> list[list[np.ndarray]]:
    """Outputs of the model converted with result's config, static scales kept for `static` only."""
    from onnxbit.calibration.converted import converted_outputs

    kept = {node: settings for node, settings in result.activations.items() if node in static}
    return converted_outputs(model, dataclasses.replace(result, activations=kept), feeds)


def check_static_activations(model, result, data: CalibrationData,
                             progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Keep static int8 activations where the converted model still meets
    result.budget on the calibration samples; layers that break it go back to
    float activations, the costliest first. Updates result.activations and
    returns the record (also stored in result.activation_choice)."""
    budget = result.budget
    static = set(result.activations)
    feeds = data.calibration
    reference = _outputs(model, feeds)
    value = budget.measure(reference, _converted_outputs(model, result, feeds, static))
    record: dict[str, Any] = {"all_static": value, "reverted": [], "costs": {}}
    if not budget.met(value) and static:
        # What each layer's static activations cost: the budget with it alone back at float activations.
        for done, node in enumerate(sorted(static), 1):
            record["costs"][node] = budget.measure(reference, _converted_outputs(model, result, feeds, static - {node}))
            if progress is not None:
                progress(f"static activations: {node}", done, len(static))
        for node in sorted(static, key=lambda n: budget.shortfall(record["costs"][n])):
            if budget.met(value):
                break
            static.discard(node)
            value = budget.measure(reference, _converted_outputs(model, result, feeds, static))
            record["reverted"].append({"layer": node, "value_after": value,
                                       "why": f"{budget.metric} with static activations missed {budget}"})
    result.activations = {node: s for node, s in result.activations.items() if node in static}
    record["calibration_value"] = value
    holdout_reference = _outputs(model, data.holdout)
    record["holdout_value"] = budget.measure(holdout_reference,
                                             _converted_outputs(model, result, data.holdout, static))
    result.activation_choice = record
    return record
