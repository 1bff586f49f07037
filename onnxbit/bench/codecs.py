"""Throughput of the packed ternary codecs, per ISA path, on one thread.

Every ISA is forced in-process in turn; runs are interleaved across ISAs so
machine noise hits all of them alike, and each figure is the median run.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

from onnxbit import native
from onnxbit.codecs import FORMATS, format_id, packed_row_bytes

ROW_LENGTH = 4096  # a typical hidden size; not a multiple of 5, so base3 rows have tails


@dataclass
class CodecThroughput:
    isa: str
    metric: str  # e.g. "decode 2bit"
    gb_per_s: float  # GB (1e9 bytes) of the metric's reference data per second
    reference: str  # which bytes the rate counts


def _workloads(mb: int, rng: np.random.Generator):
    """(metric, reference, bytes counted, callable) for every measured operation."""
    ffi, lib = native.ffi(), native.lib()
    rows = max(1, (mb << 20) // ROW_LENGTH)
    k = ROW_LENGTH
    codes = rng.integers(-1, 2, size=(rows, k)).astype(np.int8)
    decoded = np.empty_like(codes)
    first = ffi.new("size_t *")
    codes_ptr = ffi.from_buffer("int8_t[]", codes)
    decoded_ptr = ffi.from_buffer("int8_t[]", decoded, require_writable=True)
    # fp32 input of the same number of megabytes as the code tensors
    w_rows = max(1, rows // 4)
    weights = rng.standard_normal((w_rows, k)).astype(np.float32)
    weights_ptr = ffi.from_buffer("float[]", weights)
    sums = np.empty(w_rows, dtype=np.float64)
    sums_ptr = ffi.from_buffer("double[]", sums, require_writable=True)
    inv = ffi.new("float[1]")
    work = []
    for fmt in FORMATS:
        fmt_id = format_id(fmt)
        packed = np.empty((rows, packed_row_bytes(k, fmt)), dtype=np.uint8)
        packed_ptr = ffi.from_buffer("uint8_t[]", packed, require_writable=True)
        lib.obx_encode_i8(fmt_id, codes_ptr, rows, k, packed_ptr, first)
        quantized = np.empty((w_rows, packed.shape[1]), dtype=np.uint8)
        quantized_ptr = ffi.from_buffer("uint8_t[]", quantized, require_writable=True)

        def decode(fmt_id=fmt_id, packed_ptr=packed_ptr):
            lib.obx_decode_i8(fmt_id, packed_ptr, rows, k, decoded_ptr, first)

        def encode(fmt_id=fmt_id, packed_ptr=packed_ptr):
            lib.obx_encode_i8(fmt_id, codes_ptr, rows, k, packed_ptr, first)

        def quantize_pack(fmt_id=fmt_id, quantized_ptr=quantized_ptr):
            # BitNet absmean per tensor: gamma = max(mean |w|, 1e-5), q = clip(rint(w / gamma))
            lib.obx_abs_sum_rows_f32(weights_ptr, w_rows, k, sums_ptr)
            gamma = max(float(sums.sum()) / weights.size, 1e-5)
            inv[0] = np.float32(1.0 / gamma)
            lib.obx_ternarize_pack_f32(fmt_id, weights_ptr, w_rows, k, inv, 1, quantized_ptr, first)

        work.append((f"decode {fmt}", "int8 codes out", codes.nbytes, decode))
        work.append((f"encode {fmt}", "int8 codes in", codes.nbytes, encode))
        work.append((f"quantize+pack {fmt}", "fp32 weights in", weights.nbytes, quantize_pack))
    return work


def run_codec_bench(mb: int = 64, repeat: int = 15, seed: int = 0) -> list[CodecThroughput]:
    """Median single-thread throughput of each codec operation on each ISA path."""
    if mb < 1 or repeat < 1:
        raise ValueError(f"mb and repeat must be positive, got mb={mb}, repeat={repeat}")
    native.isa()  # a bad ONNXBIT_ISA fails here, before any kernel runs
    isas = native.available_isas()
    work = _workloads(mb, np.random.default_rng(seed))
    samples = {(isa, metric): [] for isa in isas for metric, _, _, _ in work}
    for _ in range(repeat + 1):  # the first round warms caches and page tables
        for isa in isas:
            with native.forced_isa(isa):
                for metric, _, _, run in work:
                    start = time.perf_counter()
                    run()
                    samples[(isa, metric)].append(time.perf_counter() - start)
    results = []
    for isa in isas:
        for metric, reference, nbytes, _ in work:
            seconds = statistics.median(samples[(isa, metric)][1:])
            results.append(CodecThroughput(isa, metric, nbytes / seconds / 1e9, reference))
    return results


def results_as_dicts(results: list[CodecThroughput]) -> list[dict]:
    return [asdict(r) for r in results]
