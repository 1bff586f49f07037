"""Entry point of the `onnxbit` command: the groups of cli/groups.py with
every command module of cli/commands.py attached."""

from onnxbit.cli import commands  # noqa: F401  (registers the commands on the groups)
from onnxbit.cli.groups import bench, main

__all__ = ["bench", "main"]
