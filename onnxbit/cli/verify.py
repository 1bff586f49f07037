"""`onnxbit verify`: check a converted model against its original before shipping it."""

from __future__ import annotations

from pathlib import Path

import click

from onnxbit.cli.main import main


@main.command("verify")
@click.argument("original", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("converted", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--inputs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=".npz of inputs (NAME or NAME_0, NAME_1, ...); default: synthesized from the input types.")
@click.option("--rtol", type=float, default=1e-4, show_default=True,
              help="Largest accepted max|diff| / max|original| over every output.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
@click.option("--rounds", type=click.IntRange(1), default=20, show_default=True,
              help="Timed runs of each model (interleaved; the median is shown).")
def verify_command(original: Path, converted: Path, inputs: Path | None, rtol: float, threads: int,
                   rounds: int) -> None:
    """Run ORIGINAL and CONVERTED on the same inputs; exit 1 when they disagree beyond --rtol."""
    import onnx

    from onnxbit.verify import compare, load_feeds, render

    feeds = None
    if inputs is not None:
        model = onnx.load(str(original), load_external_data=False)
        initializers = {t.name for t in model.graph.initializer}
        try:
            feeds = load_feeds(inputs, [i.name for i in model.graph.input if i.name not in initializers])
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    comparison = compare(original, converted, feeds, threads=threads, rounds=rounds)
    render(comparison)
    if comparison.worst_rel > rtol:
        raise click.ClickException(f"outputs differ by {comparison.worst_rel:.3g} relative, more than --rtol {rtol:g}")
    click.echo(f"agreement within {rtol:g}: ok")
