"""`onnxbit bench llm MODEL`: a causal LM with a KV cache as it is used for
generation, for the original graph, its `--preset int4 --target ort`
conversion (onnxruntime's MatMulNBits) and its default conversion (BitNet QAT
chains -> TernaryMatMul), plus any conversion the caller names.

For each thread count it measures, per variant: the prefill of a prompt
(default 128 tokens, batch 1) and greedy decode steps that feed the KV cache
back (the `present` outputs become the next `past` inputs as OrtValues, so
no cache copy is timed). Variants alternate round by round in one process
and medians are reported. The sessions keep onnxruntime's default of
spinning pool workers, as a deployed decoder runs: with spinning off, a
two-thread decode step of the 0.7B BitNet model took 1.2-1.6x as long
(every op's parallel section waits for a worker to wake). Before each
variant's round the bench sleeps SPIN_SETTLE_S, so that the workers of the
variant before have stopped spinning and do not take its cores. Peak memory
is measured per variant in a fresh process (VmHWM after loading the
session, one prefill and the decode steps), so the peaks do not mix.

The model must follow the export convention of models/export_bitnet_llm.py
(and of optimum's decoder exports): inputs `input_ids`, `attention_mask`
[batch, past + sequence] and `past_key_values.{i}.key|value`
[batch, kv_heads, past, head_dim]; outputs `logits` and
`present.{i}.key|value`.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from onnxbit.bench.timing import SPIN_SETTLE_S, rotation
from onnxbit.errors import OnnxbitError

PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")


class LlmModelError(OnnxbitError):
    """The model does not have the KV-cache interface `bench llm` drives."""


@dataclass(frozen=True)
class CacheLayout:
    """Names and shapes of a KV-cache decoder's inputs and outputs."""

    past: tuple[str, ...]
    present: tuple[str, ...]
    kv_heads: int
    head_dim: int
    vocab: int | None

    @classmethod
    def of(cls, path: Path) -> "CacheLayout":
        proto = onnx.load(str(path), load_external_data=False)
        initializers = {t.name for t in proto.graph.initializer}
        inputs = {i.name: i for i in proto.graph.input if i.name not in initializers}
        outputs = {o.name: o for o in proto.graph.output}
        missing = [n for n in ("input_ids", "attention_mask") if n not in inputs]
        if missing or "logits" not in outputs:
            raise LlmModelError(f"{path}: bench llm needs inputs input_ids and attention_mask and output logits "
                                f"(missing: {', '.join(missing + ([] if 'logits' in outputs else ['logits']))})")
        past = sorted((n for n in inputs if PAST.match(n)),
                      key=lambda n: (int(PAST.match(n).group(1)), PAST.match(n).group(2)))
        if not past:
            raise LlmModelError(f"{path}: no past_key_values.<layer>.key/value inputs: not a KV-cache export")
        present = tuple("present." + n[len("past_key_values."):] for n in past)
        absent = [n for n in present if n not in outputs]
        if absent:
            raise LlmModelError(f"{path}: outputs {', '.join(absent[:3])} missing for the past inputs")
        others = sorted(set(inputs) - set(past) - {"input_ids", "attention_mask"})
        if others:
            raise LlmModelError(f"{path}: inputs bench llm does not know how to feed: {', '.join(others)}")
        dims = inputs[past[0]].type.tensor_type.shape.dim
        if len(dims) != 4 or not (dims[1].HasField("dim_value") and dims[3].HasField("dim_value")):
            raise LlmModelError(f"{path}: {past[0]} should be [batch, kv_heads, past, head_dim] with kv_heads and "
                                "head_dim fixed")
        logits = outputs["logits"].type.tensor_type.shape.dim
        vocab = logits[-1].dim_value if len(logits) and logits[-1].HasField("dim_value") else None
        return cls(tuple(past), present, dims[1].dim_value, dims[3].dim_value, vocab)


class Generator:
    """Prefill + greedy decode with the cache kept in OrtValues between steps."""

    def __init__(self, session, layout: CacheLayout):
        self.session = session
        self.layout = layout
        self.outputs = ["logits", *layout.present]

    def _ortvalue(self, array: np.ndarray):
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(array)

    def prefill(self, ids: np.ndarray):
        empty = np.zeros((ids.shape[0], self.layout.kv_heads, 0, self.layout.head_dim), dtype=np.float32)
        mask = np.ones_like(ids)
        feeds = {"input_ids": self._ortvalue(ids), "attention_mask": self._ortvalue(mask),
                 **{name: self._ortvalue(empty) for name in self.layout.past}}
        return self.session.run_with_ort_values(self.outputs, feeds), mask

    def step(self, result, mask: np.ndarray):
        token = result[0].numpy()[:, -1].argmax(-1)[:, None].astype(np.int64)
        mask = np.concatenate([mask, np.ones_like(token)], axis=1)
        feeds = {"input_ids": self._ortvalue(token), "attention_mask": self._ortvalue(mask),
                 **dict(zip(self.layout.past, result[1:]))}
        return self.session.run_with_ort_values(self.outputs, feeds), mask, token


