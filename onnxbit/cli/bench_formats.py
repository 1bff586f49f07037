"""`onnxbit bench formats`: bits per weight of every storage format against the
entropy bound, codec throughput and session-creation time."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from onnxbit.cli.groups import bench


@bench.command("formats")
@click.option("--size", default=1024, show_default=True, type=click.IntRange(min=16),
              help="N = K of the synthetic tensors (speeds use twice that).")
@click.option("--repeat", default=5, show_default=True, type=click.IntRange(min=1),
              help="Timed runs per measurement; the median is reported.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True),
              help="Also write the results to this JSON file.")
def bench_formats(size: int, repeat: int, json_path: str | None) -> None:
    """Storage formats on the fixtures' QAT tensors, absmean-ternarized float weights and synthetic tensors."""
    from onnxbit import formats
    from onnxbit.bench.formats import run_formats_bench

    result = run_formats_bench(size, size, repeat)
    console = Console()
    sizes = Table(title="bits per weight, scales included (entropy bound: order-0 code entropy + scales)")
    from onnxbit.bench.formats import STORAGES

    for column in ("tensor", "K x N", "zeros", "entropy bound", *STORAGES, "smallest", "auto over bound"):
        sizes.add_column(column, justify="left" if column == "tensor" else "right")
    for t in result.tensors:
        best = t.best
        sizes.add_row(t.source, f"{t.k} x {t.n}", f"{t.zero_fraction:.1%}", f"{t.entropy_bits:.3f}",
                      *(f"{t.bits[name]:.3f}" for name in STORAGES), best,
                      f"{100 * (t.bits[formats.AUTO] / t.entropy_bits - 1):+.1f}%")
    console.print(sizes)
    speeds = Table(title=f"speed, one thread, ISA {result.isa}, median of {repeat}")
    for column in ("format", "encode GB/s (int8 codes in)", "decode GB/s (int8 codes out)", "session creation"):
        speeds.add_column(column, justify="left" if column == "format" else "right")
    for s in result.speeds:
        speeds.add_row(s.fmt, f"{s.encode_gb_per_s:.2f}", f"{s.decode_gb_per_s:.2f}", f"{s.session_ms:.1f} ms")
    console.print(speeds)
    if json_path:
        with open(json_path, "w") as handle:
            json.dump(result.as_dict(), handle, indent=2)
        click.echo(f"wrote {json_path}")
