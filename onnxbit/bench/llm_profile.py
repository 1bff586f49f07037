"""Where decode time goes: onnxruntime's own profiler (SessionOptions.enable_profiling)
over greedy decode steps of a KV-cache LM, summed per op type. The prefill run is
excluded: only node events inside the later `model_run` spans count."""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

from onnxbit.bench.llm import CacheLayout, Generator, prompt


def decode_profile(path: Path, threads: int = 1, prompt_tokens: int = 128, steps: int = 16) -> dict[str, float]:
    """Share of decode node time per op type (fractions summing to 1), plus
    '_per_token_ms': node time per decode step in milliseconds."""
    import onnx
    import onnxruntime as ort

    from onnxbit.verify import needs_library

    layout = CacheLayout.of(path)
    with tempfile.TemporaryDirectory(prefix="onnxbit-profile-") as directory:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(directory) / "decode")
        if needs_library(onnx.load(str(path), load_external_data=False)):
            from onnxbit.runtime import InferenceSession

            session = InferenceSession(str(path), sess_options=options)
        else:
            session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        generator = Generator(session, layout)
        result, mask = generator.prefill(prompt(layout, prompt_tokens))
        for _ in range(steps):
            result, mask, _ = generator.step(result, mask)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session"
                  and e.get("name") == "model_run")[1:]  # the first run is the prefill
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        start = event["ts"]
        if any(low <= start <= high for low, high in runs):
            totals[event.get("args", {}).get("op_name", "?")] += event["dur"]
    whole = sum(totals.values()) or 1.0
    shares = {op: us / whole for op, us in sorted(totals.items(), key=lambda kv: -kv[1])}
    shares["_per_token_ms"] = whole / 1000.0 / max(1, len(runs))
    return shares


def render_profiles(profiles: dict[str, dict[str, float]], top: int = 6, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="decode time by op type (1 thread, onnxruntime profiler, node time only)")
    for column in ("model", "node ms/token", "largest shares"):
        table.add_column(column, justify="right" if column == "node ms/token" else "left")
    for name, shares in profiles.items():
        ops = [(op, share) for op, share in shares.items() if not op.startswith("_")][:top]
        table.add_row(name, f"{shares['_per_token_ms']:.2f}", ", ".join(f"{op} {share:.0%}" for op, share in ops))
    console.print(table)
