"""`onnxbit bench llm`: prefill and decode speed and peak memory of a KV-cache LM and its conversions."""

from __future__ import annotations

import json
from pathlib import Path

import click

from onnxbit.cli.groups import bench
from onnxbit.cli.values import positive_ints


def _named_paths(values: tuple[str, ...]) -> dict[str, Path]:
    named = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"expected NAME=PATH, got {value!r}", param_hint="--converted")
        if not Path(path).is_file():
            raise click.BadParameter(f"{path}: no such file", param_hint="--converted")
        named[name] = Path(path)
    return named


@bench.command("llm")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--converted", multiple=True, metavar="NAME=PATH",
              help="Use this conversion instead of making it (int4-ort=..., ternary=...), or add another "
                   "variant under a new name. Repeatable.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the int4-ort and ternary conversions are written (reused when present). "
                   "Default: next to MODEL.")
@click.option("--threads", default="1,2", show_default=True, help="Comma-separated thread counts.")
@click.option("--prompt-tokens", type=click.IntRange(1), default=128, show_default=True)
@click.option("--decode-steps", type=click.IntRange(1), default=32, show_default=True,
              help="Greedy decode steps after each prefill (median per token).")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True,
              help="Prefill + decode runs of each variant per thread count (interleaved; medians shown).")
@click.option("--no-memory", is_flag=True, help="Skip the per-variant peak-memory processes.")
@click.option("--profile", is_flag=True,
              help="Also profile decode (1 thread, onnxruntime's profiler) and show each variant's time by op type.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the measurements as JSON.")
def bench_llm_command(model: Path, converted: tuple[str, ...], out_dir: Path | None, threads: str,
                      prompt_tokens: int, decode_steps: int, rounds: int, no_memory: bool,
                      profile: bool, json_path: Path | None) -> None:
    """Prefill and decode tokens/s (batch 1) of MODEL (a KV-cache causal LM), its int4 MatMulNBits conversion
    and its ternary conversion, at each thread count, with file sizes and peak memory."""
    from onnxbit.bench.llm import bench_llm, render
    from onnxbit.errors import OnnxbitError

    counts = tuple(positive_ints(threads, "--threads"))
    directory = out_dir if out_dir is not None else model.parent
    directory.mkdir(parents=True, exist_ok=True)
    try:
        result = bench_llm(model, directory, _named_paths(converted), counts, prompt_tokens, decode_steps, rounds,
                           memory=not no_memory)
    except OnnxbitError as exc:
        raise click.ClickException(str(exc)) from None
    render(result)
    saved = result.to_json()
    if profile:
        from onnxbit.bench.llm_profile import decode_profile, render_profiles

        profiles = {name: decode_profile(Path(path), 1, prompt_tokens, decode_steps)
                    for name, path in result.files.items()}
        render_profiles(profiles)
        saved["decode_profile"] = profiles
    if json_path is not None:
        json_path.write_text(json.dumps(saved, indent=2) + "\n")
