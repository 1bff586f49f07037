"""The search's model runs: one onnxruntime session over the model with the
candidate layers' weights as inputs, fed the dequantized values the
converter will store, so any mix of precisions runs without rebuilding.

The quantizers work on a layer's [K, N] view; the value fed is that view
put back in the initializer's own layout: as it is (MatMul, Gemm), transposed
(Gemm transB) or, for a Conv, its rows [N = M, K] reshaped to the weight's
[M, C/group, *kernel] (onnxruntime's Conv takes a non-constant weight)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx

from onnxbit.calibration.result import CalibratedLayer
from onnxbit.quant import quantize_binary, quantize_int, quantize_ternary

BATCH = 32  # samples stacked into one onnxruntime run when the model allows it


def dequantized(weight: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    """The float32 [K, N] weight a layer converted with `settings` computes with."""
    s = settings
    precision = s["precision"]
    if precision == "fp32":
        return weight
    if precision == "ternary":
        return quantize_ternary(weight, method=s["method"], granularity=s["granularity"],
                                scale=s.get("scale")).dequantize()
    if precision == "binary":
        return quantize_binary(weight, granularity=s["granularity"]).dequantize()
    return quantize_int(weight, int(precision[3:]), symmetric=s["symmetric"], granularity=s["granularity"],
                        group_size=s.get("group_size")).dequantize()


class Probe:
    """One session over the model with the candidate weights as inputs."""

    def __init__(self, model: onnx.ModelProto, layers: list[CalibratedLayer], stored_transposed: dict[str, bool],
                 weights: dict[str, np.ndarray]):
        """stored_transposed: node -> its initializer holds the [K, N] view
        transposed (Gemm transB; Conv layers are known by layer.conv)."""
        import onnxruntime as ort

        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        names = {l.weight for l in layers}
        kept = [t for t in probe.graph.initializer if t.name not in names]
        for tensor in probe.graph.initializer:
            if tensor.name in names:
                probe.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                                            list(tensor.dims)))
        del probe.graph.initializer[:]
        probe.graph.initializer.extend(kept)
        # Weights held by main-graph Constant nodes (exporters such as paddle2onnx write them so) become inputs too.
        constants = [n for n in probe.graph.node if n.op_type == "Constant" and n.output[0] in names]
        for node in constants:
            value = next(a.t for a in node.attribute if a.name == "value")
            probe.graph.input.append(onnx.helper.make_tensor_value_info(node.output[0], value.data_type,
                                                                        list(value.dims)))
            probe.graph.node.remove(node)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.layers = {l.node: l for l in layers}
        self.stored_transposed = stored_transposed
        self.weights = weights  # node -> float32 [K, N]
        self._cache: dict[tuple[str, str, str], np.ndarray] = {}
        self.batch: bool | None = None  # stack samples into one run (None: not tried yet)
        # node -> X^T X of its input (compensated layers): [K, K], or [group, K, K] for a grouped Conv
        self.hessians: dict[str, np.ndarray] = {}
        self._results: dict[tuple[str, str], Any] = {}

    def quantized(self, node: str, precision: str):
        """The compensated layer's QuantResult at an int precision (cached)."""
        from onnxbit.quant.gptq import quantize_int_gptq, quantize_int_gptq_column_groups

        key = (node, precision)
        if key not in self._results:
            s = self.layers[node].settings(precision)
            h = self.hessians[node]
            quantize = quantize_int_gptq if h.ndim == 2 else quantize_int_gptq_column_groups
            self._results[key] = quantize(self.weights[node], h, int(precision[3:]), symmetric=s["symmetric"],
                                          granularity=s["granularity"], group_size=s.get("group_size"))
        return self._results[key]

    def layer_error(self, node: str, settings: dict[str, Any]) -> float:
        """tr(dW^T H dW) / tr(W^T H W): the layer's own relative output error
        on the calibration inputs with its weight quantized with `settings`."""
        w, h = self.weights[node], self.hessians[node]
        delta = (dequantized(w, settings) - w).astype(np.float64)
        w = w.astype(np.float64)
        if h.ndim == 3:  # a grouped Conv: column block g reads inputs whose X^T X is h[g]
            blocks = h.shape[0]
            delta = delta.reshape(delta.shape[0], blocks, -1).transpose(1, 0, 2)
            w = w.reshape(w.shape[0], blocks, -1).transpose(1, 0, 2)
            return float(np.einsum("gkn,gkn->", delta, h @ delta) / max(np.einsum("gkn,gkn->", w, h @ w), 1e-30))
        return float(np.einsum("kn,kn->", delta, h @ delta) / max(np.einsum("kn,kn->", w, h @ w), 1e-30))

    def stored(self, node: str, precision: str) -> np.ndarray:
        layer = self.layers[node]
        settings = layer.settings(precision)
        key = (node, precision, repr(sorted(settings.items())))
        if key not in self._cache:
            if layer.uses_codes(precision):
                values = self.quantized(node, precision).dequantize()
            else:
                values = dequantized(self.weights[node], settings).astype(np.float32)
            if layer.conv is not None:
                values = values.T.reshape(layer.conv.weight_shape)
            elif self.stored_transposed[node]:
                values = values.T
            self._cache[key] = np.ascontiguousarray(values, dtype=np.float32)
        return self._cache[key]

    def run(self, assignment: dict[str, str], feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        weights = {self.layers[node].weight: self.stored(node, precision) for node, precision in assignment.items()}
        if self.batch is not False:
            batched = self._run_batched(weights, feeds)
            if batched is not None:
                return batched
        return [self.session.run(None, {**feed, **weights}) for feed in feeds]

    def _run_batched(self, weights: dict[str, np.ndarray], feeds: Sequence[dict[str, np.ndarray]]):
        """Samples stacked along axis 0, BATCH at a time: one run instead of
        BATCH (the search runs the model thousands of times). Used when every
        output keeps the samples along axis 0 and matches the one-sample runs;
        otherwise (a fixed batch, outputs without a batch axis) None."""
        shapes = {tuple((k, v.shape) for k, v in sorted(feed.items())) for feed in feeds}
        if len(shapes) != 1 or any(v.ndim == 0 or v.shape[0] != 1 for v in feeds[0].values()):
            return None
        outputs: list[list[np.ndarray]] = []
        try:
            for start in range(0, len(feeds), BATCH):
                chunk = feeds[start:start + BATCH]
                stacked = {name: np.concatenate([f[name] for f in chunk]) for name in chunk[0]}
                result = self.session.run(None, {**stacked, **weights})
                if any(np.ndim(r) == 0 or r.shape[0] != len(chunk) for r in result):
                    raise ValueError("an output has no batch axis")
                outputs.extend([r[i:i + 1] for r in result] for i in range(len(chunk)))
        except Exception:  # the model does not take stacked samples: run them one by one from now on
            self.batch = False
            return None
        if self.batch is None:  # first time: check stacking changes nothing beyond float rounding
            single = self.session.run(None, {**feeds[0], **weights})
            if not all(np.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(single, outputs[0])):
                self.batch = False
                return None
            self.batch = True
        return outputs
