"""Activation statistics of candidate layers, and the static int8 scales chosen from them.

collect_statistics runs the model in onnxruntime with each candidate layer's
activation input (input A of a MatMul, Gemm or Conv whose weight is a
constant initializer) added as an extra graph output, on a temporary copy of
the graph that holds no weights: the session takes the weights straight from
the caller's model, fed on every run as arrays onnxruntime reads in place, so
they exist once in memory besides the model itself (the one copy Python's
protobuf makes of a tensor's bytes), and the model is never modified.

Samples stream through one at a time into a fixed-size summary per layer
(ActivationStatistics): min, max, absmax, count, non-finite count and a
histogram of |x| with a fixed number of bins. Its bin width is always a power
of two, the smallest that holds the largest |x| seen so far (never below
MIN_BIN_WIDTH); when a sample exceeds the range, neighbouring bins merge
pairwise, doubling the width until it fits. Power-of-two widths make each
merge exact (bin floor(x / 2w) is bin floor(x / w) halved), so the histogram,
and every threshold chosen from it, is the same whatever order the samples
come in. Memory is bins * 8 bytes per layer whatever the number of samples.

Range methods turn a histogram into a clipping threshold T on |x|; the
layer's static scale is then act_scale = 127 * (1 / T) (the per-token rule
with T in place of the row's absmax, TernaryMatMul act_quant = 2):

- minmax: T = absmax.
- percentile: T = the given percentile of |x| (linear within its bin).
- entropy: T minimizing the KL divergence between the histogram clipped at T
  (outliers folded into the last bin) and its 128-level quantized version,
  as TensorRT's entropy calibration does.
- mse: T minimizing the expected squared int8 quantization error: step^2 / 12
  for every |x| <= T (step = T / 127) plus (|x| - T)^2 for the clipped ones,
  with |x| at its bin's centre.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import onnx

from onnxbit.errors import ConfigError

RANGE_METHODS = ("minmax", "percentile", "entropy", "mse")
DEFAULT_BINS = 2048
DEFAULT_PERCENTILE = 99.99
MIN_BIN_WIDTH = 2.0 ** -100  # all-zero activations still get a (tiny) range
QUANT_LEVELS = 128  # |q| in 0 .. 127: the levels int8 gives |x| under a symmetric scale
_LAYER_OPS = ("MatMul", "Gemm", "Conv")


@dataclass
class ActivationStatistics:
    """Streaming summary of one tensor's values (see the module docstring)."""

    bins: int = DEFAULT_BINS
    count: int = 0  # finite values seen
    nonfinite: int = 0  # NaN and Inf values seen (left out of everything else)
    min: float = math.inf
    max: float = -math.inf
    absmax: float = 0.0
    width: float = 0.0  # bin width, a power of two; 0 until the first value
    counts: np.ndarray = field(default=None, repr=False)  # int64 [bins]: |x| in [i * width, (i + 1) * width)

    def __post_init__(self) -> None:
        if self.bins < 2 * QUANT_LEVELS or self.bins & (self.bins - 1):
            raise ValueError(f"bins must be a power of two >= {2 * QUANT_LEVELS}, got {self.bins}")
        if self.counts is None:
            self.counts = np.zeros(self.bins, dtype=np.int64)

    def update(self, values: np.ndarray) -> None:
        x = np.asarray(values, dtype=np.float32).reshape(-1)
        finite = np.isfinite(x)
        if not finite.all():
            self.nonfinite += int(x.size - np.count_nonzero(finite))
            x = x[finite]
        if x.size == 0:
            return
        self.count += int(x.size)
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        magnitude = np.abs(x).astype(np.float64)
        self.absmax = max(self.absmax, float(magnitude.max()))
        self._grow_to(self.absmax)
        # width is a power of two: the division is exact, floor gives the bin.
        index = np.minimum((magnitude / self.width).astype(np.int64), self.bins - 1)
        self.counts += np.bincount(index, minlength=self.bins)

    def _grow_to(self, absmax: float) -> None:
        """The smallest power-of-two width whose range [0, bins * width) holds absmax."""
        needed = max(MIN_BIN_WIDTH, _pow2_above(absmax / self.bins))
        if self.width == 0.0:
            self.width = needed
            return
        while self.width < needed:
            self.counts = self.counts.reshape(-1, 2).sum(axis=1)
            self.counts = np.concatenate([self.counts, np.zeros(self.bins // 2, dtype=np.int64)])
            self.width *= 2.0

    def merge(self, other: "ActivationStatistics") -> None:
        """Add another summary of the same bin count (e.g. from a second process)."""
        if other.bins != self.bins:
            raise ValueError(f"cannot merge histograms of {other.bins} and {self.bins} bins")
        if other.count == 0:
            self.nonfinite += other.nonfinite
            return
        counts = other.counts
        width = other.width
        self._grow_to(max(self.absmax, other.absmax))
        while width < self.width:
            counts = np.concatenate([counts.reshape(-1, 2).sum(axis=1), np.zeros(self.bins // 2, np.int64)])
            width *= 2.0
        self.counts = self.counts + counts
        self.count += other.count
        self.nonfinite += other.nonfinite
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        self.absmax = max(self.absmax, other.absmax)

    def threshold(self, method: str = "minmax", percentile: float = DEFAULT_PERCENTILE) -> float:
        """The clipping threshold T on |x| by a range method (RANGE_METHODS)."""
        if method not in RANGE_METHODS:
            raise ConfigError(f"unknown activation range method {method!r}; choose one of {', '.join(RANGE_METHODS)}")
        if self.count == 0:
            raise ValueError("no finite activation values were seen: no range to choose")
        if self.absmax == 0.0:
            return 0.0
        if method == "minmax":
            return self.absmax
        if method == "percentile":
            return min(self.absmax, percentile_threshold(self.counts, self.width, percentile))
        if method == "entropy":
            return min(self.absmax, entropy_threshold(self.counts, self.width))
        return min(self.absmax, mse_threshold(self.counts, self.width))

    def scale(self, method: str = "minmax", percentile: float = DEFAULT_PERCENTILE) -> float:
        """act_scale for TernaryMatMul act_quant = 2: 127 * (1 / T) in float32."""
        return static_scale(self.threshold(method, percentile))

    def fraction_above(self, threshold: float) -> float:
        """Share of the finite values with |x| beyond threshold (resolution: one bin)."""
        if self.count == 0:
            return 0.0
        first = int(np.ceil(threshold / self.width)) if self.width else self.bins
        return float(self.counts[min(first, self.bins):].sum() / self.count)

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "nonfinite": self.nonfinite, "min": self.min, "max": self.max,
                "absmax": self.absmax, "bins": self.bins, "bin_width": self.width}


def static_scale(threshold: float) -> float:
    """127 * (1 / max(T, 1e-5)) in float32, the per-token rule's rounding (tmatmul.h)."""
    t = np.float32(max(threshold, 1e-5))
    return float(np.float32(127.0) * (np.float32(1.0) / t))


def _pow2_above(value: float) -> float:
    """The smallest power of two strictly above value (value >= 0)."""
    if value <= 0.0:
        return MIN_BIN_WIDTH
    mantissa, exponent = math.frexp(value)  # value = mantissa * 2^exponent, 0.5 <= mantissa < 1
    return math.ldexp(1.0, exponent)  # > value, and 2^(exponent - 1) <= value


def percentile_threshold(counts: np.ndarray, width: float, percentile: float) -> float:
    """The |x| below which `percentile` % of the values lie, linear within its bin."""
    if not 0.0 < percentile <= 100.0:
        raise ConfigError(f"percentile must be in (0, 100], got {percentile}")
    total = counts.sum()
    target = total * percentile / 100.0
    cumulative = np.cumsum(counts)
    i = int(np.searchsorted(cumulative, target, side="left"))
    i = min(i, len(counts) - 1)
    before = cumulative[i - 1] if i else 0
    inside = counts[i]
    fraction = (target - before) / inside if inside else 1.0
    return float((i + fraction) * width)


def entropy_threshold(counts: np.ndarray, width: float, levels: int = QUANT_LEVELS) -> float:
    """Clipping threshold by minimal KL(P || Q), as TensorRT's entropy calibration:
    for each candidate end i (bins [0, i) kept), P is the histogram up to i with
    the clipped values added to bin i - 1, Q is P's kept bins merged into `levels`
    groups and spread back evenly over each group's nonzero bins."""
    counts = counts.astype(np.float64)
    last = int(np.nonzero(counts)[0][-1]) + 1
    if last <= levels:
        return last * width  # the data already fits in `levels` bins: nothing worth clipping
    best_i, best_kl = last, math.inf
    tail = np.cumsum(counts[::-1])[::-1]  # tail[i] = sum of counts[i:]
    for i in range(levels, last + 1):
        p = counts[:i].copy()
        if i < len(counts):
            p[i - 1] += tail[i]
        kept = counts[:i]
        # Group g holds bins [edges[g], edges[g + 1]).
        edges = (np.arange(levels + 1) * i) // levels
        nonzero = kept != 0
        group_sum = np.add.reduceat(kept, edges[:-1])
        group_nonzero = np.add.reduceat(nonzero.astype(np.float64), edges[:-1])
        per_bin = np.divide(group_sum, group_nonzero, out=np.zeros(levels), where=group_nonzero > 0)
        q = np.repeat(per_bin, np.diff(edges)) * nonzero
        p_sum, q_sum = p.sum(), q.sum()
        if q_sum == 0:
            continue
        p_n, q_n = p / p_sum, q / q_sum
        mask = p_n > 0
        if np.any(q_n[mask] == 0):
            kl = math.inf  # P has mass where Q has none (only the folded outliers can)
        else:
            kl = float(np.sum(p_n[mask] * np.log(p_n[mask] / q_n[mask])))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i * width


def mse_threshold(counts: np.ndarray, width: float, levels: int = QUANT_LEVELS) -> float:
    """The bin edge T minimizing sum_bins count * err(T): step^2 / 12 inside
    (step = T / (levels - 1)), (centre - T)^2 beyond T."""
    counts = counts.astype(np.float64)
    centres = (np.arange(len(counts)) + 0.5) * width
    thresholds = np.arange(1, len(counts) + 1) * width  # T at the upper edge of bin i - 1
    # Suffix sums over the bins beyond T (bins i .. end for T = thresholds[i - 1]).
    s0 = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])[1:]
    s1 = np.concatenate([np.cumsum((counts * centres)[::-1])[::-1], [0.0]])[1:]
    s2 = np.concatenate([np.cumsum((counts * centres ** 2)[::-1])[::-1], [0.0]])[1:]
    inside = counts.sum() - s0
    step = thresholds / (levels - 1)
    error = inside * step ** 2 / 12.0 + s2 - 2.0 * thresholds * s1 + thresholds ** 2 * s0
    return float(thresholds[int(np.argmin(error))])


@dataclass
class LayerActivation:
    """A candidate layer and the tensor its activations arrive in."""

    node: str
    op_type: str
    tensor: str


def activation_inputs(model: onnx.ModelProto) -> list[LayerActivation]:
    """Main-graph MatMul/Gemm/Conv nodes whose weight (B, or Conv's W) is an
    initializer and whose activation (A, X) is not, named as the converter
    names unnamed nodes."""
    from onnxbit.passes.manager import name_unnamed_nodes

    skeleton = _skeleton(model)
    name_unnamed_nodes(skeleton.graph, set())
    initializers = {t.name for t in model.graph.initializer}
    layers = []
    for node in skeleton.graph.node:
        if node.op_type not in _LAYER_OPS or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        if node.input[1] in initializers and node.input[0] not in initializers and node.input[0]:
            layers.append(LayerActivation(node.name, node.op_type, node.input[0]))
    return layers


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without its initializers (a cheap copy: graph structure only)."""
    skeleton = onnx.ModelProto()
    _copy_fields(model, skeleton, skip="graph")
    _copy_fields(model.graph, skeleton.graph, skip="initializer")
    return skeleton


def _copy_fields(source, target, skip: str) -> None:
    for descriptor, value in source.ListFields():
        if descriptor.name == skip:
            continue
        if getattr(descriptor, "is_repeated", None) or getattr(descriptor, "label", None) == 3:
            getattr(target, descriptor.name).extend(value)
        elif descriptor.message_type is not None:
            getattr(target, descriptor.name).CopyFrom(value)
        else:
            setattr(target, descriptor.name, value)


def _initializer_array(tensor: onnx.TensorProto) -> np.ndarray:
    """The tensor's values, without a copy where its bytes are raw_data."""
    from onnx import numpy_helper

    if tensor.HasField("raw_data") and tensor.data_type != onnx.TensorProto.STRING:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        if tensor.data_type not in (onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT16) or dtype.itemsize == 2:
            return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(tuple(tensor.dims))
    return numpy_helper.to_array(tensor)


def collect_statistics(model: onnx.ModelProto | str | os.PathLike, feeds: Iterable[dict[str, np.ndarray]],
                       nodes: Sequence[str] | None = None,
                       bins: int = DEFAULT_BINS) -> dict[str, ActivationStatistics]:
    """Per candidate layer (node name -> summary) statistics of its activation
    input over every feed. nodes: the layers to measure (default: every
    candidate activation_inputs finds); a name that is not a candidate is a
    ConfigError."""
    import onnxruntime as ort

    from onnxbit.convert import load_model

    proto, path = load_model(model)
    if path is not None and any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
    layers = activation_inputs(proto)
    if nodes is not None:
        known = {layer.node: layer for layer in layers}
        missing = [n for n in nodes if n not in known]
        if missing:
            raise ConfigError(f"no activation statistics for {missing}: not a MatMul/Gemm/Conv with a constant "
                              f"weight and a computed activation; candidates: {sorted(known)}")
        layers = [known[n] for n in nodes]
    graph_inputs = {i.name for i in proto.graph.input}
    tensors = sorted({layer.tensor for layer in layers})
    computed = [t for t in tensors if t not in graph_inputs]

    skeleton = _skeleton(proto)
    existing = {o.name for o in skeleton.graph.output}
    for name in computed:
        if name not in existing:
            skeleton.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    # The weights become graph inputs, fed as numpy arrays over the model's own
    # bytes on every run: onnxruntime reads fed arrays in place, where as
    # initializers it would copy (and prepack) them. Overridable initializers
    # (also graph inputs) stay initializers.
    declared = {i.name for i in proto.graph.input}
    weights = {}
    for tensor in proto.graph.initializer:
        if tensor.name in declared:
            skeleton.graph.initializer.append(tensor)
            continue
        weights[tensor.name] = _initializer_array(tensor)
        skeleton.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                                       list(tensor.dims)))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(skeleton.SerializeToString(), options, providers=["CPUExecutionProvider"])

    stats = {t: ActivationStatistics(bins) for t in tensors}
    for feed in feeds:
        values = dict(zip(computed, session.run(computed, {**feed, **weights}))) if computed else {}
        for name in tensors:
            stats[name].update(values[name] if name in values else feed[name])
    del session, weights
    return {layer.node: stats[layer.tensor] for layer in layers}
