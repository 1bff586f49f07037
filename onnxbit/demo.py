"""`onnxbit demo`: convert the bundled sample model and show what changed.

The sample is a tiny Hugging Face BitNetForCausalLM whose linear layers were
swapped by transformers' own AutoBitLinear (online BitNet QAT) and exported
with torch.onnx's dynamo exporter, fake-quant chains and all.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from onnxbit.samples import SAMPLE_INPUTS, SAMPLE_MODEL, sample_path
from onnxbit.verify import Comparison, compare, render


# A decoding step of BitNet b1.58 2B's feed-forward up projection (hidden 2560,
# intermediate 6912): where the sample model is too small to show kernel speed.
LAYER_SHAPE = (1, 2560, 6912)
LAYER_VARIANTS = ["fp32", "int8", "nbits2", "tmm_2bit_a8"]


def run_demo(model_path: Path | None = None, inputs_path: Path | None = None, target: str = "onnxbit",
             threads: int = 1, rounds: int = 30, layer: bool = True, console=None) -> Comparison:
    from rich.console import Console

    from onnxbit.convert import convert
    from onnxbit.verify import read_model

    console = console or Console()
    model_path = Path(model_path) if model_path else sample_path(SAMPLE_MODEL)
    if inputs_path is None and model_path == sample_path(SAMPLE_MODEL):
        inputs_path = sample_path(SAMPLE_INPUTS)
    read_model(model_path, "original")  # a clean error for a file that is no ONNX model, before converting
    console.print(f"[bold]1. convert[/bold] {model_path} (target {target})")
    with tempfile.TemporaryDirectory(prefix="onnxbit-demo-") as tmp:
        output = Path(tmp) / f"{model_path.stem}.{target}.onnx"
        result = convert(model_path, target=target, output_path=output, progress=False)
        result.report.render(console)
        console.print(f"\n[bold]2. run both in onnxruntime[/bold] ({threads} thread{'s' if threads > 1 else ''})")
        # Inputs: the .npz (checked against the model), or synthesized and tried on the original.
        comparison = compare(model_path, output, inputs_path, threads=threads, rounds=rounds)
    render(comparison, console)
    if layer:
        _layer_speed(threads, console)
    return comparison


def _layer_speed(threads: int, console) -> None:
    from onnxbit.bench.matmul import BenchOptions, MatMulShape, run_benchmark
    from onnxbit.bench.render_matmul import render as render_bench

    m, k, n = LAYER_SHAPE
    console.print(f"\n[bold]3. one deployment-sized layer[/bold] ({m}x{k}x{n}, weights streamed from memory; "
                  "`onnxbit bench matmul` for the full comparison)")
    options = BenchOptions(shapes=[MatMulShape(m, k, n)], threads=[threads], variants=list(LAYER_VARIANTS),
                           budget_seconds=4.0, bandwidth_bytes=64 << 20)
    render_bench(run_benchmark(options, progress=lambda message: None), console)
