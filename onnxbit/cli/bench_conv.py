"""`onnxbit bench conv`: TernaryConv and the integer Conv choices against
onnxruntime's fp32 Conv on ResNet-like and MobileNet-like layer shapes."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from onnxbit.cli.groups import bench
from onnxbit.cli.values import positive_ints


@bench.command("conv")
@click.option("--threads", default="1,2", show_default=True, metavar="N,...", help="onnxruntime thread counts.")
@click.option("--rounds", type=click.IntRange(min=1), default=7, show_default=True,
              help="Interleaved runs per variant and shape (the median is reported).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as JSON to this file.")
@click.option("--quick", is_flag=True, help="Two small shapes, 3 rounds: a smoke run, not a measurement.")
@click.option("--cpu-time", is_flag=True,
              help="Time one-thread runs in thread CPU time (steady on a loaded machine); others stay wall time.")
def bench_conv(threads: str, rounds: int, json_path: Path | None, quick: bool, cpu_time: bool) -> None:
    """Time com.onnxbit::TernaryConv (int8 and float activations), DequantizeLinear
    int8/int4 + Conv and ConvInteger against fp32 Conv."""
    from onnxbit.bench.conv import QUICK_SHAPES, SHAPES, render, run_benchmark

    counts = positive_ints(threads, "--threads")
    result = run_benchmark(QUICK_SHAPES if quick else SHAPES, counts, 3 if quick else rounds,
                           progress=lambda msg: click.echo(msg, err=True), cpu_time=cpu_time)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 170))
    render(result, console)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))
        click.echo(f"wrote {json_path}", err=True)
