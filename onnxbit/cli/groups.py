"""The `onnxbit` command group and its `bench` subgroup. Command modules
import these and attach themselves; nothing here imports a command module,
so there is no import cycle (onnxbit/cli/main.py puts them together)."""

from __future__ import annotations

import os
import sys

import click

from onnxbit import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxbit")
def main() -> None:
    """Convert exported ONNX models to packed ternary / low-bit weights for onnxruntime."""
    if not sys.stdout.isatty():
        # Per-layer tables folded into 80 columns are unreadable in CI logs and
        # files; with no terminal to fit, give rich room (COLUMNS still wins).
        os.environ.setdefault("COLUMNS", "150")


@main.group()
def bench() -> None:
    """Benchmarks: medians over interleaved runs, compared with onnxruntime's own ops."""
