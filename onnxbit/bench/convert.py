"""Conversion throughput: GB of float32 weights turned into packed ternary
per second, on one large layer, for the two layouts exporters produce
(MatMul with W [K, N]; Gemm transB=1 with W [N, K], PyTorch's Linear layout)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from onnxbit.bench.timing import interleave, median_ms, time_ns
from onnxbit.config import load_config
from onnxbit.convert import convert
from onnxbit.passes.base import PassContext
from onnxbit.passes.find_weights import FindWeightsPass
from onnxbit.passes.pack_weights import PackWeightsPass

LAYOUTS = ("MatMul W[K,N]", "Gemm transB W[N,K]")
TERNARY = {"default": {"precision": "ternary", "granularity": "tensor"}}


@dataclass
class ConvertResult:
    layout: str
    stage: str  # "pack pass" | "convert() end to end"
    median_ms: float
    gb_per_s: float


def layer_model(size: int, layout: str, rng: np.random.Generator) -> onnx.ModelProto:
    weight = rng.standard_normal((size, size), dtype=np.float32)
    if layout == LAYOUTS[0]:
        node = helper.make_node("MatMul", ["x", "W"], ["y"], name="layer")
    else:
        node = helper.make_node("Gemm", ["x", "W"], ["y"], name="layer", transB=1)
    graph = helper.make_graph([node], "bench", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, size])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, size])],
                              [numpy_helper.from_array(weight, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run_convert_bench(size: int = 4096, rounds: int = 5, error_stats: bool = False) -> list[ConvertResult]:
    rng = np.random.default_rng(0)
    models = {layout: layer_model(size, layout, rng) for layout in LAYOUTS}
    config = load_config(TERNARY)

    def pack_probe(model):
        def probe():
            ctx = PassContext(graph=gs.import_onnx(model), config=config)
            FindWeightsPass().run(ctx)
            return {"pack pass": time_ns(lambda: PackWeightsPass(measure_error=error_stats).run(ctx))}
        return probe

    def convert_probe(model):
        def probe():
            return {"convert() end to end": time_ns(
                lambda: convert(model, config=TERNARY, progress=False, measure_error=error_stats))}
        return probe

    probes = {}
    for layout, model in models.items():
        probes[f"{layout}/pack"] = pack_probe(model)
        probes[f"{layout}/convert"] = convert_probe(model)
    samples = interleave(probes, rounds)
    gigabytes = size * size * 4 / 1e9
    results = []
    for name, by_stage in samples.items():
        layout = name.rsplit("/", 1)[0]
        for stage, values in by_stage.items():
            ms = median_ms(values)
            results.append(ConvertResult(layout, stage, ms, gigabytes / (ms / 1e3)))
    return results


def results_as_dicts(results: list[ConvertResult]) -> list[dict]:
    return [asdict(r) for r in results]
