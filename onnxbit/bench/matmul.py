"""``onnxbit bench matmul``: TernaryMatMul against onnxruntime's own ops.

Method (each choice answers a way single-op benchmarks mislead):

* One onnxruntime thread pool per process (``set_global_thread_pool_sizes``,
  sessions with ``use_per_session_threads = False``). Per-session pools each
  spin their own workers, and on a small machine those spinning workers of
  idle sessions steal the cores of the one that runs. The global pool can be
  set once per process, so every thread count runs in its own worker
  subprocess, which interleaves all variants. (Python cannot set the global
  pool's spin policy; it spins like onnxruntime's default, but there is only
  one set of workers to spin.)
* Variants are interleaved round-robin (onnxbit.bench.timing) and reported as
  medians.
* Cold weights: every variant gets enough independent sessions (each owning
  its own copy of the weights) that cycling over them streams several times
  the last-level cache; "cold" runs the next copy, "hot" runs that same
  session again straight after.
* Every variant's output is checked before timing, against float64 A @ W
  within the error its arithmetic allows (check_output).
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx

from onnxbit.bench import peers
from onnxbit.bench.timing import (cpu_name, dram_read_bandwidth, interleave, median_ms, quartiles_ms,
                                  rounds_for_budget, time_ns)
from onnxbit.reference.ternary_matmul import quantize_activations


class BenchmarkError(RuntimeError):
    """The benchmark could not run as asked."""


@dataclass(frozen=True)
class MatMulShape:
    """Y[M, N] = A[M, K] @ W[K, N]."""

    m: int
    k: int
    n: int

    @classmethod
    def parse(cls, text: str) -> "MatMulShape":
        parts = text.lower().replace(" ", "").split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise BenchmarkError(f"shape {text!r} is not MxKxN with three positive integers (e.g. 1x4096x4096)")
        return cls(*(int(p) for p in parts))

    @property
    def label(self) -> str:
        return f"{self.m}x{self.k}x{self.n}"


DEFAULT_SHAPES = (MatMulShape(1, 4096, 4096), MatMulShape(8, 4096, 4096),
                  MatMulShape(128, 4096, 4096), MatMulShape(1, 2048, 8192))
QUICK_SHAPES = (MatMulShape(1, 256, 512), MatMulShape(4, 320, 96))


# --- variants ---------------------------------------------------------------

# How a variant treats activations decides how far its output may be from the
# float64 reference (see check_output).
ACT_FLOAT = "float"            # float32 throughout
ACT_UINT8_TENSOR = "uint8/tensor"  # asymmetric uint8, one scale per tensor (DynamicQuantizeLinear)
ACT_INT8_BLOCK = "int8/block"  # symmetric int8 per block of K (MatMulNBits accuracy_level 4)
ACT_INT8_TOKEN = "int8/token"  # TernaryMatMul act_quant 1: exact spec (onnxbit.reference)

NBITS_BLOCK_SIZE = 32


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    peer: bool                  # one of onnxruntime's ops: a ratio column
    activations: str
    build: Callable[[np.ndarray, float], onnx.ModelProto]
    custom_ops: bool = False    # needs the onnxbit library registered


def _ternary_variant(fmt: str, act_quant: int) -> Variant:
    def build(codes: np.ndarray, scale: float) -> onnx.ModelProto:
        from onnxbit.codecs import pack_ternary

        k, n = codes.shape
        packed = pack_ternary(np.ascontiguousarray(codes.T), fmt)
        return peers.ternary_matmul_model(packed, scale, k, n, fmt, act_quant)

    suffix = "a8" if act_quant else "f32"
    return Variant(f"tmm_{fmt}_{suffix}", f"Ternary {fmt} {suffix}", False,
                   ACT_INT8_TOKEN if act_quant else ACT_FLOAT, build, custom_ops=True)


VARIANTS: tuple[Variant, ...] = (
    Variant("fp32", "fp32 MatMul", True, ACT_FLOAT, peers.fp32_matmul_model),
    Variant("int8", "int8 dynamic", True, ACT_UINT8_TENSOR, peers.int8_dynamic_model),
    Variant("nbits4", "NBits4", True, ACT_INT8_BLOCK,
            lambda c, s: peers.matmul_nbits_model(peers.ternary_as_nbits(c, s, 4, NBITS_BLOCK_SIZE))),
    Variant("nbits2", "NBits2", True, ACT_INT8_BLOCK,
            lambda c, s: peers.matmul_nbits_model(peers.ternary_as_nbits(c, s, 2, NBITS_BLOCK_SIZE))),
    _ternary_variant("2bit", 1),
    _ternary_variant("2bit", 0),
    _ternary_variant("base3", 1),
)
VARIANT_NAMES = tuple(v.name for v in VARIANTS)
PEER_NAMES = tuple(v.name for v in VARIANTS if v.peer)


def select_variants(names: Sequence[str] | None) -> list[Variant]:
    if not names:
        return list(VARIANTS)
    unknown = [n for n in names if n not in VARIANT_NAMES]
    if unknown:
        raise BenchmarkError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANT_NAMES)}")
    return [v for v in VARIANTS if v.name in names]


# --- accuracy check -------------------------------------------------------------

CHECK_ROWS = 8  # outputs are checked on this many rows of A (rows are independent)


class ReferenceProduct:
    """float64 A @ W and the magnitudes error bounds are built from, for a
    few rows of A, computed once per shape and shared by every variant."""

    def __init__(self, a: np.ndarray, codes: np.ndarray, scale: float, rows: int = CHECK_ROWS):
        self.rows = np.unique(np.linspace(0, a.shape[0] - 1, min(rows, a.shape[0])).astype(int))
        self.a_all = a
        self.a = a[self.rows]
        self.codes = codes
        self.scale = scale
        w = peers.dequantized_weight(codes, scale).astype(np.float64)
        self.abs_w = np.abs(w)
        self.exact = self.a.astype(np.float64) @ w
        # Worst-case float32 error of a K-term dot product, gamma_K |A| @ |W|,
        # plus a few roundings for scaling.
        k = a.shape[1]
        self.float_bound = (k + 4) * 2.0 ** -24 * (np.abs(self.a).astype(np.float64) @ self.abs_w)

    def int8_token(self) -> np.ndarray:
        """TernaryMatMul act_quant 1 with one scale, step by step as its contract
        says: the activation quantizer is the project reference's; the integer
        sums run as float64 matmuls, exact since |sum| <= 128 K < 2**53."""
        q, s, _ = quantize_activations(self.a)
        isum = q.astype(np.float64) @ self.codes.astype(np.float64)
        acc = isum.astype(np.float32) * np.float32(self.scale)
        return (acc / s[:, None]).astype(np.float32)


def check_output(variant: Variant, ref: ReferenceProduct, y_all: np.ndarray) -> tuple[float, float]:
    """(largest error, what the variant's arithmetic allows there) over the
    checked rows; the check passes when every element is within its own bound."""
    y = y_all[ref.rows].astype(np.float64)
    if variant.activations == ACT_FLOAT:
        reference, bound = ref.exact, ref.float_bound
    elif variant.activations == ACT_UINT8_TENSOR:
        # One step (max(a,0) - min(a,0)) / 255 over the whole tensor; rounding
        # moves each activation by at most half of it.
        a = ref.a_all
        step = (max(float(a.max()), 0.0) - min(float(a.min()), 0.0)) / 255.0
        reference = ref.exact
        bound = 0.5 * step * ref.abs_w.sum(axis=0)[None, :] + ref.float_bound
    elif variant.activations == ACT_INT8_BLOCK:
        # Symmetric int8 per block of K: half a step is amax_block / 254.
        m, k = ref.a.shape
        blocks = -(-k // NBITS_BLOCK_SIZE)
        padded = np.zeros((m, blocks * NBITS_BLOCK_SIZE), dtype=np.float64)
        padded[:, :k] = np.abs(ref.a)
        half_step = padded.reshape(m, blocks, NBITS_BLOCK_SIZE).max(axis=2) / 254.0
        w_pad = np.zeros((blocks * NBITS_BLOCK_SIZE, ref.abs_w.shape[1]), dtype=np.float64)
        w_pad[:k] = ref.abs_w
        block_w = w_pad.reshape(blocks, NBITS_BLOCK_SIZE, -1).sum(axis=1)
        reference, bound = ref.exact, half_step @ block_w + ref.float_bound
    elif variant.activations == ACT_INT8_TOKEN:
        # Exact integer arithmetic by contract: allow a couple of float32 ulps.
        reference = ref.int8_token().astype(np.float64)
        bound = 2.0 ** -22 * np.abs(reference)
    else:
        raise BenchmarkError(f"variant {variant.name} has unknown activation handling {variant.activations!r}")
    error = np.abs(y - reference)
    # Tiny absolute slack so exact zeros do not demand bit-exact zeros.
    bound = bound * 1.0001 + 1e-30
    if not np.all(np.isfinite(y)):
        worst = int(np.argmin(np.isfinite(y)))
        return math.inf, float(bound.flat[worst])
    worst = int(np.argmax(error - bound))
    return float(error.flat[worst]), float(bound.flat[worst])


# --- one worker process: one thread count -------------------------------------------

@dataclass
class WorkerConfig:
    threads: int
    shapes: list[tuple[int, int, int]]
    variants: list[str]
    repeat: int                  # rounds; 0 = fit budget_seconds
    budget_seconds: float        # per shape, when repeat == 0
    min_rounds: int
    max_rounds: int
    cold_bytes: int              # total weight bytes each variant cycles over
    max_copies: int
    seed: int
    model_dir: str               # models written by build_models, shared by all workers
    weight_bytes: dict[str, int]  # model_key -> initializer bytes


WEIGHT_SCALE = 0.02


def random_ternary(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """[K, N] codes in {-1, 0, 1}, about a third each (BitNet weights are ~1/3 zero)."""
    return rng.integers(-1, 2, size=(k, n), dtype=np.int8)


def copies_for(weight_bytes: int, cold_bytes: int, max_copies: int) -> int:
    """Independent weight copies so cycling over them touches cold_bytes; at
    least 2 so a copy is never re-run straight from the cache."""
    return max(2, min(max_copies, -(-cold_bytes // max(weight_bytes, 1))))


class _VariantRunner:
    """Sessions for every copy of one variant, bound to fixed input/output buffers."""

    def __init__(self, variant: Variant, model_bytes: bytes, copies: int, a: np.ndarray, n: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.use_per_session_threads = False
        options.log_severity_level = 3
        if variant.custom_ops:
            from onnxbit.runtime import register

            register(options)
        self.input = ort.OrtValue.ortvalue_from_numpy(a)
        self.outputs = []
        self.bindings = []
        self.sessions = []
        for _ in range(copies):
            session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
            out = np.zeros((a.shape[0], n), dtype=np.float32)
            binding = session.io_binding()
            binding.bind_ortvalue_input("A", self.input)
            binding.bind_output("Y", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
            self.sessions.append(session)
            self.outputs.append(out)
            self.bindings.append(binding)
        self.next_copy = 0

    def run(self, copy: int) -> np.ndarray:
        self.sessions[copy].run_with_iobinding(self.bindings[copy])
        return self.outputs[copy]

    def probe(self) -> dict[str, float]:
        """Cold: the next copy, whose weights other copies and variants have
        evicted since its last run. Hot: the same session again at once."""
        copy = self.next_copy
        self.next_copy = (self.next_copy + 1) % len(self.sessions)
        cold = time_ns(lambda: self.run(copy))
        hot = time_ns(lambda: self.run(copy))
        return {"cold": cold, "hot": hot}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def shape_inputs(seed: int, shape: MatMulShape) -> tuple[np.ndarray, np.ndarray]:
    """The ternary codes [K, N] and activations A [M, K] of one shape; the same
    in every process for the same seed."""
    rng = np.random.default_rng([seed, shape.m, shape.k, shape.n])
    codes = random_ternary(rng, shape.k, shape.n)
    return codes, rng.standard_normal((shape.m, shape.k)).astype(np.float32)


def model_key(shape: MatMulShape, variant: Variant) -> str:
    return f"{shape.label}_{variant.name}"


def build_models(shape: MatMulShape, variants: Sequence[Variant], seed: int,
                 model_dir: Path) -> dict[str, int]:
    """Write every variant's model for one shape (built once, then loaded by
    each thread-count worker); returns model_key -> weight bytes."""
    codes, _ = shape_inputs(seed, shape)
    weight_bytes = {}
    for variant in variants:
        model = variant.build(codes, WEIGHT_SCALE)
        key = model_key(shape, variant)
        weight_bytes[key] = peers.initializer_bytes(model)
        (model_dir / f"{key}.onnx").write_bytes(model.SerializeToString())
    return weight_bytes


def run_shape(config: WorkerConfig, shape: MatMulShape, variants: list[Variant]) -> dict:
    codes, a = shape_inputs(config.seed, shape)
    reference = ReferenceProduct(a, codes, WEIGHT_SCALE)
    runners: dict[str, _VariantRunner] = {}
    rows = []
    start = time.perf_counter()
    for variant in variants:
        key = model_key(shape, variant)
        weight_bytes = config.weight_bytes[key]
        copies = copies_for(weight_bytes, config.cold_bytes, config.max_copies)
        model_bytes = (Path(config.model_dir) / f"{key}.onnx").read_bytes()
        runner = _VariantRunner(variant, model_bytes, copies, a, shape.n)
        del model_bytes
        error, bound = check_output(variant, reference, runner.run(0))
        runners[variant.name] = runner
        rows.append({"name": variant.name, "label": variant.label, "peer": variant.peer,
                     "activations": variant.activations, "weight_bytes": weight_bytes,
                     "copies": copies, "max_abs_error": error, "error_bound": bound,
                     "accurate": bool(error <= bound)})
    setup_s = time.perf_counter() - start
    probes = {name: runner.probe for name, runner in runners.items()}
    warm_start = time.perf_counter()
    for probe in probes.values():  # one untimed round: first-run allocations, page faults
        probe()
    round_s = time.perf_counter() - warm_start
    rounds = config.repeat or rounds_for_budget(round_s, config.budget_seconds,
                                                config.min_rounds, config.max_rounds)
    _log(f"[threads={config.threads}] {shape.label}: {len(variants)} variants ready in "
         f"{setup_s:.1f}s, {rounds} rounds of {round_s:.2f}s")
    samples = interleave(probes, rounds)
    for row in rows:
        cold, hot = samples[row["name"]]["cold"], samples[row["name"]]["hot"]
        cold_ms, hot_ms = median_ms(cold), median_ms(hot)
        row.update(cold_ms=cold_ms, hot_ms=hot_ms,
                   cold_quartiles_ms=quartiles_ms(cold), hot_quartiles_ms=quartiles_ms(hot),
                   cold_gb_per_s=row["weight_bytes"] / (cold_ms * 1e6),
                   hot_gb_per_s=row["weight_bytes"] / (hot_ms * 1e6))
    timed = {row["name"]: row for row in rows}
    for row in rows:
        row["speedup_cold"] = {p: timed[p]["cold_ms"] / row["cold_ms"]
                               for p in PEER_NAMES if p in timed and p != row["name"]}
        row["speedup_hot"] = {p: timed[p]["hot_ms"] / row["hot_ms"]
                              for p in PEER_NAMES if p in timed and p != row["name"]}
    runners.clear()
    gc.collect()
    return {"threads": config.threads, "shape": asdict(shape), "rounds": rounds, "variants": rows}


def run_worker(config: WorkerConfig) -> list[dict]:
    """All shapes at one thread count; must run in a fresh process (the global
    thread pool can be created only once)."""
    import onnxruntime as ort

    ort.set_global_thread_pool_sizes(config.threads, 1)
    variants = select_variants(config.variants)
    return [run_shape(config, MatMulShape(*s), variants) for s in config.shapes]


# --- the whole benchmark: one subprocess per thread count -----------------------------

@dataclass
class BenchOptions:
    shapes: list[MatMulShape] = field(default_factory=lambda: list(DEFAULT_SHAPES))
    threads: list[int] = field(default_factory=lambda: [1, 2])
    variants: list[str] = field(default_factory=lambda: list(VARIANT_NAMES))
    repeat: int = 0
    budget_seconds: float = 8.0
    min_rounds: int = 3
    max_rounds: int = 60
    cold_bytes: int = 0          # 0: max(64 MB, 8 x last-level cache)
    max_copies: int = 24
    bandwidth_bytes: int = 512 << 20
    seed: int = 0

    @classmethod
    def quick(cls) -> "BenchOptions":
        return cls(shapes=list(QUICK_SHAPES), repeat=3, cold_bytes=1 << 20, max_copies=2,
                   bandwidth_bytes=64 << 20)


def last_level_cache_bytes() -> int | None:
    """Size of the CPU's last-level cache from Linux sysfs, or None elsewhere."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    best = None
    for index in sorted(base.glob("index*")):
        try:
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        size = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
        if best is None or level > best[0]:
            best = (level, size)
    return best[1] if best else None


