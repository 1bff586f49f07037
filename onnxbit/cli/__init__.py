"""The `onnxbit` command line: one module a command, assembled in main.py."""
