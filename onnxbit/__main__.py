"""`python -m onnxbit` runs the command line, like the `onnxbit` script."""

from onnxbit.cli.main import main

main()
