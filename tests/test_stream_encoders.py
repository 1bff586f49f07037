"""The library's zeroruns and sparse codecs against their numpy references
(onnxbit.reference.zero_runs / .sparse): encoders byte for byte, decoders
code for code, on random tensors and on the edge cases of their fast paths
(runs at the one-byte varint limits, runs across the decoders' row chunks,
rows longer than a chunk, all-zero and all-nonzero tensors), on every ISA."""

from __future__ import annotations

import numpy as np
import pytest

from onnxbit import codecs, formats, streams
from onnxbit.bench.formats import synthetic_codes
from onnxbit.reference import sparse as sparse_reference
from onnxbit.reference import zero_runs as zero_runs_reference

REFERENCES = {formats.ZERO_RUNS: zero_runs_reference, formats.SPARSE: sparse_reference}


def _edge_cases() -> dict[str, np.ndarray]:
    cases = {
        "one zero": np.zeros((1, 1), np.int8),
        "one -1": np.full((1, 1), -1, np.int8),
        "all zeros": np.zeros((5, 7), np.int8),
        "all -1": np.full((3, 64), -1, np.int8),
        "all +1, rows of 9": np.ones((11, 9), np.int8),
        "alternating": np.tile(np.array([1, -1], np.int8), (4, 40)),
    }
    # A nonzero after each run length around the one-byte limits (zeroruns:
    # 63 zeros, sparse: 127) and the two-byte one (8191 / 16383).
    for run in (7, 8, 62, 63, 64, 65, 126, 127, 128, 129, 8191, 8192, 16383, 16384):
        codes = np.zeros((2, run + 3), np.int8)
        codes[0, run] = -1
        codes[1, run + 2] = 1
        cases[f"run of {run}"] = codes
    spaced = np.zeros((40, 1000), np.int8)  # runs that cross the 16-row chunks
    spaced.reshape(-1)[::997] = 1
    spaced.reshape(-1)[5::3001] = -1
    cases["runs across chunks"] = spaced
    long_rows = np.zeros((3, 40_000), np.int8)  # rows longer than a chunk
    long_rows[0, 39_999] = 1
    long_rows[2, :100] = -1
    cases["rows of 40000"] = long_rows
    cases["2000 rows of 3"] = np.tile(np.array([0, 1, -1], np.int8), (2000, 1))
    return cases


EDGE_CASES = _edge_cases()


def _check(fmt: str, codes: np.ndarray) -> None:
    n, k = codes.shape
    rows = codecs.pack_ternary(codes, "base3")
    stream = streams.encode(fmt, rows, k)
    expected = REFERENCES[fmt].encode(codes)
    assert stream.tobytes() == expected.tobytes()
    np.testing.assert_array_equal(streams.decode_base3(fmt, stream, n, k), rows)
    np.testing.assert_array_equal(REFERENCES[fmt].decode(expected.tobytes(), n, k), rows)


@pytest.mark.parametrize("fmt", [formats.ZERO_RUNS, formats.SPARSE])
@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_cases_equal_the_reference(isa, fmt, case):
    _check(fmt, EDGE_CASES[case])


@pytest.mark.parametrize("fmt", [formats.ZERO_RUNS, formats.SPARSE])
@pytest.mark.parametrize("zeros", [0.0, 1 / 3, 0.9, 0.995])
@pytest.mark.parametrize("n, k", [(1, 5), (13, 77), (9, 2049), (300, 50)])
def test_random_tensors_equal_the_reference(isa, rng, fmt, zeros, n, k):
    _check(fmt, synthetic_codes(n, k, zeros, rng))


@pytest.mark.parametrize("fmt", [formats.ZERO_RUNS, formats.SPARSE])
def test_invalid_base3_rows_are_refused(fmt):
    rows = codecs.pack_ternary(np.ones((3, 12), np.int8), "base3")
    rows[1, 2] = 243
    with pytest.raises(ValueError, match="invalid bytes, the first at code 22"):
        streams.encode(fmt, rows, 12)
    with pytest.raises(ValueError, match="do not hold K=13"):
        streams.encode(fmt, rows[:, :2], 13)
