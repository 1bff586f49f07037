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
              help="Goal: accuracy (int8, cosine>=0.999), balanced (int4/int8, cosine>=0.99), memory "
                   "(ternary/int4/int8, cosine>=0.98) or performance (cosine>=0.99, only representations "
                   "measured at least as fast as float for each layer's shape on this CPU); bitnet keeps float weights float (the result converts as "
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
@click.option("--activations", type=click.Choice(["float", "static"]), default="float", show_default=True,
              help="static: give every ternary MatMul/Gemm layer a fixed int8 activation scale measured on the "
                   "calibration samples (TernaryMatMul act_quant=2) instead of float activations.")
@click.option("--act-range", type=click.Choice(["minmax", "percentile", "entropy", "mse"]), default="mse",
              show_default=True, help="How --activations static picks each layer's clipping range.")
@click.option("--act-percentile", type=click.FloatRange(0, 100, min_open=True), default=99.99, show_default=True,
              help="The percentile of |x| that --act-range percentile clips at.")
@click.option("--target", type=click.Choice(["onnxbit", "ort", "onnx"]), default="onnxbit", show_default=True,
              help="With --preset performance: the target whose ops are timed (convert with the same one).")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True,
              help="With --preset performance: onnxruntime threads the timings use.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a self-contained HTML page: error per layer and precision, the size/accuracy path.")
def calibrate_command(model: Path, data_path: Path, preset: str | None, budget: str | None, samples: int | None,
                      precisions: str | None, method: str, output: Path, activations: str, act_range: str,
                      act_percentile: float, target: str, threads: int, html_path: Path | None) -> None:
    """Measure each layer's sensitivity on MODEL and pick the smallest precisions meeting --budget."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from onnxbit.calibration import calibrate
    from onnxbit.errors import OnnxbitError

    goal = CALIBRATION_PRESETS.get(preset, {"budget": "cosine>=0.99", "precisions": ("ternary", "int4", "int8")})
    budget = budget or goal["budget"]
    chosen = [p.strip() for p in precisions.split(",") if p.strip()] if precisions else list(goal["precisions"])
    speed = None
    if goal.get("speed"):
        from onnxbit.calibration.speed import LayerSpeed

        speed = LayerSpeed(target, threads)
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    try:
        with Progress(*columns, console=console, transient=True, disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task("sensitivity", total=None)
            data = _calibration_data(model, data_path, samples)
            result = calibrate(model, data, budget, precisions=chosen, samples=samples, method=method,
                               preset=preset if preset in PRESETS else None, speed=speed,
                               int8_activations=goal.get("activations") == "int8" and activations != "static",
                               progress=lambda what, done, total: bar.update(task, completed=done, total=total,
                                                                             description=what))
            if activations == "static":
                from onnxbit.calibration.activations import add_static_activations, check_static_activations

                bar.update(task, description="activation statistics")
                add_static_activations(model, result, data, act_range, act_percentile)
                check_static_activations(model, result, data,
                                         progress=lambda what, done, total: bar.update(
                                             task, completed=done, total=total, description=what))
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
    if result.activation_choice:
        choice = result.activation_choice
        for step in choice["reverted"]:
            click.echo(f"{step['layer']}: static int8 activations -> float ({step['why']})")
        click.echo(f"static int8 activations on {len(result.activations)} layer(s): {result.budget.metric} "
                   f"{choice['calibration_value']:.5g} on calibration samples, {choice['holdout_value']:.5g} "
                   "held out (the converted model, run in onnxruntime)")
    click.echo(f"wrote {output}")
    if html_path is not None:
        click.echo(f"wrote {html_path}")
    if not result.met:
        raise click.ClickException(f"the budget {result.budget} is not met on the held-out samples even with "
                                   "every layer float")


def _calibration_data(model: Path, data_path: Path, samples: int | None):
    """The calibration/held-out split, loaded once for the search and the statistics."""
    from onnxbit.calibration import load_calibration_data
    from onnxbit.convert import load_model

    proto, _ = load_model(model)
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    return load_calibration_data(data_path, inputs, samples)
