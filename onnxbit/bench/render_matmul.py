"""Tables of `onnxbit bench matmul` results (used by the command and by `onnxbit demo`)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from onnxbit.bench.matmul import PEER_NAMES

_PEER_SHORT = {"fp32": "fp32", "int8": "int8", "nbits4": "NBits4", "nbits2": "NBits2"}


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
                  f"(1 thread, numpy max over {machine['dram_probe_bytes'] >> 20} MB, median)  "
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
        # The roofline of a weight-streaming call: the probe is single-threaded.
        roofline = run["threads"] == 1 and machine.get("dram_read_gb_per_s")
        if roofline:
            table.add_column("% DRAM", justify="right")
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
                          *([f"{100 * row['cold_gb_per_s'] / roofline:.0f}%"] if roofline else []),
                          *speedups, check)
        console.print(table)
    _render_scaling(result["runs"], console)


def _render_scaling(runs: list[dict], console: Console) -> None:
    """Cold time at 1 thread / cold time at N threads, per shape and variant,
    onnxruntime's own ops beside ours: what the machine lets any kernel gain
    from more threads. Thread counts run one after another, not interleaved."""
    single = {(tuple(r["shape"].values()), v["name"]): v["cold_ms"]
              for r in runs if r["threads"] == 1 for v in r["variants"]}
    rows = [(r, v) for r in runs if r["threads"] > 1 for v in r["variants"]
            if (tuple(r["shape"].values()), v["name"]) in single]
    if not rows:
        return
    table = Table(title="thread scaling: cold ms at 1 thread / cold ms at N threads (ideal = N)",
                  title_justify="left")
    for header in ("shape", "threads", "variant", "scaling"):
        table.add_column(header, justify="right" if header in ("threads", "scaling") else "left")
    for run, row in rows:
        shape = run["shape"]
        ratio = single[(tuple(shape.values()), row["name"])] / row["cold_ms"]
        table.add_row(f"{shape['m']}x{shape['k']}x{shape['n']}", str(run["threads"]), row["label"], f"{ratio:.2f}x")
    console.print(table)
