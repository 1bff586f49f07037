"""`onnxbit verify`: check a converted model against its original before shipping it."""

from __future__ import annotations

from pathlib import Path

import click

from onnxbit.cli.groups import main


class VerifyCommandError(click.ClickException):
    """A user error (unreadable model, unusable inputs, onnxruntime failure):
    one `Error: ...` line, exit status 2 (1 means the models disagree)."""
    exit_code = 2


@main.command("verify")
@click.argument("original", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("converted", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--inputs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=".npz of inputs (NAME or NAME_0, NAME_1, ...); default: synthesized from the graph "
                   "(symbolic dims shared, ids below their embedding's rows, masks of ones, position aranges) "
                   "and checked on the original model.")
@click.option("--rtol", type=click.FloatRange(min=0), default=None,
              help="Largest accepted max|diff| / max|original| over every output. Default: from the lowest "
                   "precision in CONVERTED: 1e-4 float or exact QAT fold, 0.05 int8, 0.2 int4, "
                   "1.0 ternary/2-bit post-training quantization.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
@click.option("--rounds", type=click.IntRange(1), default=20, show_default=True,
              help="Timed runs of each model (interleaved; the median is shown).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of synthesized inputs.")
def verify_command(original: Path, converted: Path, inputs: Path | None, rtol: float | None, threads: int,
                   rounds: int, seed: int) -> None:
    """Run ORIGINAL and CONVERTED on the same inputs; exit 1 when they disagree beyond the tolerance,
    2 when a model or the inputs cannot be used."""
    from onnxbit.errors import OnnxbitError
    from onnxbit.feeds import one_line
    from onnxbit.verify import compare, render

    try:
        comparison = compare(original, converted, inputs, threads=threads, rounds=rounds, seed=seed)
    except OnnxbitError as exc:
        raise VerifyCommandError(one_line(exc)) from None
    render(comparison)
    if rtol is None:
        tolerance = comparison.tolerance
        rtol, origin, why = tolerance.rtol, "the default rtol", f" ({tolerance.describe()})"
    else:
        origin, why = "--rtol", ""
    if not comparison.passes(rtol):
        raise click.ClickException(comparison.failure_message(rtol, origin) + why)
    click.echo(f"agreement within {rtol:g}: ok{why}")
