"""`onnxbit inspect`: show what a model holds and what it needs to run."""

from __future__ import annotations

import json
from pathlib import Path

import click

from onnxbit.cli.groups import main


@main.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect_command(model: Path, as_json: bool) -> None:
    """List MODEL's weight layers: precision, storage format, bits per weight, size.

    MODEL is validated first (tensor sizes, external data, graph order): a
    broken model is reported as one error line naming the node or tensor."""
    from onnxbit.errors import OnnxbitError
    from onnxbit.inspect_model import inspect_model

    try:
        summary = inspect_model(model)
    except OnnxbitError as exc:  # read_model and check_model name the file
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2))
    else:
        summary.render()
