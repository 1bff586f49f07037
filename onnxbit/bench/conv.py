"""`onnxbit bench conv`: TernaryConv and the integer Conv choices against
onnxruntime's fp32 Conv on ResNet-like and MobileNet-like layer shapes.

Variants (one single-node model each, weights as initializers):
  fp32         Conv with float weights (the baseline)
  ternary_a8   TernaryConv act_quant=1 (int8 activations per im2col row)
  ternary_a8px TernaryConv act_quant=3 (int8 activations per input pixel, quantized once)
  ternary_f32  TernaryConv act_quant=0
  int8         Cast(INT8) * per-channel scale + Conv: what onnxbit emits for int8
               (onnxruntime folds the weight once at load)
  int4         the same with INT4 codes
  dq_int8      DequantizeLinear(INT8 per channel) + Conv: what it emitted before (and
               still for K-group scales); onnxruntime dequantizes on every run
  convinteger  DynamicQuantizeLinear + ConvInteger (uint8 x int8) + rescale:
               onnxruntime's integer conv with dynamic activation quantization
Medians of interleaved runs are reported, one thread count per session
(intra_op_num_threads), with onnxruntime's default spinning pool workers as a
deployment runs them: run by run at one thread, and at two in blocks after a
pause that lets the previous variant's workers stop spinning
(timing.interleave_for_threads, as `bench model` and `verify` time). With the
workers' spinning off, every parallel section waited for a woken worker,
which cost the ops with two sections (TernaryConv's copy pass and tiles) more
than fp32 Conv. With cpu_time, one-thread runs are timed in the thread's CPU
time (steady on a shared machine; two-thread runs stay wall time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxbit.bench.timing import interleave_for_threads, median_ms, thread_time_ns, time_ns

VARIANTS = ("fp32", "ternary_a8", "ternary_a8px", "ternary_f32", "int8", "int4", "dq_int8", "convinteger")


@dataclass(frozen=True)
class ConvShape:
    label: str
    channels: int
    out_channels: int
    size: int  # H = W
    kernel: int
    group: int = 1
    stride: int = 1

    @property
    def pads(self) -> list[int]:
        return [self.kernel // 2] * 4

    def describe(self) -> str:
        kind = "dw" if self.group > 1 else f"{self.kernel}x{self.kernel}"
        return f"{self.label}: {kind} {self.channels}->{self.out_channels} @{self.size}x{self.size}"


SHAPES = (
    ConvShape("resnet", 64, 64, 56, 3),
    ConvShape("resnet", 128, 128, 28, 3),
    ConvShape("resnet", 256, 256, 14, 3),
    ConvShape("resnet", 512, 512, 7, 3),
    ConvShape("resnet", 256, 64, 56, 1),
    ConvShape("resnet", 1024, 256, 14, 1),
    ConvShape("mobilenet", 144, 144, 56, 3, group=144),
    ConvShape("mobilenet", 144, 24, 56, 1),
    ConvShape("mobilenet", 576, 576, 14, 3, group=576),
    ConvShape("mobilenet", 576, 96, 14, 1),
    ConvShape("mobilenet", 96, 96, 112, 3, group=96, stride=2),
    ConvShape("mobilenet", 512, 512, 14, 3, group=512, stride=2),
)
QUICK_SHAPES = (ConvShape("resnet", 32, 32, 14, 3), ConvShape("mobilenet", 32, 32, 14, 3, group=32))


def _model(nodes, inits, opset: int = 21, domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bench_conv", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    *(helper.make_opsetid(d, 1) for d in domains)])
    model.ir_version = 10
    return model


def variant_models(shape: ConvShape, rng: np.random.Generator) -> dict[str, onnx.ModelProto]:
    """One model per variant for this layer shape."""
    from onnxbit.codecs import pack_ternary
    from onnxbit.targets.dequantize import subbyte_proto

    m, cg, k = shape.out_channels, shape.channels // shape.group, shape.kernel
    codes = rng.integers(-1, 2, size=(m, cg, k, k)).astype(np.int8)
    scales = rng.uniform(0.01, 0.02, size=m).astype(np.float32)
    weight = (codes * scales[:, None, None, None]).astype(np.float32)
    conv_attrs = {"pads": shape.pads, "group": shape.group, "strides": [shape.stride] * 2}
    models = {"fp32": _model([helper.make_node("Conv", ["X", "W"], ["Y"], **conv_attrs)],
                             [numpy_helper.from_array(weight, "W")])}
    packed = pack_ternary(np.ascontiguousarray(codes.reshape(m, -1)), "2bit")
    for act_quant, name in ((1, "ternary_a8"), (3, "ternary_a8px"), (0, "ternary_f32")):
        node = helper.make_node("TernaryConv", ["X", "B", "S"], ["Y"], domain="com.onnxbit",
                                weight_shape=list(codes.shape), format="2bit", act_quant=act_quant, **conv_attrs)
        models[name] = _model([node], [numpy_helper.from_array(packed, "B"), numpy_helper.from_array(scales, "S")],
                              domains=("com.onnxbit",))
    for bits in (8, 4):
        limit = (1 << (bits - 1)) - 1
        step = np.abs(weight).reshape(m, -1).max(axis=1) / limit
        step[step == 0] = 1.0  # an all-zero filter (likely among many 3x3 depthwise ones)
        step = step.astype(np.float32)
        q = np.clip(np.rint(weight / step[:, None, None, None]), -limit, limit).astype(np.int8)
        nodes = [helper.make_node("Cast", ["Wq"], ["Wf"], to=TensorProto.FLOAT),
                 helper.make_node("Mul", ["Wf", "Ws"], ["W"]),
                 helper.make_node("Conv", ["X", "W"], ["Y"], **conv_attrs)]
        models[f"int{bits}"] = _model(nodes, [subbyte_proto("Wq", q, bits, True),
                                              numpy_helper.from_array(step.reshape(m, 1, 1, 1), "Ws")])
        if bits == 8:
            nodes = [helper.make_node("DequantizeLinear", ["Wq", "Ws"], ["W"], axis=0),
                     helper.make_node("Conv", ["X", "W"], ["Y"], **conv_attrs)]
            models["dq_int8"] = _model(nodes, [subbyte_proto("Wq", q, bits, True), numpy_helper.from_array(step, "Ws")])
    step = np.abs(weight).max() / 127
    q8 = np.clip(np.rint(weight / step), -127, 127).astype(np.int8)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["X"], ["Xq", "Xs", "Xz"]),
             helper.make_node("ConvInteger", ["Xq", "Wq", "Xz"], ["Yi"], **conv_attrs),
             helper.make_node("Cast", ["Yi"], ["Yf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["Xs", "Ws"], ["S"]),
             helper.make_node("Mul", ["Yf", "S"], ["Y"])]
    models["convinteger"] = _model(nodes, [numpy_helper.from_array(q8, "Wq"),
                                           numpy_helper.from_array(np.float32(step), "Ws")])
    return models


def run_benchmark(shapes=SHAPES, threads=(1, 2), rounds: int = 7, variants=VARIANTS, seed: int = 0,
                  progress: Callable[[str], None] | None = None, cpu_time: bool = False) -> dict:
    import onnxruntime as ort

    from onnxbit.runtime import InferenceSession

    rng = np.random.default_rng(seed)
    runs = []
    for shape in shapes:
        models = {name: model for name, model in variant_models(shape, rng).items() if name in variants}
        x = rng.standard_normal((1, shape.channels, shape.size, shape.size)).astype(np.float32)
        for count in threads:
            if progress:
                progress(f"{shape.describe()}, {count} thread(s)")
            options = ort.SessionOptions()
            options.intra_op_num_threads = count
            sessions = {name: InferenceSession(model, sess_options=options) for name, model in models.items()}
            for session in sessions.values():
                session.run(None, {"X": x})  # warm-up: first-run allocations
            clock = thread_time_ns if cpu_time and count == 1 else time_ns
            probes = {name: (lambda s=session: {"ms": clock(lambda: s.run(None, {"X": x}))})
                      for name, session in sessions.items()}
            samples = interleave_for_threads(probes, rounds, count)
            times = {name: median_ms(samples[name]["ms"]) for name in sessions}
            runs.append({"shape": shape.describe(), "threads": count, "ms": times,
                         "clock": "thread cpu" if clock is thread_time_ns else "wall",
                         "speedup_vs_fp32": {name: times["fp32"] / t for name, t in times.items()}})
    return {"variants": list(variants), "runs": runs}


def render(result: dict, console) -> None:
    from rich.table import Table

    table = Table(title="Conv layers: median ms (speed-up vs fp32 Conv)")
    table.add_column("layer")
    table.add_column("threads", justify="right")
    table.add_column("clock")
    for name in result["variants"]:
        table.add_column(name, justify="right")
    for run in result["runs"]:
        cells = []
        for name in result["variants"]:
            ms = run["ms"].get(name)
            cells.append("" if ms is None else f"{ms:.3g} ({run['speedup_vs_fp32'][name]:.2f}x)")
        table.add_row(run["shape"], str(run["threads"]), run.get("clock", "wall"), *cells)
    console.print(table)
