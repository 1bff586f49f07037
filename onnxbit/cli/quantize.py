"""`onnxbit quantize`: convert an exported ONNX model to low-bit weights."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from onnxbit.cli.main import main
from onnxbit.config import PRESETS, TARGETS, ConfigError


@main.command("quantize")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="bitnet", show_default=True,
              help="Precision recipe used when no --config is given.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON per-layer precision config (see onnxbit.config).")
@click.option("--target", type=click.Choice(TARGETS), default="onnxbit", show_default=True,
              help="onnxbit: TernaryMatMul (needs the onnxbit library); ort: stock onnxruntime ops; "
                   "onnx: standard ONNX ops only.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the per-layer report as JSON.")
@click.option("--no-progress", is_flag=True, help="Do not show the progress bar.")
@click.option("--no-error-stats", is_flag=True, help="Skip the per-layer weight error (faster on big models).")
@click.option("-q", "--quiet", is_flag=True, help="Do not print the summary table.")
def quantize_command(model: Path, output: Path, preset: str, config_path: Path | None, target: str,
                     report_path: Path | None, no_progress: bool, no_error_stats: bool, quiet: bool) -> None:
    """Convert MODEL's MatMul/Gemm weights to ternary / low-bit storage, written to OUTPUT.

    OUTPUT is written atomically (a temporary file renamed into place); MODEL is
    never modified."""
    from onnxbit.convert import convert
    from onnxbit.passes.manager import ModelError

    try:
        result = convert(model, config=config_path, preset=preset, target=target, output_path=output,
                         report_path=report_path, progress=not no_progress and sys.stderr.isatty(),
                         measure_error=not no_error_stats)
    except (ConfigError, ModelError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    if not quiet:
        result.report.render()
    click.echo(f"wrote {output}")
