"""`onnxbit calibrate`: choose each layer's precision on sample data under an accuracy budget."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from onnxbit.cli.groups import main
from onnxbit.config import CALIBRATION_PRESETS, PRESETS


@main.command("calibrate")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path),
              help=".npz with arrays named after the model inputs (samples along axis 0), or a folder of them.")
@click.option("--preset", type=click.Choice(sorted(CALIBRATION_PRESETS)),
              help="Goal: accuracy (int8, cosine>=0.999), balanced (int4/int8, cosine>=0.99) or memory "
                   "(ternary/int4/int8, cosine>=0.98); bitnet keeps float weights float (the result converts as "
                   "--preset bitnet does); --budget and --precisions override it.")
@click.option("--budget", help="Accuracy to keep: cosine>=X, max_rel<=X or top1>=X, against the float model's "
                               "outputs.  [default: the preset's, else cosine>=0.99]")
@click.option("--samples", type=click.IntRange(2), help="Use at most this many samples (every 5th is held out).")
@click.option("--precisions", help="Precisions the search may give a layer (float is always allowed).  "
                                   "[default: the preset's, else ternary,int4,int8]")
@click.option("--method", type=click.Choice(["gptq", "rtn"]), default="gptq", show_default=True,
              help="gptq: 4/8-bit codes chosen with error compensation on the samples' activations (kept in "
                   "OUTPUT's .codes.npz next to it); rtn: weights rounded to nearest at conversion.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Calibration file to write; `onnxbit quantize --calibration FILE` applies it.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a self-contained HTML page: error per layer and precision, the size/accuracy path.")
def calibrate_command(model: Path, data_path: Path, preset: str | None, budget: str | None, samples: int | None,
                      precisions: str | None, method: str,
                      output: Path, html_path: Path | None) -> None:
    """Measure each layer's sensitivity on MODEL and pick the smallest precisions meeting --budget."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from onnxbit.calibration import calibrate
    from onnxbit.errors import OnnxbitError

    goal = CALIBRATION_PRESETS.get(preset, {"budget": "cosine>=0.99", "precisions": ("ternary", "int4", "int8")})
    budget = budget or goal["budget"]
    chosen = [p.strip() for p in precisions.split(",") if p.strip()] if precisions else list(goal["precisions"])
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    try:
        with Progress(*columns, console=console, transient=True, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task("sensitivity", total=None)
            result = calibrate(model, data_path, budget, precisions=chosen, samples=samples, method=method,
                               preset=preset if preset in PRESETS else None,
                               progress=lambda what, done, total: bar.update(task, completed=done, total=total,
                                                                             description=what))
        result.write_json(output)
        if html_path is not None:
            from onnxbit.calibration.html import render_html
            from onnxbit.modelio.publish import Publication

            with Publication() as publication:
                publication.write_bytes(html_path, render_html(result, f"onnxbit calibration of {model.name}").encode())
                publication.commit()
    except OnnxbitError as exc:
        raise click.ClickException(str(exc)) from None
    result.render()
    click.echo(f"wrote {output}")
    if html_path is not None:
        click.echo(f"wrote {html_path}")
    if not result.met:
        raise click.ClickException(f"the budget {result.budget} is not met on the held-out samples even with "
                                   "every layer float")
