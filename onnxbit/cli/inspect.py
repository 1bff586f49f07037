"""`onnxbit inspect`: show what a model holds and what it needs to run."""

from __future__ import annotations

import json
from pathlib import Path

import click

from onnxbit.cli.main import main


@main.command("inspect")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect_command(model: Path, as_json: bool) -> None:
    """List MODEL's weight layers: precision, storage format, bits per weight, size."""
    from onnxbit.inspect_model import inspect_model

    try:
        summary = inspect_model(model)
    except Exception as exc:  # protobuf decode errors have no common base class
        raise click.ClickException(f"cannot read {model}: {exc}") from None
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2))
    else:
        summary.render()
