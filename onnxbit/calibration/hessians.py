"""X^T X of each layer's input over the calibration samples, for GPTQ error
compensation (onnxbit.quant.gptq). A Conv's rows are its im2col rows
(onnxbit.calibration.conv_rows).

The inputs are read with onnxruntime from a temporary copy of the model in
which each layer's activation input is also a graph output, so they are the
float model's own activations. Layers sharing an input (q, k, v) share one
matrix.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import onnx

BATCH = 32  # samples per run when the model takes them stacked
# The requested activations of one stacked run stay below this (a CNN's
# feature maps are large): fewer samples are stacked when one sample's exceed it.
BATCH_BYTES = 1 << 30


def layer_hessians(model: onnx.ModelProto, activations: Sequence[str],
                   feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """activation name -> float64 [K, K] sum of x x^T over every row of it
    (all leading axes: samples, tokens) in the given samples."""
    from onnxbit.quant.gptq import hessian

    return input_grams(model, {name: (name, hessian) for name in activations}, feeds)


def input_grams(model: onnx.ModelProto, sources: Mapping[str, tuple[str, Callable[[np.ndarray], np.ndarray]]],
                feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """key -> the sum over the samples of gram(activation) for each key's
    (activation name, gram function): one pass over the samples for all."""
    names = list(dict.fromkeys(name for name, _ in sources.values()))
    session = output_session(model, names)
    if not feeds:
        return {}
    first = dict(zip(names, session.run(names, feeds[0])))
    sums = {key: gram(first[name]) for key, (name, gram) in sources.items()}
    per_sample = max(1, sum(v.nbytes for v in first.values()))
    batch = int(min(BATCH, max(1, BATCH_BYTES // per_sample)))
    try:
        _add_sums(sums, session, names, sources, _chunks(feeds[1:], batch))
    except Exception:  # the model does not take stacked samples
        sums = {key: gram(first[name]) for key, (name, gram) in sources.items()}
        _add_sums(sums, session, names, sources, feeds[1:])
    return sums


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


def _add_sums(sums: dict[str, np.ndarray], session, names: list[str], sources, chunks) -> None:
    for chunk in chunks:
        values = dict(zip(names, session.run(names, chunk)))
        for key, (name, gram) in sources.items():
            sums[key] += gram(values[name])


def _chunks(feeds: Sequence[dict[str, np.ndarray]], batch: int = BATCH):
    """Stacked feeds when every sample has the same shapes, else one at a time
    (X^T X sums over rows, so stacking does not change it)."""
    stackable = len({tuple((k, v.shape) for k, v in sorted(f.items())) for f in feeds}) == 1
    if not feeds:
        return
    if not stackable or any(v.ndim == 0 or v.shape[0] != 1 for v in feeds[0].values()):
        yield from feeds
        return
    for start in range(0, len(feeds), batch):
        chunk = feeds[start:start + batch]
        yield {name: np.concatenate([f[name] for f in chunk]) for name in chunk[0]}
