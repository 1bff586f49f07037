"""Benchmarks behind `onnxbit bench`: medians over interleaved runs."""