def generate(session, layout: CacheLayout, ids: np.ndarray, steps: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Greedy tokens and each step's last-position logits (prefill's first)."""
    generator = Generator(session, layout)
    result, mask = generator.prefill(ids)
    logits = [result[0].numpy()[:, -1]]
    tokens = []
    for _ in range(steps):
        result, mask, token = generator.step(result, mask)
        tokens.append(token)
        logits.append(result[0].numpy()[:, -1])
    return (np.concatenate(tokens, axis=1) if tokens else np.zeros((ids.shape[0], 0), np.int64)), logits


def uses_library(path: Path) -> bool:
    from onnxbit.verify import needs_library

    return needs_library(onnx.load(str(path), load_external_data=False))


def open_session(path: Path, threads: int, library: bool | None = None):
    """library: whether the model needs the onnxbit ops (None: read the model to find out;
    the memory runner passes it in, since reading a single-file model loads all its weights)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if uses_library(path) if library is None else library:
        from onnxbit.runtime import InferenceSession

        return InferenceSession(str(path), sess_options=options)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def prompt(layout: CacheLayout, length: int, seed: int = 0) -> np.ndarray:
    high = layout.vocab if layout.vocab else 1000
    return np.random.default_rng(seed).integers(3, max(4, high), size=(1, length), dtype=np.int64)


@dataclass
class VariantTiming:
    variant: str
    threads: int
    prefill_ms: float
    decode_ms_per_token: float

    @property
    def decode_tokens_per_s(self) -> float:
        return 1000.0 / self.decode_ms_per_token


def time_variants(models: dict[str, Path], threads: int, prompt_tokens: int, decode_steps: int,
                  rounds: int) -> list[VariantTiming]:
    """Prefill and decode of every variant, alternating variant by variant each round."""
    layouts = {name: CacheLayout.of(path) for name, path in models.items()}
    sessions = {name: open_session(path, threads) for name, path in models.items()}
    ids = {name: prompt(layout, prompt_tokens) for name, layout in layouts.items()}
    for name in models:  # warm-up: first runs allocate and plan
        generate(sessions[name], layouts[name], ids[name], min(2, decode_steps))
    prefill: dict[str, list[float]] = {name: [] for name in models}
    decode: dict[str, list[float]] = {name: [] for name in models}
    for round_index in range(rounds):
        for name in rotation(list(models), round_index):
            time.sleep(SPIN_SETTLE_S)
            generator = Generator(sessions[name], layouts[name])
            start = time.perf_counter_ns()
            result, mask = generator.prefill(ids[name])
            result[0].numpy()  # the logits are what a caller waits for
            prefill[name].append(time.perf_counter_ns() - start)
            steps = []
            for _ in range(decode_steps):
                start = time.perf_counter_ns()
                result, mask, _ = generator.step(result, mask)
                steps.append(time.perf_counter_ns() - start)
            decode[name].append(statistics.median(steps))
    return [VariantTiming(name, threads, statistics.median(prefill[name]) / 1e6,
                          statistics.median(decode[name]) / 1e6) for name in models]


# The parent reads the layout: onnx.load of a single-file model would load every weight
# into this process and count them in its peak.
_MEMORY_RUNNER = """
import json, sys
from pathlib import Path
from onnxbit.bench.llm import CacheLayout, generate, open_session, prompt, own_peak_rss
path, threads, prompt_tokens, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
described = json.loads(sys.argv[5])
layout = CacheLayout(tuple(described["past"]), tuple(described["present"]), described["kv_heads"],
                     described["head_dim"], described["vocab"])
before = own_peak_rss()
session = open_session(path, threads, library=described["library"])
loaded = own_peak_rss()
generate(session, layout, prompt(layout, prompt_tokens), steps)
print(json.dumps({"baseline": before, "loaded": loaded, "peak": own_peak_rss()}))
"""


def own_peak_rss() -> int:
    """This process's peak resident set (VmHWM), bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class VariantMemory:
    variant: str
    peak_rss: int       # whole process after load, prefill and decode
    baseline_rss: int   # python + onnxruntime imported, before the session
    after_load_rss: int


def measure_memory(name: str, path: Path, threads: int, prompt_tokens: int, steps: int) -> VariantMemory:
    """Peak RSS of one variant, in a fresh process so no other variant's pages count."""
    described = dict(asdict(CacheLayout.of(path)), library=uses_library(path))
    done = subprocess.run([sys.executable, "-c", _MEMORY_RUNNER, str(path), str(threads), str(prompt_tokens),
                           str(steps), json.dumps(described)], capture_output=True, text=True, env=dict(os.environ))
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise LlmModelError(f"the {name} model failed in its memory-measuring process: {tail[0]}")
    values = json.loads(done.stdout.strip().splitlines()[-1])
    return VariantMemory(name, values["peak"], values["baseline"], values["loaded"])


