"""Measured speed of one layer's representations, for the `performance` goal.

A representation that runs slower than the float MatMul for a layer's shape
on this CPU is not worth its accuracy loss when speed is the goal. Whether it
does depends on the shape, the rows per call (tokens), the target's op and
the CPU, so it is measured, not guessed: a one-MatMul float model of the
layer's shape [M, K] x [K, N] (random weights: the time does not depend on
their values) is converted with the exact settings calibration would write,
and the two run interleaved in onnxruntime, with medians. A Conv layer is
timed the same way as a one-Conv model of its weight shape, attributes and
input size (one calibration sample's), against onnxruntime's fp32 Conv:
what the converter emits for it (TernaryConv, or integer weights + Conv).

Results are cached per CPU, onnxruntime and onnxbit version (and
SPEED_REVISION), ISA, target,
threads, settings and shape in a JSON file (`ONNXBIT_CACHE_DIR`, default
~/.cache/onnxbit), so a shape is measured once per machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

ROUNDS = 9  # interleaved rounds per measurement; the median is kept
# Part of every cache key: bumped when what the converter emits for a layer, or
# how fast the library's kernels run it, changes (the package version does not
# move with each change, and a stale timing would keep a now-fast layer float).
# 2: integer Conv weights as Cast + Mul; TernaryConv act_quant=3 on the pixel
# lanes; the depthwise channel blocks and phase planes.
# 3: few-channel ternary Convs take float activations (INT2 + Cast + Conv);
# depthwise int8 activations on the staged paths; BatchNormalization folded.
SPEED_REVISION = 3
MIN_ROUND_SECONDS = 0.004  # calls per round are batched up to about this long

def cache_path() -> Path:
    root = os.environ.get("ONNXBIT_CACHE_DIR") or Path.home() / ".cache" / "onnxbit"
    return Path(root) / "layer_speed.json"


class LayerSpeed:
    """speed(settings, k, n, m): how many times faster than float the layer
    runs with `settings` on `target` (below 1: slower), measured once per key."""

    def __init__(self, target: str = "onnxbit", threads: int = 1, path: Path | None = None):
        import onnxruntime

        from onnxbit import __version__, native
        from onnxbit.bench.timing import cpu_name

        self.target, self.threads = target, threads
        self.path = path or cache_path()
        self.machine = "|".join([cpu_name(), f"onnxruntime {onnxruntime.__version__}",
                                 f"onnxbit {__version__} r{SPEED_REVISION}",
                                 f"isa {native.isa()}", f"target {target}", f"threads {threads}"])
        self._cache = self._read()

    def _read(self) -> dict[str, float]:
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {k: float(v) for k, v in raw.items() if isinstance(v, (int, float))} if isinstance(raw, dict) else {}

    def _write(self) -> None:
        from onnxbit.modelio.publish import Publication

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with Publication() as publication:
                publication.write_bytes(self.path, (json.dumps(self._cache, indent=1, sort_keys=True) + "\n").encode())
                publication.commit()
        except OSError:
            pass  # a read-only home only costs measuring again next time

    def __call__(self, settings: Mapping[str, Any], k: int, n: int, m: int) -> float:
        key = f"{self.machine}|{json.dumps(dict(settings), sort_keys=True)}|{m}x{k}x{n}"
        if key not in self._cache:
            self._cache[key] = measure_speedup(settings, k, n, m, self.target, self.threads)
            self._write()
        return self._cache[key]

    def conv(self, settings: Mapping[str, Any], conv, input_shape: Sequence[int]) -> float:
        """The same for a Conv layer (conv: its ConvSpec) on one input of input_shape [1, C, *spatial]."""
        geometry = json.dumps({"weight": list(conv.weight_shape), "attrs": _plain(conv.attrs),
                               "input": [int(d) for d in input_shape]}, sort_keys=True)
        key = f"{self.machine}|{json.dumps(dict(settings), sort_keys=True)}|Conv {geometry}"
        if key not in self._cache:
            self._cache[key] = measure_conv_speedup(settings, conv, input_shape, self.target, self.threads)
            self._write()
        return self._cache[key]


def _plain(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Conv attributes as JSON values (auto_pad may be bytes)."""
    return {k: (v.decode() if isinstance(v, bytes) else list(v) if isinstance(v, (list, tuple)) else v)
            for k, v in attrs.items()}


