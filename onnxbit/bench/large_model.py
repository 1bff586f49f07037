"""Converting a model bigger than memory should be comfortable with: peak
memory and time of `onnxbit quantize` on a multi-GB float model kept in
external data, for each preset and target.

The model is a chain of `layers` MatMuls of size x size float32 weights,
written straight to its data file one layer at a time. Each conversion runs
in a fresh process (so its peak RSS is its own) through the same code path
as the CLI. The time a conversion should take is predicted from the same
preset and target converting one layer held in memory; the ratio of the two
shows what the file handling costs on top of the arithmetic.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

# A float model: "ternary" is the post-training ternary preset (bitnet keeps float weights float).
CASES = (("ternary", "onnxbit"), ("ternary", "ort"), ("int4", "ort"), ("int4", "onnx"), ("int8", "ort"),
         ("int8", "onnx"))

_RUNNER = """
import json, resource, sys, time
from onnxbit.convert import convert
start = time.perf_counter()
result = convert(sys.argv[1], preset=sys.argv[3], target=sys.argv[4], output_path=sys.argv[2], progress=False,
                 measure_error=False)
seconds = time.perf_counter() - start
# VmHWM is this process's own peak; ru_maxrss can carry the parent's over fork.
try:
    peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak,
                  "output_bytes": result.report.model_bytes_after,
                  "converted": len(result.report.converted)}))
"""


@dataclass
class LargeConversion:
    preset: str
    target: str
    seconds: float
    predicted_seconds: float
    peak_rss_bytes: int
    input_bytes: int
    output_bytes: int
    layers_converted: int

    @property
    def time_ratio(self) -> float:
        return self.seconds / self.predicted_seconds


def parse_size(text: str) -> int:
    """"2.2G", "500M", "123456" -> bytes (decimal units, as disk sizes are quoted)."""
    text = text.strip().upper().removesuffix("B")
    factor = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in "KMG" else text
    try:
        value = float(number) * factor
    except ValueError:
        raise ValueError(f"model size {text!r} is not a size like 2.2G or 500M") from None
    if value <= 0:
        raise ValueError("model size must be positive")
    return int(value)


def make_large_model(folder: Path, layers: int, size: int, seed: int = 0) -> Path:
    """A chain of `layers` MatMuls with size x size float32 weights in
    "large.onnx.data", written a layer at a time (never all in memory)."""
    rng = np.random.default_rng(seed)
    path = folder / "large.onnx"
    data_name = "large.onnx.data"
    initializers, nodes = [], []
    offset = 0
    with open(folder / data_name, "wb") as data:
        for i in range(layers):
            weight = (rng.standard_normal((size, size), dtype=np.float32) * np.float32(size ** -0.5))
            data.write(weight.tobytes())
            tensor = onnx.TensorProto(name=f"W{i}", data_type=onnx.TensorProto.FLOAT, dims=[size, size])
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(weight.nbytes))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += weight.nbytes
            initializers.append(tensor)
            nodes.append(helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", f"W{i}"],
                                          ["y" if i == layers - 1 else f"h{i + 1}"], name=f"layer{i}"))
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, size])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, size])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return path


def _one_layer_seconds(size: int, preset: str, target: str, rounds: int = 3) -> float:
    """Median time of the pack pass alone (quantize, pack, emit) on one
    size x size layer held in memory: the weight throughput the whole
    conversion is compared with."""
    import onnx_graphsurgeon as gs

    from onnxbit.config import load_config
    from onnxbit.passes.base import PassContext
    from onnxbit.passes.find_weights import FindWeightsPass
    from onnxbit.passes.pack_weights import PackWeightsPass

    rng = np.random.default_rng(1)
    weight = rng.standard_normal((size, size), dtype=np.float32)
    # A small second layer is the "last" one (which ternary keeps float), so
    # the big one converts as it does inside the large model.
    head = rng.standard_normal((size, 16), dtype=np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["h"], name="layer"),
                               helper.make_node("MatMul", ["h", "H"], ["y"], name="head")], "one",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, size])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16])],
                              [onnx.numpy_helper.from_array(weight, "W"), onnx.numpy_helper.from_array(head, "H")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    config = load_config(None, preset)
    times = []
    for _ in range(rounds):
        ctx = PassContext(graph=gs.import_onnx(model), config=config, target=target)
        FindWeightsPass().run(ctx)
        start = time.perf_counter()
        PackWeightsPass(measure_error=False).run(ctx)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_large_model_bench(model_bytes: int, size: int = 4096, cases=CASES, folder: Path | None = None,
                          progress=lambda message: None) -> list[LargeConversion]:
    layers = max(1, round(model_bytes / (size * size * 4)))
    with tempfile.TemporaryDirectory(prefix="onnxbit-large-", dir=folder) as tmp:
        tmp_path = Path(tmp)
        progress(f"writing a {layers} x {size}x{size} float32 model ({layers * size * size * 4 / 1e9:.2f} GB)")
        model = make_large_model(tmp_path, layers, size)
        input_bytes = model.stat().st_size + (tmp_path / "large.onnx.data").stat().st_size
        results = []
        for preset, target in cases:
            per_layer = _one_layer_seconds(size, preset, target)
            # ternary keeps the last layer float (the head): it costs no quantization.
            quantized = layers - 1 if preset == "ternary" else layers
            progress(f"converting with --preset {preset} --target {target}")
            out = tmp_path / f"out-{preset}-{target}.onnx"
            run = subprocess.run([sys.executable, "-c", _RUNNER, str(model), str(out), preset, target],
                                 capture_output=True, text=True, check=False)
            if run.returncode != 0:
                raise RuntimeError(f"conversion {preset}/{target} failed: {run.stderr.strip().splitlines()[-1:]}")
            measured = json.loads(run.stdout.strip().splitlines()[-1])
            results.append(LargeConversion(preset, target, measured["seconds"], max(per_layer * quantized, 1e-9),
                                           measured["peak_rss_bytes"], input_bytes, measured["output_bytes"],
                                           measured["converted"]))
            for leftover in tmp_path.glob(f"{out.name}*"):
                leftover.unlink()
        return results


def results_as_dicts(results: list[LargeConversion]) -> list[dict]:
    return [{**asdict(r), "time_ratio": r.time_ratio} for r in results]
