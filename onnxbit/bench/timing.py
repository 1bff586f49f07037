"""Timing helpers shared by the benchmarks.

Runs of different variants are interleaved (round-robin, a different variant
first each round) so that slow drifts of a shared, noisy machine - frequency,
other processes, page-cache state - hit every variant alike, and results are
summarised by medians, which ignore the occasional preempted run.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

# A probe runs one round of one variant and returns its named samples in
# nanoseconds, e.g. {"cold": 1.2e6, "hot": 0.4e6}.
Probe = Callable[[], Mapping[str, float]]


def cpu_name() -> str:
    """The CPU's model name, for benchmark headers and per-machine caches."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_ns(fn: Callable[[], object]) -> int:
    """Wall time of one call."""
    start = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - start


def thread_time_ns(fn: Callable[[], object]) -> int:
    """CPU time of the calling thread over one call: on a loaded machine it
    leaves out the time other processes held the core. It covers all the work
    only when the call runs on this thread alone (onnxruntime with one intra-op
    thread runs its kernels on the caller)."""
    start = time.thread_time_ns()
    fn()
    return time.thread_time_ns() - start


def rotation(names: Sequence[str], round_index: int) -> list[str]:
    """The round-robin order of one round: every name once, starting at a
    different one each round so no variant always follows the same neighbour."""
    if not names:
        return []
    shift = round_index % len(names)
    return list(names[shift:]) + list(names[:shift])


def interleave(probes: Mapping[str, Probe], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Call every probe once per round, in :func:`rotation` order.

    Returns samples[variant][sample_name] = list of nanoseconds, one per round.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(probes)
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    for round_index in range(rounds):
        for name in rotation(names, round_index):
            for key, value in probes[name]().items():
                samples[name].setdefault(key, []).append(float(value))
    return samples


# An idle onnxruntime pool worker spins for up to about 50 ms after its
# pool's last parallel section, then sleeps (its thread's CPU time, read from
# /proc/self/task, stops growing within 50-100 ms). Twice that lets it settle.
SPIN_SETTLE_S = 0.1
# Untimed probes after that pause: the first runs after it are slow (two
# threads, a 1x1 256->64 @56x56 conv, medians by position after the pause:
# fp32 0.91, 0.77, 0.72, then 0.57-0.69 ms; TernaryConv 0.37, 0.30, 0.27,
# then 0.22-0.29), so one untimed probe left the ramp in the samples. And
# for WARM_UP_S at least: after the pause the scheduler can leave the pool's
# worker on the caller's core for some milliseconds, and a block of short
# runs then times one thread (2-vCPU VM, two threads, 3x3 128@28x28, the
# median of each of 8 blocks of 5 runs: with only the three probes 3-5 of 8
# blocks ran at one-thread speed, fp32 1.03-1.19 ms against 0.53, TernaryConv
# 0.38 against 0.22; with 20 ms of probes or more, none).
WARM_UP_PROBES = 3
WARM_UP_S = 0.05


def interleave_spinning(probes: Mapping[str, Probe], rounds: int, block: int = 5,
                        pause_s: float = SPIN_SETTLE_S) -> dict[str, dict[str, list[float]]]:
    """:func:`interleave` for sessions with several threads that keep
    onnxruntime's default spinning pool workers, as a deployment runs them.
    Alternating call by call, one session's still-spinning worker would take
    the cores of the next; so each variant runs `block` probes in a row, after
    a pause of pause_s and untimed probes, WARM_UP_PROBES of them and for
    WARM_UP_S at least (which wake its own pool, get past the slow first runs
    after the pause and let the scheduler spread its threads).
    Returns `rounds` samples per variant, as interleave does."""
    if rounds < 1 or block < 1:
        raise ValueError(f"rounds and block must be >= 1, got {rounds}, {block}")
    names = list(probes)
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    for block_index in range((rounds + block - 1) // block):
        count = min(block, rounds - block_index * block)
        for name in rotation(names, block_index):
            time.sleep(pause_s)
            warm_until, warmed = time.perf_counter() + WARM_UP_S, 0
            while warmed < WARM_UP_PROBES or time.perf_counter() < warm_until:
                probes[name]()
                warmed += 1
            for _ in range(count):
                for key, value in probes[name]().items():
                    samples[name].setdefault(key, []).append(float(value))
    return samples


def interleave_for_threads(probes: Mapping[str, Probe], rounds: int,
                           threads: int) -> dict[str, dict[str, list[float]]]:
    """The interleaving for sessions with `threads` intra-op threads and
    onnxruntime's default spinning workers: run by run at one thread (no pool
    to spin), :func:`interleave_spinning` above that."""
    return interleave(probes, rounds) if threads == 1 else interleave_spinning(probes, rounds)


def median_ms(samples_ns: Sequence[float]) -> float:
    if not samples_ns:
        raise ValueError("no samples to take the median of")
    return statistics.median(samples_ns) / 1e6


def quartiles_ms(samples_ns: Sequence[float]) -> tuple[float, float]:
    """(25th, 75th) percentile: how far the runs behind a median spread."""
    if not samples_ns:
        raise ValueError("no samples to take quartiles of")
    low, high = np.percentile(np.asarray(samples_ns, dtype=np.float64), [25, 75])
    return float(low) / 1e6, float(high) / 1e6


def rounds_for_budget(seconds_per_round: float, budget_seconds: float, minimum: int,
                      maximum: int) -> int:
    """How many rounds fit a time budget, clamped to [minimum, maximum]."""
    if minimum < 1 or maximum < minimum:
        raise ValueError(f"need 1 <= minimum <= maximum, got {minimum}, {maximum}")
    # Compare before dividing: a near-zero round time would overflow int().
    if seconds_per_round * maximum <= budget_seconds:
        return maximum
    return max(minimum, int(budget_seconds / seconds_per_round))


@dataclass(frozen=True)
class Bandwidth:
    gb_per_s: float        # 1e9 bytes per second
    nbytes: int
    repeats: int
    median_ms: float


def dram_read_bandwidth(nbytes: int = 512 << 20, repeats: int = 5) -> Bandwidth:
    """Single-thread DRAM read bandwidth: median time of numpy's max over a
    float32 array far larger than any cache. max is a vectorised streaming
    read with no carried dependency; sum is not (its pairwise additions
    measured 8.4 GB/s where max read 15.2 and onnxruntime's fp32 MatMul
    streamed its weights at 14.5, Sapphire Rapids VM)."""
    if nbytes < 4 or repeats < 1:
        raise ValueError("need at least one float32 and one repeat")
    data = np.ones(nbytes // 4, dtype=np.float32)  # ones: pages really touched
    data.max()  # first pass faults pages in; not timed
    times = [time_ns(data.max) for _ in range(repeats)]
    ms = median_ms(times)
    return Bandwidth(gb_per_s=data.nbytes / (ms * 1e6), nbytes=data.nbytes, repeats=repeats,
                     median_ms=ms)
