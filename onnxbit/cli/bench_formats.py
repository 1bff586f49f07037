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
    from onnxbit.bench.formats import DECODE_GOAL_GB_PER_S, GAP_GOAL, STORAGES

    sizes = Table(title="bits per weight, scales included. Bound per tensor: n·H(p̂) bits + 32 bits a scale "
                        "(H over the tensor's empirical -1/0/+1 frequencies, order 0). "
                        f"Goal: auto <= base3 and auto within {GAP_GOAL:.0%} of the bound")
    for column in ("tensor", "K x N", "zeros", "entropy bound", *STORAGES, "smallest", "auto over bound", "goal"):
        sizes.add_column(column, justify="left" if column == "tensor" else "right")
    for t in result.tensors:
        sizes.add_row(t.source, f"{t.k} x {t.n}", f"{t.zero_fraction:.1%}", f"{t.entropy_bits:.3f}",
                      *(f"{t.bits[name]:.3f}" for name in STORAGES), t.best, f"{100 * t.auto_gap:+.1f}%",
                      "pass" if t.meets_goals else "FAIL")
    console.print(sizes)
    speeds = Table(title=f"speed, one thread, ISA {result.isa}, {repeat} runs: median / fastest (the fastest "
                         "is what an uncontended core does); GB/s of int8 codes in (encode) or out (decode; "
                         f"goal >= {DECODE_GOAL_GB_PER_S:g}); session creation (median) with one weight at a "
                         "third zeros")
    for column in ("format", "zeros", "encode GB/s", "decode GB/s", "session creation"):
        speeds.add_column(column, justify="left" if column == "format" else "right")
    for s in sorted(result.speeds, key=lambda s: formats.OP_FORMATS.index(s.fmt)):
        speeds.add_row(s.fmt, f"{s.zero_fraction:.0%}", f"{s.encode_gb_per_s:.2f} / {s.encode_best_gb_per_s:.2f}",
                       f"{s.decode_gb_per_s:.2f} / {s.decode_best_gb_per_s:.2f}",
                       "" if s.session_ms is None else f"{s.session_ms:.1f} ms")
    console.print(speeds)
    if json_path:
        with open(json_path, "w") as handle:
            json.dump(result.as_dict(), handle, indent=2)
        click.echo(f"wrote {json_path}")
