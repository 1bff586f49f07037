"""`onnxbit bench matmul`: TernaryMatMul against onnxruntime's own matmul ops."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from onnxbit.bench.matmul import (PEER_NAMES, VARIANT_NAMES, BenchmarkError, BenchOptions,
                                  MatMulShape, run_benchmark)
from onnxbit.cli.main import bench

_PEER_SHORT = {"fp32": "fp32", "int8": "int8", "nbits4": "NBits4", "nbits2": "NBits2"}
# Tables stay readable when piped (rich assumes 80 columns without a terminal).
_MIN_WIDTH = 140


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise click.BadParameter(f"{what} must be positive integers, got {text!r}")
    return values


def format_speedup(ratio: float) -> str:
    """Peer time / this time: x2.9 means 2.9 times faster than the peer."""
    return f"x{ratio:.1f}" if ratio >= 0.95 else f"x{ratio:.2f}"


def _ms(value: float) -> str:
    return f"{value:.4g}"


def _spread(quartiles: list[float], median: float) -> str:
    """Half the interquartile range relative to the median: how steady the runs were."""
    return f"±{50 * (quartiles[1] - quartiles[0]) / median:.0f}%"


def render(result: dict, console: Console) -> None:
    machine = result["machine"]
    llc = machine.get("last_level_cache_bytes")
    console.print(f"[bold]onnxbit bench matmul[/]  {machine['cpu']}, {machine['logical_cpus']} logical CPUs"
                  + (f", last-level cache {llc >> 20} MB" if llc else ""))
    console.print(f"DRAM read bandwidth ~{machine['dram_read_gb_per_s']:.1f} GB/s "
                  f"(1 thread, numpy sum of {machine['dram_probe_bytes'] >> 20} MB, median)  "
                  f"onnxruntime {machine['onnxruntime']}"
                  + (f"  onnxbit ISA {machine['onnxbit_isa']}" if machine.get("onnxbit_isa") else ""))
    start, end = machine.get("load_average_1min_at_start"), machine.get("load_average_1min_at_end")
    if start is not None and end is not None:
        # Only the start value predates this run's own load.
        busy = start > 0.5 * (machine["logical_cpus"] or 1)
        console.print(f"load average {start:.1f} at start, {end:.1f} at end"
                      + ("  [yellow](other processes were busy: multi-thread rows are unreliable)[/]"
                         if busy else ""))
    console.print(f"cold = next of N weight copies (>= {result['cold_bytes_per_variant'] >> 20} MB per "
                  "variant), hot = same session again; medians of interleaved rounds; "
                  "spread = half the cold interquartile range; xR = peer time / this time (cold)")
    console.print("weight MB = the model's initializer bytes, cold GB/s = those bytes / cold time "
                  "(kernels may stream a repacked layout of other size)")
    for run in result["runs"]:
        shape = run["shape"]
        peers_here = [row["name"] for row in run["variants"] if row["name"] in PEER_NAMES]
        table = Table(title=f"{shape['m']}x{shape['k']}x{shape['n']} (MxKxN), {run['threads']} thread"
                            f"{'s' if run['threads'] > 1 else ''}, {run['rounds']} rounds",
                      title_justify="left")
        table.add_column("variant", no_wrap=True)
        for header in ("weight MB", "copies", "cold ms", "spread", "hot ms", "cold GB/s"):
            table.add_column(header, justify="right")
        for name in peers_here:
            table.add_column(f"vs {_PEER_SHORT[name]}", justify="right")
        table.add_column("check")
        for row in run["variants"]:
            speedups = [format_speedup(row["speedup_cold"][p]) if p in row["speedup_cold"] else "-"
                        for p in peers_here]
            check = "ok" if row["accurate"] else f"[red]FAIL err {row['max_abs_error']:.3g} > {row['error_bound']:.3g}[/]"
            table.add_row(row["label"], f"{row['weight_bytes'] / 1e6:.3g}", str(row["copies"]),
                          _ms(row["cold_ms"]), _spread(row["cold_quartiles_ms"], row["cold_ms"]),
                          _ms(row["hot_ms"]), f"{row['cold_gb_per_s']:.2f}",
                          *speedups, check)
        console.print(table)


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
        options.threads = _int_list(threads, "--threads")
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
