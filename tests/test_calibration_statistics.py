"""Activation statistics (onnxbit.calibration.statistics): the streaming histogram,
the four range methods on known distributions, and the collection in onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxbit.calibration.statistics import (ActivationStatistics, activation_inputs, collect_statistics,
                                            static_scale)
from onnxbit.errors import ConfigError
from onnxbit.reference.ternary_matmul import quantize_activations_static


def _stats(values, bins=2048, chunks=1):
    stats = ActivationStatistics(bins)
    for part in np.array_split(np.asarray(values, np.float32), chunks):
        stats.update(part)
    return stats


def _int8_mse(x: np.ndarray, threshold: float) -> float:
    """Mean squared error of x through act_quant=2 quantization and back, clip at threshold."""
    scale = static_scale(threshold)
    q, _, _ = quantize_activations_static(x.reshape(1, -1), scale)
    return float(np.mean((q[0].astype(np.float64) / scale - x) ** 2))


def test_summary_counts_min_max_and_non_finite_values():
    stats = _stats([1.5, -3.0, np.nan, 0.25, np.inf, 2.0])
    assert (stats.count, stats.nonfinite) == (4, 2)
    assert (stats.min, stats.max, stats.absmax) == (-3.0, 2.0, 3.0)
    assert stats.counts.sum() == 4
    # The width is the smallest power of two whose 2048 bins hold |x| = 3.
    assert stats.width == 2.0 ** -9 and 3.0 < 2048 * stats.width and 3.0 >= 1024 * stats.width


def test_the_range_grows_by_merging_bins_and_memory_stays_fixed(rng):
    stats = ActivationStatistics(1024)
    for magnitude in (1e-3, 1.0, 1e3, 1e6):
        stats.update(rng.standard_normal(1000).astype(np.float32) * magnitude)
        assert stats.counts.shape == (1024,) and stats.counts.sum() == stats.count
        assert stats.absmax < 1024 * stats.width
    assert stats.count == 4000


def test_result_does_not_depend_on_sample_order(rng):
    samples = [rng.laplace(size=500).astype(np.float32) * s for s in (0.01, 5.0, 0.3, 40.0, 1.0)]
    forward, backward = ActivationStatistics(), ActivationStatistics()
    for sample in samples:
        forward.update(sample)
    for sample in reversed(samples):
        backward.update(sample)
    assert forward.width == backward.width
    np.testing.assert_array_equal(forward.counts, backward.counts)
    for method in ("minmax", "percentile", "entropy", "mse"):
        assert forward.threshold(method) == backward.threshold(method)
    # And merging two partial summaries gives the same histogram.
    first, second = ActivationStatistics(), ActivationStatistics()
    for sample in samples[:2]:
        first.update(sample)
    for sample in samples[2:]:
        second.update(sample)
    first.merge(second)
    np.testing.assert_array_equal(first.counts, forward.counts)
    assert (first.count, first.absmax, first.width) == (forward.count, forward.absmax, forward.width)


@pytest.mark.parametrize("percentile", [50.0, 99.0, 99.99, 100.0])
def test_percentile_is_numpys_within_one_bin(rng, percentile):
    x = rng.standard_normal(200_000).astype(np.float32)
    stats = _stats(x, chunks=7)
    expected = np.percentile(np.abs(x), percentile)
    assert abs(stats.threshold("percentile", percentile) - expected) <= stats.width


def test_minmax_is_the_absmax_and_its_scale_is_the_per_token_rule(rng):
    x = rng.standard_normal(1000).astype(np.float32)
    stats = _stats(x)
    amax = np.float32(np.abs(x).max())
    assert stats.threshold("minmax") == amax
    assert stats.scale("minmax") == np.float32(127) * (np.float32(1) / amax)


@pytest.mark.parametrize("distribution,low,high", [
    # The MSE-optimal symmetric 8-bit clip is about 9.9 b for Laplace(b) and
    # about 4 sigma for a Gaussian (uniform-noise model of the rounding error).
    ("laplace", 9.0, 11.0),
    ("gaussian", 3.6, 4.3),
])
def test_mse_clip_is_near_the_known_optimum(rng, distribution, low, high):
    x = (rng.laplace(size=400_000) if distribution == "laplace" else rng.standard_normal(400_000)).astype(np.float32)
    stats = _stats(x, chunks=4)
    threshold = stats.threshold("mse")
    assert low <= threshold <= high
    assert threshold < stats.absmax
    # Measured through the real quantizer, it beats clipping at the absmax and is
    # within a few percent of the best threshold a brute-force scan finds.
    candidates = np.linspace(low / 2, stats.absmax, 200)
    best = min(_int8_mse(x, t) for t in candidates)
    assert _int8_mse(x, threshold) <= 1.05 * best
    assert _int8_mse(x, threshold) < _int8_mse(x, stats.absmax)


def test_entropy_clips_heavy_tails_below_the_max(rng):
    x = np.concatenate([rng.standard_normal(100_000), rng.standard_cauchy(500) * 20]).astype(np.float32)
    stats = _stats(x)
    threshold = stats.threshold("entropy")
    assert threshold < 0.25 * stats.absmax
    assert threshold > 2.0  # but keeps the Gaussian body
    # Data that fits the 128 levels already is not clipped.
    small = _stats(np.arange(-50, 51, dtype=np.float32))
    assert small.threshold("entropy") == small.absmax


def test_bad_requests_are_clear_errors(rng):
    stats = _stats(rng.standard_normal(10))
    with pytest.raises(ConfigError, match="unknown activation range method 'kl'"):
        stats.threshold("kl")
    with pytest.raises(ConfigError, match=r"percentile must be in \(0, 100\]"):
        stats.threshold("percentile", 101)
    with pytest.raises(ValueError, match="no finite activation values"):
        _stats([np.nan]).threshold("minmax")
    with pytest.raises(ValueError, match="power of two"):
        ActivationStatistics(1000)


def test_all_zero_activations_get_a_finite_scale():
    stats = _stats(np.zeros(100))
    for method in ("minmax", "percentile", "entropy", "mse"):
        assert stats.threshold(method) == 0.0
        assert np.isfinite(stats.scale(method)) and stats.scale(method) > 0


def _two_layer_model(rng, k=16, hidden=8, n=4):
    w1 = rng.standard_normal((k, hidden)).astype(np.float32)
    w2 = rng.standard_normal((hidden, n)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="second")]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
                              initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, w1, w2


def test_collects_each_layers_input_in_onnxruntime_without_touching_the_model(rng):
    model, w1, _ = _two_layer_model(rng)
    before = model.SerializeToString()
    feeds = [{"x": rng.standard_normal((3, 16)).astype(np.float32)} for _ in range(5)]
    stats = collect_statistics(model, feeds)
    assert model.SerializeToString() == before
    assert [l.tensor for l in activation_inputs(model)] == ["x", "r"]
    x = np.concatenate([f["x"] for f in feeds])
    r = np.maximum(x @ w1, 0)
    assert stats["first"].count == x.size and stats["first"].absmax == np.abs(x).max()
    assert stats["first"].min == x.min() and stats["first"].max == x.max()
    assert stats["second"].count == r.size and stats["second"].min == 0.0
    np.testing.assert_allclose(stats["second"].absmax, r.max(), rtol=1e-6)
    assert list(collect_statistics(model, feeds, nodes=["second"])) == ["second"]
    with pytest.raises(ConfigError, match=r"no activation statistics for \['third'\]"):
        collect_statistics(model, feeds, nodes=["third"])


def _resident_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def test_weights_are_held_once_while_collecting(rng):
    """The session reads the weights in place: memory grows by about one copy of
    them (Python's protobuf hands out a tensor's bytes as a copy), not by the two
    or three that a serialized model plus onnxruntime's initializers would take."""
    import gc
    import threading
    import time

    k, n = 2048, 4096
    nodes, weights = [], []
    for i in range(2):
        weights.append(numpy_helper.from_array(np.full((k if i == 0 else n, n), 0.01, np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", ["x" if i == 0 else "h0", f"w{i}"], [f"h{i}"], name=f"mm{i}"))
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("h1", TensorProto.FLOAT, [1, n])], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    del weights
    weight_mib = (k * n + n * n) * 4 / 2 ** 20
    gc.collect()
    before = peak = _resident_mib()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _resident_mib())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        stats = collect_statistics(model, [{"x": np.ones((1, k), np.float32)} for _ in range(3)])
    finally:
        done.set()
        sampler.join()
    assert stats["mm1"].count == 3 * n
    assert peak - before < 1.5 * weight_mib, (peak - before, weight_mib)