def one_layer_model(k: int, n: int, seed: int = 0) -> onnx.ModelProto:
    """A float model Y = X @ W with X [M, K] (M symbolic) and W [K, N]."""
    weight = (np.random.default_rng(seed).standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"], name="layer")], "layer_speed",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])],
        [onnx.numpy_helper.from_array(weight, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def one_conv_model(conv, input_shape: Sequence[int], seed: int = 0) -> onnx.ModelProto:
    """A float model Y = Conv(X, W) with the layer's weight shape and attributes, X of input_shape."""
    from onnxbit.calibration.conv_rows import output_size

    shape = tuple(conv.weight_shape)
    fan_in = int(np.prod(shape[1:]))
    weight = (np.random.default_rng(seed).standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    attrs = {k: v for k, v in _plain(conv.attrs).items() if k in ("auto_pad", "dilations", "group", "pads", "strides")}
    graph = helper.make_graph(
        [helper.make_node("Conv", ["X", "W"], ["Y"], name="layer", **attrs)], "conv_speed",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [int(d) for d in input_shape])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [int(input_shape[0]), shape[0],
                                                               *output_size(conv, tuple(input_shape[2:]))])],
        [onnx.numpy_helper.from_array(weight, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def measure_speedup(settings: Mapping[str, Any], k: int, n: int, m: int, target: str = "onnxbit",
                    threads: int = 1, rounds: int = ROUNDS) -> float:
    """Median float time over median converted time, interleaved."""
    feed = {"X": np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)}
    return _speedup(one_layer_model(k, n), settings, feed, target, threads, rounds)


def measure_conv_speedup(settings: Mapping[str, Any], conv, input_shape: Sequence[int], target: str = "onnxbit",
                         threads: int = 1, rounds: int = ROUNDS) -> float:
    """measure_speedup for a Conv layer of that geometry on one input of input_shape."""
    feed = {"X": np.random.default_rng(1).standard_normal([int(d) for d in input_shape]).astype(np.float32)}
    return _speedup(one_conv_model(conv, input_shape), settings, feed, target, threads, rounds)


def _speedup(original: onnx.ModelProto, settings: Mapping[str, Any], feed: dict[str, np.ndarray], target: str,
             threads: int, rounds: int) -> float:
    """original converted with settings; float median time over converted median time, interleaved."""
    import time

    import onnxruntime as ort

    from onnxbit import runtime
    from onnxbit.bench.timing import interleave, median_ms
    from onnxbit.convert import convert

    config = {"float_weights": "quantize", "default": dict(settings)}
    converted = convert(original, config=config, target=target, progress=False, measure_error=False).model
    sessions = {}
    for name, model in (("float", original), ("converted", converted)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        sessions[name] = runtime.InferenceSession(model, options)
    for session in sessions.values():
        session.run(None, feed)  # warm-up: prepacking, page faults
    start = time.perf_counter()
    sessions["float"].run(None, feed)
    calls = max(1, int(MIN_ROUND_SECONDS / max(time.perf_counter() - start, 1e-6)))

    def probe(session):
        def run() -> dict[str, float]:
            begin = time.perf_counter_ns()
            for _ in range(calls):
                session.run(None, feed)
            return {"t": (time.perf_counter_ns() - begin) / calls}
        return run

    samples = interleave({name: probe(s) for name, s in sessions.items()}, rounds)
    return median_ms(samples["float"]["t"]) / median_ms(samples["converted"]["t"])