def files_bytes(path: Path) -> int:
    """The model file plus every external-data file it names."""
    proto = onnx.load(str(path), load_external_data=False)
    locations = {entry.value for tensor in proto.graph.initializer for entry in tensor.external_data
                 if entry.key == "location"}
    return path.stat().st_size + sum((path.parent / loc).stat().st_size for loc in locations)


# The conversions `bench llm` makes when not given: (variant name, convert() keyword arguments).
CONVERSIONS = (("int4-ort", {"preset": "int4", "target": "ort"}),
               ("ternary", {"preset": "bitnet", "target": "onnxbit"}))


def make_conversions(original: Path, out_dir: Path, given: dict[str, Path]) -> dict[str, Path]:
    """Converted variants: those given, else converted once into out_dir (reused if present)."""
    from onnxbit.convert import convert

    variants = {}
    for name, arguments in CONVERSIONS:
        if name in given:
            variants[name] = given[name]
            continue
        path = out_dir / f"{original.stem}.{name}.onnx"
        if not path.exists():
            convert(original, output_path=path, progress=False, measure_error=False, **arguments)
        variants[name] = path
    for name, path in given.items():
        variants.setdefault(name, path)
    return variants


@dataclass
class LlmBench:
    timings: list[VariantTiming]
    memory: list[VariantMemory]
    sizes: dict[str, int]
    prompt_tokens: int
    decode_steps: int
    rounds: int
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"timings": [dict(asdict(t), decode_tokens_per_s=t.decode_tokens_per_s) for t in self.timings],
                "memory": [asdict(m) for m in self.memory], "bytes": self.sizes, "files": self.files,
                "prompt_tokens": self.prompt_tokens, "decode_steps": self.decode_steps, "rounds": self.rounds}


def bench_llm(original: Path, out_dir: Path, given: dict[str, Path] | None = None, threads: Sequence[int] = (1, 2),
              prompt_tokens: int = 128, decode_steps: int = 32, rounds: int = 5,
              memory: bool = True) -> LlmBench:
    original = Path(original)
    CacheLayout.of(original)  # a clear error before any conversion starts
    variants = {"fp32": original, **make_conversions(original, Path(out_dir), dict(given or {}))}
    for name, path in variants.items():
        CacheLayout.of(path)
    timings = []
    for count in threads:
        timings += time_variants(variants, count, prompt_tokens, decode_steps, rounds)
    memories = [measure_memory(name, path, 1, prompt_tokens, decode_steps) for name, path in variants.items()] \
        if memory else []
    return LlmBench(timings, memories, {name: files_bytes(path) for name, path in variants.items()},
                    prompt_tokens, decode_steps, rounds, {name: str(path) for name, path in variants.items()})


def _ratio_words(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def render(bench: LlmBench, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    reference = {(t.variant, t.threads): t for t in bench.timings}
    table = Table(title=f"LLM, batch 1: prefill {bench.prompt_tokens} tokens, decode {bench.decode_steps} steps "
                        f"(medians of {bench.rounds} interleaved rounds)")
    for column in ("model", "threads", "prefill ms", "decode tok/s", "decode vs fp32", "decode vs int4-ort",
                   "prefill vs fp32", "prefill vs int4-ort"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for t in bench.timings:
        row = [t.variant, str(t.threads), f"{t.prefill_ms:.1f}", f"{t.decode_tokens_per_s:.2f}"]
        for base in ("fp32", "int4-ort"):
            other = reference.get((base, t.threads))
            row.append("-" if other is None or base == t.variant else
                       _ratio_words(other.decode_ms_per_token / t.decode_ms_per_token))
        for base in ("fp32", "int4-ort"):
            other = reference.get((base, t.threads))
            row.append("-" if other is None or base == t.variant else _ratio_words(other.prefill_ms / t.prefill_ms))
        table.add_row(*row)
    console.print(table)
    sizes = Table(title="files and peak memory (fresh process each, 1 thread, load + prefill + decode)")
    for column in ("model", "file MB", "peak RSS MB", "RSS before session MB"):
        sizes.add_column(column, justify="left" if column == "model" else "right")
    peaks = {m.variant: m for m in bench.memory}
    for name, nbytes in bench.sizes.items():
        m = peaks.get(name)
        sizes.add_row(name, f"{nbytes / 1e6:.1f}", f"{m.peak_rss / 1e6:.0f}" if m else "-",
                      f"{m.baseline_rss / 1e6:.0f}" if m else "-")
    console.print(sizes)
