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
@click.option("--precisions", help="Precisions the search may give a layer, from binary, ternary, int2, int4, int8 "
                                   "(float is always allowed).  "
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
@click.option("--png", "png_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the same two charts as a PNG picture (needs matplotlib: pip install 'onnxbit[plot]').")
def calibrate_command(model: Path, data_path: Path, preset: str | None, budget: str | None, samples: int | None,
                      precisions: str | None, method: str, output: Path, activations: str, act_range: str,
                      act_percentile: float, target: str, threads: int, html_path: Path | None,
                      png_path: Path | None) -> None:
    """Measure each layer's sensitivity on MODEL and pick the smallest precisions meeting --budget."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from onnxbit.calibration import calibrate
    from onnxbit.calibration.result import DEFAULT_PRECISIONS
    from onnxbit.errors import OnnxbitError

    goal = CALIBRATION_PRESETS.get(preset, {"budget": "cosine>=0.99", "precisions": DEFAULT_PRECISIONS})
    budget = budget or goal["budget"]
    chosen = [p.strip() for p in precisions.split(",") if p.strip()] if precisions else list(goal["precisions"])
    speed = None
    if goal.get("speed"):
        from onnxbit.calibration.speed import LayerSpeed

        speed = LayerSpeed(target, threads)
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    try:
        # Before the search, which can take minutes: a bad output path or a missing
        # matplotlib fails now, with nothing written.
        _check_output_paths(model, {"-o": output, "--html": html_path, "--png": png_path})
        if png_path is not None:
            from onnxbit.calibration.png import require_matplotlib

            require_matplotlib()
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
        _write_pictures(result, f"onnxbit calibration of {model.name}", html_path, png_path)
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
    for picture in (html_path, png_path):
        if picture is not None:
            click.echo(f"wrote {picture}")
    if not result.met:
        raise click.ClickException(f"the budget {result.budget} is not met on the held-out samples even with "
                                   "every layer float")


def _check_output_paths(model: Path, outputs: dict[str, Path | None]) -> None:
    """OutputPathError when an output is the input model (or its external data) or another output."""
    import onnx

    from onnxbit.modelio.paths import check_outputs, input_files

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception:
        proto = onnx.ModelProto()  # unreadable: the search names the problem; still never write over it
    check_outputs(input_files(model, proto), {role: path for role, path in outputs.items() if path is not None})


def _write_pictures(result, title: str, html_path: Path | None, png_path: Path | None) -> None:
    """The HTML page and the PNG, published together: both or neither."""
    from onnxbit.modelio.publish import Publication

    pictures = {}
    if html_path is not None:
        from onnxbit.calibration.html import render_html

        pictures[html_path] = render_html(result, title).encode()
    if png_path is not None:
        from onnxbit.calibration.png import render_png

        pictures[png_path] = render_png(result, title)
    if pictures:
        with Publication() as publication:
            for path, data in pictures.items():
                publication.write_bytes(path, data)
            publication.commit()


def _calibration_data(model: Path, data_path: Path, samples: int | None):
    """The calibration/held-out split, loaded once for the search and the statistics."""
    from onnxbit.calibration import load_calibration_data
    from onnxbit.convert import load_model

    proto, _ = load_model(model)
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    return load_calibration_data(data_path, inputs, samples)
