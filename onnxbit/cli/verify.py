"""`onnxbit verify`: check a converted model file on its own (integrity), or
against its original (agreement), before shipping it."""

from __future__ import annotations

from pathlib import Path

import click

from onnxbit.cli.groups import main


class VerifyCommandError(click.ClickException):
    """A user error (unreadable model, unusable inputs, onnxruntime failure):
    one `Error: ...` line, exit status 2 (1 means the models disagree)."""
    exit_code = 2


@main.command("verify")
@click.argument("models", nargs=-1, required=True, metavar="MODEL | ORIGINAL CONVERTED",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="With one MODEL: print the findings as one JSON object (for pipelines).")
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
def verify_command(models: tuple[Path, ...], as_json: bool, inputs: Path | None, rtol: float | None, threads: int,
                   rounds: int, seed: int) -> None:
    """Check a model before shipping it.

    \b
    onnxbit verify MODEL: checksums, packed codes, scales, shapes, attributes
      and external-data references of every onnxbit node, without running it;
      exit 1 when anything is wrong (each problem named by node).
    onnxbit verify ORIGINAL CONVERTED: run both on the same inputs; exit 1
      when they disagree beyond the tolerance.

    Exit status 2 when a model or the inputs cannot be used at all."""
    if len(models) == 1:
        given = [name for name, value in (("--inputs", inputs), ("--rtol", rtol)) if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} compare two models: verify ORIGINAL CONVERTED")
        _verify_one(models[0], as_json)
        return
    if len(models) != 2:
        raise click.UsageError(f"expected MODEL or ORIGINAL CONVERTED, got {len(models)} paths")
    if as_json:
        raise click.UsageError("--json applies to verify MODEL (one model)")
    _verify_pair(models[0], models[1], inputs, rtol, threads, rounds, seed)


class _IntegrityFailure(click.ClickException):
    """Problems were found and printed: exit status 1 without another message."""
    exit_code = 1

    def show(self, file=None) -> None:
        pass


def _verify_one(model: Path, as_json: bool) -> None:
    import json

    from onnxbit.errors import OnnxbitError
    from onnxbit.feeds import one_line
    from onnxbit.verify_model import render, verify_model_file

    try:
        report = verify_model_file(model)
    except OnnxbitError as exc:
        if as_json:
            click.echo(json.dumps({"model": str(model), "ok": False, "error": one_line(exc)}))
        raise VerifyCommandError(one_line(exc)) from None
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        render(report, click.echo)
    if not report.ok:
        raise _IntegrityFailure("")


def _verify_pair(original: Path, converted: Path, inputs: Path | None, rtol: float | None, threads: int,
                 rounds: int, seed: int) -> None:
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
    for warning in comparison.agreement_warnings():
        click.echo(warning, err=True)
    if not comparison.passes(rtol):
        raise click.ClickException(comparison.failure_message(rtol, origin) + why)
    click.echo(f"agreement within {rtol:g}: ok{why}")
