"""`onnxbit bench matmul`: TernaryMatMul against onnxruntime's own matmul ops."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from onnxbit.bench.matmul import (VARIANT_NAMES, BenchmarkError, BenchOptions,
                                  MatMulShape, run_benchmark)
from onnxbit.bench.render_matmul import format_speedup, render  # noqa: F401  (format_speedup re-exported)
from onnxbit.cli.groups import bench
from onnxbit.cli.values import positive_ints

# Tables stay readable when piped (rich assumes 80 columns without a terminal).
_MIN_WIDTH = 140


@bench.command("matmul")
@click.option("--shapes", metavar="MxKxN,...",
              help="Comma-separated shapes (default 1x4096x4096,8x4096x4096,128x4096x4096,1x2048x8192).")
@click.option("--threads", default="1,2", show_default=True, metavar="N,...",
              help="onnxruntime thread counts; each runs in its own worker process with one global pool.")
@click.option("--repeat", type=click.IntRange(min=0), default=None,
              help="Interleaved rounds per shape (default: as many as fit ~9 s, 5..60; 0 = that default).")
@click.option("--variants", metavar="NAME,...",
              help=f"Subset of variants: {', '.join(VARIANT_NAMES)} (default all).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as JSON to this file.")
@click.option("--quick", is_flag=True, help="Small shapes and 3 rounds: a fast smoke run, not a measurement.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights and inputs.")
def bench_matmul(shapes: str | None, threads: str, repeat: int | None, variants: str | None,
                 json_path: Path | None, quick: bool, seed: int) -> None:
    """Time com.onnxbit::TernaryMatMul against fp32 MatMul, int8 dynamic
    quantization and MatMulNBits 4/2-bit, with cold (DRAM) and hot weights."""
    options = BenchOptions.quick() if quick else BenchOptions()
    try:
        if shapes:
            options.shapes = [MatMulShape.parse(s) for s in shapes.split(",") if s.strip()]
        options.threads = positive_ints(threads, "--threads")
        if repeat:
            options.repeat = repeat
        if variants:
            options.variants = [v.strip() for v in variants.split(",") if v.strip()]
        options.seed = seed
        result = run_benchmark(options, progress=lambda msg: click.echo(msg, err=True))
    except BenchmarkError as exc:
        raise click.ClickException(str(exc)) from None
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, _MIN_WIDTH))
    render(result, console)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))
        click.echo(f"wrote {json_path}", err=True)
    failures = [f"{row['label']} at {run['shape']['m']}x{run['shape']['k']}x{run['shape']['n']}"
                for run in result["runs"] for row in run["variants"] if not row["accurate"]]
    if failures:
        raise click.ClickException("outputs outside their error bound: " + "; ".join(failures))
