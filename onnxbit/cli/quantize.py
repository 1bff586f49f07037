"""`onnxbit quantize`: convert an exported ONNX model to low-bit weights."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from onnxbit.cli.groups import main
from onnxbit.config import PRESETS, TARGETS


@main.command("quantize")
# Paths are checked by the converter, whose errors name the problem in one line.
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="bitnet", show_default=True,
              help="Precision recipe used when no --config is given: bitnet converts only QAT-proven ternary "
                   "layers (float weights stay float); int8, int4 quantize float weights; ternary "
                   "ternarizes them (large accuracy loss without ternary training); accuracy, balanced, memory and "
                   "performance are goal presets for float models (README).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON or TOML per-layer precision config (see onnxbit.config).")
@click.option("--calibration", "calibration_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Per-layer precisions chosen by `onnxbit calibrate` (instead of --preset / --config).")
@click.option("--target", type=click.Choice(TARGETS), default="onnxbit", show_default=True,
              help="onnxbit: TernaryMatMul (needs the onnxbit library); ort: stock onnxruntime ops; "
                   "onnx: standard ONNX ops only.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the per-layer report as JSON.")
@click.option("--no-progress", is_flag=True, help="Do not show the progress bar.")
@click.option("--no-error-stats", is_flag=True, help="Skip the per-layer weight error (faster on big models).")
@click.option("--external-data/--no-external-data", "external_data", default=None,
              help="Keep the output's tensors in OUTPUT.data next to it (default: only when 2 GB or more).")
@click.option("--allow-noop", is_flag=True,
              help="When no layer is converted, still write OUTPUT (the input unchanged) and exit 0.")
@click.option("--strict", is_flag=True,
              help="Fail (writing nothing) when a converted layer loses much accuracy (weight SQNR < 15 dB).")
@click.option("-q", "--quiet", is_flag=True, help="Do not print the summary table.")
def quantize_command(model: Path, output: Path, preset: str, config_path: Path | None,
                     calibration_path: Path | None, target: str,
                     report_path: Path | None, no_progress: bool, no_error_stats: bool,
                     external_data: bool | None, strict: bool, allow_noop: bool, quiet: bool) -> None:
    """Convert MODEL's MatMul/Gemm weights to ternary / low-bit storage, written to OUTPUT.

    MODEL and its external-data files are never modified, and no output may be
    one of them. OUTPUT, its data file and the --report are written in full to
    temporary files, then renamed into place together: after an error or a
    signal, every destination is as it was.

    A conversion that converts no layer writes nothing and exits 1, saying why
    in one line, unless --allow-noop is given (then it writes the unchanged
    model and exits 0): a no-op must never look like a success."""
    from onnxbit.convert import convert
    from onnxbit.errors import OnnxbitError
    from onnxbit.modelio.publish import Interrupted

    try:
        config = config_path
        if calibration_path is not None:
            if config_path is not None:
                raise click.UsageError("give --config or --calibration, not both")
            from onnxbit.calibration.result import load_calibration

            config = load_calibration(calibration_path)
        result = convert(model, config=config, preset=preset, target=target, output_path=output,
                         report_path=report_path, progress=not no_progress and sys.stderr.isatty(),
                         measure_error=not no_error_stats, external_data=external_data, strict=strict,
                         write_noop=allow_noop)
    except OnnxbitError as exc:
        raise click.ClickException(str(exc)) from None
    except Interrupted as exc:
        click.echo(f"Error: {exc}; nothing was written", err=True)
        sys.exit(128 + exc.signum)
    if not quiet:
        result.report.render()
    if not result.report.converted and not allow_noop:
        from onnxbit.convert import noop_summary

        click.echo(f"Error: {noop_summary(result.report.layers)}; nothing written (--allow-noop writes the "
                   "unchanged model and exits 0)", err=True)
        sys.exit(1)
    for path in result.written:
        click.echo(f"wrote {path}")
    if report_path is not None:
        click.echo(f"wrote {report_path}")
