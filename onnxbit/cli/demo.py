"""`onnxbit demo`: convert the bundled sample model, compare it with the original."""

from __future__ import annotations

from pathlib import Path

import click

from onnxbit.cli.groups import main
from onnxbit.config import TARGETS


@main.command("demo")
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Convert this model instead of the bundled BitNet sample.")
@click.option("--inputs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=".npz of inputs (NAME or NAME_0, NAME_1, ...); default: the sample's, or synthesized.")
@click.option("--target", type=click.Choice(TARGETS), default="onnxbit", show_default=True)
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
@click.option("--no-layer", is_flag=True, help="Skip the timing of one deployment-sized layer.")
def demo_command(model: Path | None, inputs: Path | None, target: str, threads: int, no_layer: bool) -> None:
    """Convert a sample BitNet model and print size, agreement and speed side by side."""
    from onnxbit.demo import run_demo
    from onnxbit.errors import OnnxbitError
    from onnxbit.feeds import one_line

    try:
        run_demo(model, inputs, target=target, threads=threads, layer=not no_layer)
    except (OnnxbitError, FileNotFoundError) as exc:
        raise click.ClickException(one_line(exc)) from None
