"""`onnxbit bench convert`: how fast float weights become packed ternary."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from onnxbit.cli.groups import bench


@bench.command("convert")
@click.option("--size", default=4096, show_default=True, type=click.IntRange(min=16),
              help="The layer is size x size float32 weights.")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(min=1),
              help="Interleaved timed runs per variant; the median is reported.")
@click.option("--error-stats", is_flag=True, help="Include the per-layer weight error computation.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True),
              help="Also write the results to this JSON file.")
@click.option("--model-size", help="Instead: convert a float model of this size (e.g. 2.2G) kept in external data, "
                                   "with every preset and target, and report peak memory and time.")
@click.option("--tmp-dir", type=click.Path(file_okay=False, exists=True),
              help="Where --model-size writes its model (needs about twice the size free).")
def bench_convert(size: int, rounds: int, error_stats: bool, json_path: str | None, model_size: str | None,
                  tmp_dir: str | None) -> None:
    """Ternary conversion throughput (GB of fp32 weights per second, one layer),
    or with --model-size, peak memory and time of whole-model conversions."""
    if model_size is not None:
        _large_model(model_size, size, json_path, tmp_dir)
        return
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


def _large_model(model_size: str, size: int, json_path: str | None, tmp_dir: str | None) -> None:
    from pathlib import Path

    from onnxbit.bench.large_model import parse_size, results_as_dicts, run_large_model_bench
    from onnxbit.report import human_bytes

    try:
        nbytes = parse_size(model_size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--model-size") from None
    console = Console()
    results = run_large_model_bench(nbytes, size=size, folder=Path(tmp_dir) if tmp_dir else None,
                                    progress=lambda message: console.print(message, style="dim"))
    first = results[0]
    table = Table(title=f"converting a {human_bytes(first.input_bytes)} float32 model in external data "
                        f"({size}x{size} layers), one process per row")
    for column in ("preset", "target", "layers", "output", "peak RSS", "seconds", "predicted s", "time / predicted"):
        table.add_column(column, justify="left" if column in ("preset", "target") else "right")
    for r in results:
        table.add_row(r.preset, r.target, str(r.layers_converted), human_bytes(r.output_bytes),
                      human_bytes(r.peak_rss_bytes), f"{r.seconds:.1f}", f"{r.predicted_seconds:.1f}",
                      f"{r.time_ratio:.2f}")
    console.print(table)
    console.print("predicted = converted layers x the pack pass's time on one layer held in memory "
                  "(quantize + pack + emit, no file I/O)", style="dim")
    if json_path:
        with open(json_path, "w") as handle:
            json.dump({"model_size": model_size, "size": size, "results": results_as_dicts(results)}, handle, indent=2)
        click.echo(f"wrote {json_path}")
