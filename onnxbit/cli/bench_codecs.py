"""`onnxbit bench codecs`: single-thread codec throughput per ISA path."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from onnxbit.bench.codecs import results_as_dicts, run_codec_bench
from onnxbit.cli.groups import bench


@bench.command("codecs")
@click.option("--mb", default=64, show_default=True, type=click.IntRange(min=1),
              help="Megabytes of int8 codes (and of fp32 weights) per run.")
@click.option("--repeat", default=15, show_default=True, type=click.IntRange(min=1),
              help="Timed runs per operation and ISA; the median is reported.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True),
              help="Also write the results to this JSON file.")
def bench_codecs(mb: int, repeat: int, json_path: str | None) -> None:
    """Decode, encode and quantize+pack throughput (GB/s, one thread) for every ISA."""
    results = run_codec_bench(mb=mb, repeat=repeat)
    isas = list(dict.fromkeys(r.isa for r in results))
    metrics = list(dict.fromkeys((r.metric, r.reference) for r in results))
    rate = {(r.isa, r.metric): r.gb_per_s for r in results}
    table = Table(title=f"codec throughput, GB/s, one thread, median of {repeat} ({mb} MB)")
    table.add_column("operation")
    table.add_column("GB of")
    for isa in isas:
        table.add_column(isa, justify="right")
    for metric, reference in metrics:
        table.add_row(metric, reference, *(f"{rate[(isa, metric)]:.2f}" for isa in isas))
    Console().print(table)
    if json_path:
        with open(json_path, "w") as handle:
            json.dump({"mb": mb, "repeat": repeat, "results": results_as_dicts(results)}, handle, indent=2)
        click.echo(f"wrote {json_path}")
