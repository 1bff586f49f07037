"""X^T X of each layer's input over the calibration samples, for GPTQ error
compensation (onnxbit.quant.gptq).

The inputs are read with onnxruntime from a temporary copy of the model in
which each layer's activation input is also a graph output, so they are the
float model's own activations. Layers sharing an input (q, k, v) share one
matrix.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx

BATCH = 32  # samples per run when the model takes them stacked


def layer_hessians(model: onnx.ModelProto, activations: Sequence[str],
                   feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """activation name -> float64 [K, K] sum of x x^T over every row of it
    (all leading axes: samples, tokens) in the given samples."""
    names = list(dict.fromkeys(activations))
    session = output_session(model, names)
    try:
        return _sums(session, names, _chunks(feeds))
    except Exception:  # the model does not take stacked samples
        return _sums(session, names, feeds)


def output_session(model: onnx.ModelProto, names: Sequence[str]):
    """An onnxruntime session of a copy of `model` that also outputs `names`."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    for name in names:
        if name not in present:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])


def layer_rows(model: onnx.ModelProto, activations: Sequence[str], feed: dict[str, np.ndarray]) -> dict[str, int]:
    """activation name -> rows it has in one sample (all axes but the last:
    tokens), the M a layer multiplies per call."""
    names = list(dict.fromkeys(activations))
    values = output_session(model, names).run(names, feed)
    return {name: int(np.prod(value.shape[:-1])) if value.ndim > 1 else 1 for name, value in zip(names, values)}


def _sums(session, names: list[str], chunks) -> dict[str, np.ndarray]:
    from onnxbit.quant.gptq import hessian

    sums: dict[str, np.ndarray] = {}
    for chunk in chunks:
        for name, value in zip(names, session.run(names, chunk)):
            h = hessian(value)
            sums[name] = sums[name] + h if name in sums else h
    return sums


def _chunks(feeds: Sequence[dict[str, np.ndarray]]):
    """Stacked feeds when every sample has the same shapes, else one at a time
    (X^T X sums over rows, so stacking does not change it)."""
    stackable = len({tuple((k, v.shape) for k, v in sorted(f.items())) for f in feeds}) == 1
    if not stackable or any(v.ndim == 0 or v.shape[0] != 1 for v in feeds[0].values()):
        yield from feeds
        return
    for start in range(0, len(feeds), BATCH):
        chunk = feeds[start:start + BATCH]
        yield {name: np.concatenate([f[name] for f in chunk]) for name in chunk[0]}