def _load_average() -> float | None:
    """Other processes' demand for the cores, which skews multi-thread timings."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _worker_env() -> dict[str, str]:
    """The worker imports this very onnxbit, also when it runs from a source tree."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _run_worker_process(config: WorkerConfig) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="onnxbit-bench-") as tmp:
        config_path, result_path = Path(tmp) / "config.json", Path(tmp) / "result.json"
        config_path.write_text(json.dumps(asdict(config)))
        proc = subprocess.run([sys.executable, "-m", "onnxbit.bench.matmul", str(config_path),
                               str(result_path)], env=_worker_env())
        if proc.returncode != 0 or not result_path.is_file():
            raise BenchmarkError(f"the benchmark worker for {config.threads} thread(s) failed "
                                 f"(exit code {proc.returncode}); its error is printed above")
        return json.loads(result_path.read_text())


def run_benchmark(options: BenchOptions, progress: Callable[[str], None] = _log) -> dict:
    if not options.shapes:
        raise BenchmarkError("no shapes to benchmark")
    if not options.threads or any(t < 1 for t in options.threads):
        raise BenchmarkError(f"thread counts must be >= 1, got {options.threads}")
    if options.repeat < 0:
        raise BenchmarkError(f"--repeat must be >= 0 (0 picks rounds to fit the time budget), got {options.repeat}")
    variants = select_variants(options.variants)
    if any(v.custom_ops for v in variants):
        from onnxbit import native

        library = native.library_path()  # a clear error now rather than in a worker
    else:
        library = None
    import onnxruntime as ort

    llc = last_level_cache_bytes()
    cold_bytes = options.cold_bytes or max(64 << 20, 8 * (llc or 0))
    progress(f"measuring DRAM read bandwidth ({options.bandwidth_bytes >> 20} MB numpy max)")
    bandwidth = dram_read_bandwidth(options.bandwidth_bytes)
    machine = {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "last_level_cache_bytes": llc,
               "load_average_1min_at_start": _load_average(),
               "dram_read_gb_per_s": bandwidth.gb_per_s, "dram_probe_bytes": bandwidth.nbytes,
               "onnxruntime": ort.__version__, "python": platform.python_version(),
               "onnxbit_library": library}
    if library is not None:
        from onnxbit import native

        machine["onnxbit_isa"] = native.isa()
    runs = []
    with tempfile.TemporaryDirectory(prefix="onnxbit-bench-models-") as model_dir:
        weight_bytes: dict[str, int] = {}
        for shape in options.shapes:
            progress(f"building {len(variants)} models for {shape.label}")
            weight_bytes.update(build_models(shape, variants, options.seed, Path(model_dir)))
        for threads in options.threads:
            progress(f"running {len(variants)} variants x {len(options.shapes)} shapes with {threads} thread(s)")
            config = WorkerConfig(threads=threads, shapes=[(s.m, s.k, s.n) for s in options.shapes],
                                  variants=[v.name for v in variants], repeat=options.repeat,
                                  budget_seconds=options.budget_seconds, min_rounds=options.min_rounds,
                                  max_rounds=options.max_rounds, cold_bytes=cold_bytes,
                                  max_copies=options.max_copies, seed=options.seed,
                                  model_dir=model_dir, weight_bytes=weight_bytes)
            runs.extend(_run_worker_process(config))
    # Shape-major order: one shape's thread counts next to each other.
    order = {(s.m, s.k, s.n): i for i, s in enumerate(options.shapes)}
    runs.sort(key=lambda r: (order[(r["shape"]["m"], r["shape"]["k"], r["shape"]["n"])], r["threads"]))
    machine["load_average_1min_at_end"] = _load_average()
    settings = asdict(options)
    settings["shapes"] = [s.label for s in options.shapes]
    return {"benchmark": "matmul", "machine": machine, "options": settings,
            "cold_bytes_per_variant": cold_bytes, "runs": runs}


def _worker_main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m onnxbit.bench.matmul CONFIG.json RESULT.json", file=sys.stderr)
        return 2
    config = WorkerConfig(**json.loads(Path(argv[0]).read_text()))
    Path(argv[1]).write_text(json.dumps(run_worker(config)))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
