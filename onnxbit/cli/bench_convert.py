"""`onnxbit bench convert`: how fast float weights become packed ternary."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from onnxbit.cli.main import bench


@bench.command("convert")
@click.option("--size", default=4096, show_default=True, type=click.IntRange(min=16),
              help="The layer is size x size float32 weights.")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(min=1),
              help="Interleaved timed runs per variant; the median is reported.")
@click.option("--error-stats", is_flag=True, help="Include the per-layer weight error computation.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True),
              help="Also write the results to this JSON file.")
def bench_convert(size: int, rounds: int, error_stats: bool, json_path: str | None) -> None:
    """Ternary conversion throughput (GB of fp32 weights per second, one layer)."""
    from onnxbit.bench.convert import results_as_dicts, run_convert_bench

    results = run_convert_bench(size=size, rounds=rounds, error_stats=error_stats)
    table = Table(title=f"ternary conversion of one {size}x{size} fp32 layer, median of {rounds}")
    for column in ("layout", "stage", "ms", "GB/s"):
        table.add_column(column, justify="right" if column in ("ms", "GB/s") else "left")
    for r in results:
        table.add_row(r.layout, r.stage, f"{r.median_ms:.1f}", f"{r.gb_per_s:.3f}")
    Console().print(table)
    if json_path:
        with open(json_path, "w") as handle:
            json.dump({"size": size, "rounds": rounds, "error_stats": error_stats,
                       "results": results_as_dicts(results)}, handle, indent=2)
        click.echo(f"wrote {json_path}")
