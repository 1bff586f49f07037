"""C ternary matmul (csrc/matmul/) against the numpy reference, on every ISA path."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxbit import native
from onnxbit.reference.ternary_matmul import ternary_matmul_reference
from onnxbit.tmatmul import ACT_INT8_TOKEN, ACT_NONE, TernaryWeights


def pack_2bit(w_nk: np.ndarray) -> np.ndarray:
    """N rows of K ternary values -> the 2bit file format (written here independently of csrc/codec)."""
    n, k = w_nk.shape
    u = np.zeros((n, -(-k // 4) * 4), dtype=np.uint8)
    u[:, :k] = (w_nk + 1).astype(np.uint8)
    u = u.reshape(n, -1, 4)
    return (u[..., 0] | (u[..., 1] << 2) | (u[..., 2] << 4) | (u[..., 3] << 6)).astype(np.uint8)


def pack_base3(w_nk: np.ndarray) -> np.ndarray:
    n, k = w_nk.shape
    d = np.zeros((n, -(-k // 5) * 5), dtype=np.int64)
    d[:, :k] = w_nk + 1
    d = d.reshape(n, -1, 5)
    return (d @ np.array([1, 3, 9, 27, 81])).astype(np.uint8)


PACKERS = {"2bit": pack_2bit, "base3": pack_base3}


def make_case(rng, k, n, scale_mode, group_size=0):
    w_kn = rng.integers(-1, 2, size=(k, n)).astype(np.int8)
    if scale_mode == "tensor":
        scales, gs = rng.uniform(0.01, 2.0, 1), 0
    elif scale_mode == "channel":
        scales, gs = rng.uniform(0.01, 2.0, n), 0
    else:
        gs = group_size
        scales = rng.uniform(0.01, 2.0, n * -(-k // gs))
    return w_kn, scales.astype(np.float32), gs


def build(w_kn, scales, gs, fmt="2bit"):
    k, n = w_kn.shape
    return TernaryWeights(PACKERS[fmt](w_kn.T.copy()), k, n, scales, fmt, gs)


# (m, k, n, scale mode, group size, format): a spread over M {1..130}, K {1..4096},
# N {1..257}, tails in K (not a multiple of 32/128) and N (not a multiple of 8),
# and group sizes that do and do not fall on 32-element chunk boundaries.
CASES = [
    (1, 1, 1, "tensor", 0, "2bit"),
    (1, 4096, 257, "channel", 0, "2bit"),
    (2, 5, 3, "channel", 0, "base3"),
    (3, 255, 64, "group", 32, "2bit"),
    (8, 64, 257, "group", 64, "base3"),
    (17, 255, 3, "group", 7, "2bit"),
    (64, 4096, 64, "group", 128, "base3"),
    (130, 255, 64, "tensor", 0, "2bit"),
    (130, 64, 257, "group", 33, "2bit"),
    (5, 4096, 3, "group", 100, "base3"),
    (1, 4096, 9, "group", 2304, "2bit"),  # 72 chunks a group: int16 sums widen mid-group
    (1, 4096, 16, "group", 32, "base3"),
]


@pytest.mark.parametrize("m,k,n,scale_mode,gs,fmt", CASES)
def test_matches_reference(isa, rng, m, k, n, scale_mode, gs, fmt):
    w_kn, scales, gs = make_case(rng, k, n, scale_mode, gs)
    weights = build(w_kn, scales, gs, fmt)
    a = rng.standard_normal((m, k)).astype(np.float32) * 3
    bias = rng.standard_normal(n).astype(np.float32)
    for b in (None, bias):
        exact = weights.matmul(a, ACT_INT8_TOKEN, b)
        assert np.array_equal(exact, ternary_matmul_reference(a, w_kn, scales, gs, 1, b))
        floats = weights.matmul(a, ACT_NONE, b)
        expected = ternary_matmul_reference(a.astype(np.float64), w_kn, scales, gs, 0, b)
        np.testing.assert_allclose(floats, expected, rtol=1e-5, atol=1e-4 * np.sqrt(k))


def test_leading_batch_dims(isa, rng):
    w_kn, scales, gs = make_case(rng, 96, 20, "channel")
    weights = build(w_kn, scales, gs)
    a = rng.standard_normal((2, 3, 5, 96)).astype(np.float32)
    for act in (ACT_NONE, ACT_INT8_TOKEN):
        y = weights.matmul(a, act)
        assert y.shape == (2, 3, 5, 20)
        assert np.array_equal(y.reshape(30, 20), weights.matmul(a.reshape(30, 96), act))
    assert np.array_equal(weights.matmul(a, 1), ternary_matmul_reference(a, w_kn, scales, 0, 1))


def test_simd_equals_scalar(rng):
    """The integer path is bit-identical on every ISA, and the float path agrees closely."""
    w_kn, scales, gs = make_case(rng, 1000, 37, "group", 40)
    weights = build(w_kn, scales, gs)
    a = rng.standard_normal((11, 1000)).astype(np.float32)
    with native.forced_isa("scalar"):
        exact, floats = weights.matmul(a, 1), weights.matmul(a, 0)
    for name in native.available_isas():
        with native.forced_isa(name):
            assert np.array_equal(weights.matmul(a, 1), exact), name
            np.testing.assert_allclose(weights.matmul(a, 0), floats, rtol=1e-5, atol=1e-4)


def float_gemm_reference(a, w_kn, scales, bias):
    """tmatmul.h's float GEMM path, in numpy: one float32 addition of the exact
    product a * w per k, in k order, then * scale and + bias."""
    acc = np.zeros((a.shape[0], w_kn.shape[1]), np.float32)
    w = w_kn.astype(np.float32)
    with np.errstate(invalid="ignore"):  # Inf * 0 = NaN on purpose
        for t in range(a.shape[1]):
            acc = acc + a[:, t, None] * w[None, t, :]
    y = acc * np.broadcast_to(scales, (w_kn.shape[1],))
    return y if bias is None else y + bias


# M from the path's first row (8) past several row blocks and tasks (AVX-512: 48 rows
# a block, 144 a task); K and N with partial K-blocks and panels.
@pytest.mark.parametrize("m,k,n,scale_mode", [
    (8, 128, 8, "tensor"), (9, 129, 33, "channel"), (17, 300, 9, "channel"),
    (63, 33, 17, "tensor"), (150, 260, 20, "channel"), (20, 700, 300, "channel")])
def test_float_gemm_path_is_the_fma_chain_on_every_isa(isa, rng, m, k, n, scale_mode):
    w_kn, scales, gs = make_case(rng, k, n, scale_mode)
    weights = build(w_kn, scales, gs)
    assert weights.compute_path(m, ACT_NONE) == "f32_gemm"
    assert weights.compute_path(7, ACT_NONE) != "f32_gemm"
    a = (rng.standard_normal((m, k)) * rng.uniform(0.1, 100, (m, 1))).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    assert np.array_equal(weights.matmul(a, ACT_NONE, bias),
                          float_gemm_reference(a, w_kn, scales, bias))
    # Inf times a zero weight is NaN, as in a float matmul; other rows stay finite.
    a[3, 0] = np.inf
    y = weights.matmul(a, ACT_NONE)
    assert np.array_equal(y, float_gemm_reference(a, w_kn, scales, None), equal_nan=True)
    assert not np.isnan(np.delete(y, 3, axis=0)).any()


def test_every_isa_runs_its_own_kernels():
    """Each forced ISA computes with its own table: the path names the planner
    reports differ where the tables differ (a CPU with AVX2 or better must not
    fall back to the scalar table unnoticed)."""
    w_kn, scales, gs = make_case(np.random.default_rng(0), 4096, 64, "tensor")
    weights = build(w_kn, scales, gs)
    paths = {}
    for name in native.available_isas():
        with native.forced_isa(name):
            assert native.isa() == name
            paths[name] = (weights.compute_path(1, ACT_INT8_TOKEN),
                           weights.compute_path(4, ACT_NONE), weights.compute_path(64, ACT_NONE))
    assert paths["scalar"] == ("i8_multiply", "f32_multiply", "f32_gemm")
    for name in set(paths) - {"scalar"}:
        assert paths[name][1:] == ("f32_decoded", "f32_gemm"), name


# The table-lookup integer kernel (AVX2) serves M >= 6 with one scale group: rows in
# groups of 16, then for the rows left a zero-padded group of 16 (12..15), a group of
# 8 plus the multiply kernel (8..11), a zero-padded group of 8 (6..7) or the multiply
# kernel alone (1..5). The M values hit each of these ends; K and N hit partial blocks
# and panels, N > 256 spans several 32-panel tasks.
@pytest.mark.parametrize("m,k,n,scale_mode", [
    (6, 128, 8, "tensor"), (7, 129, 33, "channel"), (8, 128, 8, "tensor"),
    (11, 300, 40, "channel"), (13, 200, 17, "tensor"), (16, 128, 8, "tensor"),
    (17, 4096, 300, "channel"), (23, 500, 24, "tensor"), (26, 1000, 61, "channel"),
    (47, 33, 513, "tensor"), (130, 4096, 9, "channel")])
def test_many_rows_one_scale_group(isa, rng, m, k, n, scale_mode):
    w_kn, scales, gs = make_case(rng, k, n, scale_mode)
    weights = build(w_kn, scales, gs)
    a = rng.standard_normal((m, k)).astype(np.float32) * 2
    a[m // 2, k // 3] = np.nan  # a NaN row inside a group: only it turns to NaN
    bias = rng.standard_normal(n).astype(np.float32)
    y = weights.matmul(a, ACT_INT8_TOKEN, bias)
    assert np.array_equal(y, ternary_matmul_reference(a, w_kn, scales, gs, 1, bias), equal_nan=True)
    assert np.isnan(y[m // 2]).all() and not np.isnan(np.delete(y, m // 2, axis=0)).any()


@given(m=st.integers(5, 40), k=st.integers(1, 300), n=st.integers(1, 20),
       w_bias=st.sampled_from([-1, 0, 1]))
@settings(max_examples=25, deadline=None)
def test_many_rows_lookup_matches_reference_hypothesis(m, k, n, w_bias):
    """Random shapes on the active ISA, with weights skewed to one value (all-zero
    and all-sign nibbles hit the table's corner entries)."""
    rng = np.random.default_rng(m * 1000003 + k * 101 + n)
    w_kn = rng.integers(-1, 2, size=(k, n)).astype(np.int8)
    w_kn[rng.random((k, n)) < 0.5] = w_bias
    scales = rng.uniform(0.01, 2.0, n).astype(np.float32)
    weights = build(w_kn, scales, 0)
    a = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10)).astype(np.float32)
    assert np.array_equal(weights.matmul(a, ACT_INT8_TOKEN),
                          ternary_matmul_reference(a, w_kn, scales, 0, 1))


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("group_size", [0, 16384])
def test_no_overflow_at_full_int8_magnitude(isa, sign, group_size):
    """K = 65536 with every |a| equal (every q = +-127) and every weight equal: the
    largest sums the quantizer can produce (|isum| = 127 * 65536, or 127 * 16384 per
    group) must come out exact."""
    k, n = 65536, 9
    a = np.full((2, k), 0.5, dtype=np.float32)
    a[1, ::2] = -0.5  # the second row alternates q = +127, -127
    w_kn = np.full((k, n), sign, dtype=np.int8)
    groups = k // group_size if group_size else 1
    scales = np.full(n * groups, 0.25, dtype=np.float32)
    weights = build(w_kn, scales, group_size)
    y = weights.matmul(a, ACT_INT8_TOKEN)
    s = np.float32(127) * (np.float32(1) / np.float32(0.5))
    acc = np.float32(0)
    for _ in range(groups):
        acc = np.float32(acc + np.float32(sign * 127 * (k // groups)) * np.float32(0.25))
    assert np.all(y[0] == acc / s)
    assert np.all(y[1] == 0)
    assert np.array_equal(y, ternary_matmul_reference(a, w_kn, scales, group_size, 1))
    np.testing.assert_allclose(weights.matmul(a, ACT_NONE)[0], sign * 0.5 * k * 0.25, rtol=1e-6)


@pytest.mark.parametrize("group_size", [2047, 2080])
def test_no_int16_overflow_in_unaligned_groups(isa, group_size):
    """Groups not on 32-element chunk boundaries, around the 64-chunk limit of the
    int16 partial sums (a group of 2047 covers 64 or 65 chunks, one of 2080 covers 65
    or 66), with every product at its maximum 2 * 127 in the biased code domain."""
    k, n = 4096, 8
    a = np.full((1, k), 3.0, dtype=np.float32)
    w_kn = np.ones((k, n), dtype=np.int8)
    groups = -(-k // group_size)
    scales = np.full(n * groups, 0.5, dtype=np.float32)
    weights = build(w_kn, scales, group_size)
    expected = ternary_matmul_reference(a, w_kn, scales, group_size, 1)
    assert np.array_equal(weights.matmul(a, ACT_INT8_TOKEN), expected)
    assert expected[0, 0] == np.float32(127 * k * 0.5) / (np.float32(127) * (np.float32(1) / np.float32(3.0)))


def test_non_finite_rows(isa, rng):
    w_kn, scales, gs = make_case(rng, 70, 10, "tensor")
    weights = build(w_kn, scales, gs)
    a = rng.standard_normal((4, 70)).astype(np.float32)
    a[1, 3] = np.nan
    a[2, 69] = np.inf
    y = weights.matmul(a, ACT_INT8_TOKEN, np.ones(10, np.float32))
    assert np.all(np.isnan(y[1])) and np.all(np.isnan(y[2]))
    assert np.all(np.isfinite(y[[0, 3]]))
    assert np.array_equal(y, ternary_matmul_reference(a, w_kn, scales, 0, 1, np.ones(10)),
                          equal_nan=True)
    floats = weights.matmul(a, ACT_NONE)
    assert np.all(np.isnan(floats[1]))
    np.testing.assert_allclose(floats, ternary_matmul_reference(a, w_kn, scales, 0, 0),
                               rtol=1e-5, atol=1e-5)


def test_tiny_and_huge_activation_scales(isa, rng):
    w_kn, scales, gs = make_case(rng, 300, 16, "channel")
    weights = build(w_kn, scales, gs)
    a = np.stack([np.zeros(300), rng.standard_normal(300) * 1e-8,
                  rng.standard_normal(300) * 1e30]).astype(np.float32)
    assert np.array_equal(weights.matmul(a, 1), ternary_matmul_reference(a, w_kn, scales, 0, 1))
    assert np.all(weights.matmul(a, 1)[0] == 0)


def test_empty_dimensions(isa, rng):
    """K = 0 is an empty sum (bias only), N = 0 and M = 0 give empty outputs."""
    weights = TernaryWeights(b"", 0, 4, [0.5], "2bit")
    bias = np.arange(4, dtype=np.float32)
    for act in (ACT_NONE, ACT_INT8_TOKEN):
        assert np.array_equal(weights.matmul(np.zeros((3, 0), np.float32), act, bias),
                              np.tile(bias, (3, 1)))
    empty_n = TernaryWeights(b"", 8, 0, [1.0], "base3")
    assert empty_n.matmul(np.ones((2, 8), np.float32), 1).shape == (2, 0)
    w_kn, scales, gs = make_case(rng, 8, 4, "tensor")
    assert build(w_kn, scales, gs).matmul(np.ones((0, 8), np.float32), 1).shape == (0, 4)


def test_invalid_codes_name_row_and_column():
    w_nk = np.zeros((3, 10), dtype=np.int8)
    packed = pack_2bit(w_nk)
    packed[2, 1] |= 3 << 4  # element 6 of row 2
    with pytest.raises(ValueError, match=r"invalid 2bit code .* row 2 .* column 6"):
        TernaryWeights(packed, 10, 3, [1.0], "2bit")
    packed = pack_base3(w_nk)
    packed[1, 1] = 250  # elements 5..9 of row 1
    with pytest.raises(ValueError, match=r"invalid base3 code .* row 1 .* column 5"):
        TernaryWeights(packed, 10, 3, [1.0], "base3")
    # Padding bits past k in the last byte are ignored.
    packed = pack_2bit(w_nk)
    packed[:, 2] |= 0xF0  # elements 10 and 11 do not exist
    TernaryWeights(packed, 10, 3, [1.0], "2bit")


@pytest.mark.parametrize("kwargs,message", [
    (dict(packed=bytes(5)), r"hold 5 bytes, but 2bit needs .* = 6"),
    (dict(scales=[1.0, 2.0]), r"n_scales = 2, expected 1 .* or n = 3"),
    (dict(scales=np.ones(6), group_size=3), r"n_scales = 6, expected .* = 3 \* 3 = 9"),
    (dict(scales=[1.0, np.nan, 1.0]), r"scale 1 is nan"),
    (dict(scales=[1.0, 1.0, np.inf]), r"scale 2 is inf"),
    (dict(scales=[0.0]), r"scale 0 is 0; every scale must be finite and > 0"),
    (dict(scales=[-1.0]), r"scale 0 is -1"),
    (dict(fmt=7), r"unknown packed format 7"),
    (dict(k=1 << 24, packed=bytes(3 << 22)), r"k = 16777216 is too large"),
])
def test_prepack_errors(kwargs, message):
    args = dict(packed=bytes(6), k=8, n=3, scales=[1.0], fmt="2bit", group_size=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        TernaryWeights(**args)


def test_compute_errors(rng):
    w_kn, scales, gs = make_case(rng, 8, 3, "tensor")
    weights = build(w_kn, scales, gs)
    with pytest.raises(ValueError, match=r"unknown act_quant 3"):
        weights.matmul(np.ones((1, 8), np.float32), act_quant=3)
    with pytest.raises(ValueError, match=r"act_quant 2 needs a finite act_scale > 0"):
        weights.matmul(np.ones((1, 8), np.float32), act_quant=2)
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 8\]"):
        weights.matmul(np.ones((1, 7), np.float32))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        weights.matmul(np.ones((1, 8), np.float32), bias=np.ones(4))


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 9), k=st.integers(1, 300), n=st.integers(1, 20),
       gs=st.sampled_from([0, 1, 3, 31, 32, 64, 96, 128, 129, 1000]),
       fmt=st.sampled_from(["2bit", "base3"]), seed=st.integers(0, 2**32 - 1),
       magnitude=st.sampled_from([1e-6, 1.0, 1e6]))
def test_property_exact_on_every_isa(m, k, n, gs, fmt, seed, magnitude):
    rng = np.random.default_rng(seed)
    w_kn, scales, gs = make_case(rng, k, n, "group" if gs else "channel", gs)
    weights = build(w_kn, scales, gs, fmt)
    a = (rng.standard_normal((m, k)) * magnitude).astype(np.float32)
    expected = ternary_matmul_reference(a, w_kn, scales, gs, 1)
    for name in native.available_isas():
        with native.forced_isa(name):
            assert np.array_equal(weights.matmul(a, ACT_INT8_TOKEN), expected), name


@pytest.mark.parametrize("m", [1, 5])
@pytest.mark.parametrize("group_size", [0, 32])
def test_float_path_ieee_special_values(isa, m, group_size):
    """Float path: Inf meets weights -1, 0 and +1, and finite sums overflow; the result
    must be what a real float multiply gives (-Inf, NaN, +Inf), not an artifact of a
    rewritten sum."""
    k = 300
    groups = -(-k // group_size) if group_size else 1
    w_kn = np.zeros((k, 3), dtype=np.int8)
    w_kn[7] = [-1, 0, 1]
    weights = build(w_kn, np.ones(3 * groups if group_size else 3, np.float32), group_size)
    a = np.ones((m, k), dtype=np.float32)
    a[:, 7] = np.inf
    y = weights.matmul(a, ACT_NONE)
    assert np.all(y[:, 0] == -np.inf) and np.all(np.isnan(y[:, 1])) and np.all(y[:, 2] == np.inf)
    big = np.full((m, k), 3e38, dtype=np.float32)
    w_kn = np.ones((k, 2), dtype=np.int8)
    w_kn[:, 1] = -1
    weights = build(w_kn, np.ones(2 * groups if group_size else 2, np.float32), group_size)
    assert np.array_equal(weights.matmul(big, ACT_NONE), np.tile([np.inf, -np.inf], (m, 1)))


@pytest.mark.parametrize("act", [ACT_NONE, ACT_INT8_TOKEN])
def test_parallel_for_runs_tasks_in_any_order_on_threads(rng, act):
    """Through the parallel-for callback (tasks run in reverse order on two threads,
    as cffi releases the GIL around the C task calls) the result is identical to the
    serial run: tasks share no mutable state."""
    from concurrent.futures import ThreadPoolExecutor

    ffi, lib = native.ffi(), native.lib()
    w_kn, scales, gs = make_case(rng, 700, 257, "group", 64)
    weights = build(w_kn, scales, gs)
    a = rng.standard_normal((37, 700)).astype(np.float32)
    serial = weights.matmul(a, act)
    counts = []

    @ffi.callback("void(void *, obx_task_fn, void *, size_t)")
    def parallel_for(runner, fn, task_arg, count):
        counts.append(count)
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda i: fn(task_arg, i), reversed(range(count))))

    y = np.empty((37, 257), dtype=np.float32)
    err = ffi.new("char[]", 256)
    status = lib.obx_tmm_compute(weights._handle, ffi.from_buffer("float[]", a), 37, ffi.NULL, act,
                                 ffi.from_buffer("float[]", y), parallel_for, ffi.NULL, err, 256)
    assert status == 0, ffi.string(err)
    assert max(counts) > 1
    assert np.array_equal(y, serial)


def test_concurrent_calls_reuse_their_threads_scratch_safely(isa, rng):
    """Every call takes its buffers from its thread's scratch cache (tmm_scratch.c): calls
    on four threads at once, each alternating sizes that grow, shrink and switch paths
    (the cache reuses, replaces and nests blocks), give the serial results bit for bit."""
    from concurrent.futures import ThreadPoolExecutor

    w_kn, scales, gs = make_case(rng, 700, 257, "channel")
    weights = build(w_kn, scales, gs)
    cases = [(rng.standard_normal((m, 700)).astype(np.float32), act)
             for m in (1, 9, 130, 37) for act in (ACT_NONE, ACT_INT8_TOKEN)]
    serial = [weights.matmul(a, act) for a, act in cases]

    def worker(shift):
        for step in range(3 * len(cases)):
            index = (step + shift) % len(cases)
            a, act = cases[index]
            if not np.array_equal(weights.matmul(a, act), serial[index]):
                return index
        return None

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(worker, range(4))) == [None] * 4


@pytest.mark.parametrize("fmt", ["2bit", "base3"])
def test_prepack_reads_what_the_codec_writes(rng, fmt):
    """Packed bytes from the library's own encoder (onnxbit.codecs) and from the
    independent packers above give the same weights."""
    from onnxbit.codecs import pack_ternary

    w_kn, scales, gs = make_case(rng, 333, 21, "channel")
    ours = build(w_kn, scales, gs, fmt)
    theirs = TernaryWeights(pack_ternary(w_kn.T.copy(), fmt), 333, 21, scales, fmt, gs)
    assert np.array_equal(pack_ternary(w_kn.T.copy(), fmt), PACKERS[fmt](w_kn.T.copy()))
    a = rng.standard_normal((3, 333)).astype(np.float32)
    assert np.array_equal(ours.matmul(a, 1), theirs.matmul(a, 1))


REPO = Path(__file__).resolve().parents[1]
NATIVE_TESTS = REPO / "tests" / "native"


def _build(compiler, flags, sources, exe):
    build = subprocess.run([compiler, "-std=gnu11", "-O2", "-ffp-contract=off",
                            f"-I{REPO / 'csrc' / 'include'}", f"-I{REPO / 'csrc'}",
                            f"-I{NATIVE_TESTS}", *flags, *map(str, sources), "-lm", "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr


def _run(exe, runner=()):
    run = subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 0 mismatches" in run.stdout
    return run.stdout


def _build_and_run(compiler, flags, sources, exe, runner=()):
    _build(compiler, flags, sources, exe)
    return _run(exe, runner)


@pytest.mark.skipif("avx2" not in native.available_isas() or not shutil.which("gcc"),
                    reason="needs an AVX2 CPU and gcc")
def test_avx512_and_avxvnni_integer_kernels_on_emulated_intrinsics(tmp_path):
    """Where the CPU lacks AVX-512 or AVX-VNNI the `isa` fixture cannot run those kernels
    (test_isa.py checks it runs every one the CPU has): compiled on stand-ins for
    their intrinsics (tests/native/emulated_x86_intrinsics.h), they must give the scalar
    kernel's sums bit for bit, full-magnitude K = 65536 included."""
    matmul = REPO / "csrc" / "matmul"
    _build_and_run("gcc", ["-mavx2", "-mfma", "-mbmi2", "-DONNXBIT_X86=1"],
                   [NATIVE_TESTS / "check_emulated_i8_kernels.c",
                    NATIVE_TESTS / "emulated_avx512_kernels.c",
                    NATIVE_TESTS / "emulated_avxvnni_kernels.c",
                    matmul / "tmm_kernel_avx2.c", matmul / "tmm_gemv_avx2.c",
                    matmul / "tmm_kernel_scalar.c", matmul / "tmm_prepack.c",
                    matmul / "tmm_shape.c", REPO / "csrc" / "codec" / "formats.c",
                    REPO / "csrc" / "memory" / "weight_memory.c"],
                   tmp_path / "check_emulated")


def test_neon_path_under_qemu(tmp_path, aarch64_tools):
    """The NEON kernels, cross-compiled and run under qemu, against the scalar path:
    on a CPU with the dot-product extension (-cpu max) the selected table has the
    SDOT integer kernel and the plain one runs too (forced baseline); on a Cortex-A53,
    which has no SDOT (qemu raises SIGILL on it), the selection must fall back."""
    # The whole compute core but the x86 files: the platform table links every family.
    sources = [p for p in (REPO / "csrc").rglob("*.c") if "_avx" not in p.name]
    exe = tmp_path / "check_neon"
    _build("aarch64-linux-gnu-gcc", ["-DONNXBIT_ARM64=1", "-pthread"],
           [NATIVE_TESTS / "check_neon_against_scalar.c", *sources], exe)
    for cpu, dotprod in (("max", 1), ("cortex-a53", 0)):
        out = _run(exe, runner=("qemu-aarch64", "-cpu", cpu, "-L", "/usr/aarch64-linux-gnu"))
        assert out.splitlines()[0] == f"dotprod: {dotprod}", (cpu, out)


def test_activation_scale_is_rounded_as_pytorch_rounds_it(isa):
    """BitNet writes s = 127 / max|x|; PyTorch evaluates that as reciprocal(max) * 127
    (two roundings). For max = 0.9093602 the two spellings differ by one ulp, enough
    to move x = 0.010740474 from q = 1 to q = 2: the op must give torch's q = 2."""
    amax, x = np.float32(0.9093602), np.float32(0.010740474)
    s_torch = np.float32(127) * (np.float32(1) / amax)
    assert s_torch != np.float32(127) / amax and np.rint(x * s_torch) == 2
    a = np.array([[amax, x]], dtype=np.float32)
    w_kn = np.array([[0], [1]], dtype=np.int8)  # only x contributes
    y = build(w_kn, np.ones(1, np.float32), 0).matmul(a, ACT_INT8_TOKEN)
    assert y[0, 0] == np.float32(2) / s_torch


# Token generation (M = 1..5) with one scale group runs, on AVX2, the single-row
# table-lookup kernel over the column-block layout (tmm_gemv_avx2.c), row by row:
# K hits partial pairs, K-blocks and slabs of 4 K-blocks (4097 = 32 blocks + 1),
# N partial 32-column blocks and several tasks (257 columns = 9 blocks).
@pytest.mark.parametrize("fmt", ["2bit", "base3"])
@pytest.mark.parametrize("scale_mode", ["tensor", "channel"])
def test_token_rows_match_reference(isa, rng, fmt, scale_mode):
    for k in (1, 5, 64, 255, 4096, 4097):
        for n in (1, 3, 31, 33, 257):
            w_kn, scales, gs = make_case(rng, k, n, scale_mode)
            weights = build(w_kn, scales, gs, fmt)
            bias = rng.standard_normal(n).astype(np.float32)
            for m in (1, 2, 5):
                a = rng.standard_normal((m, k)).astype(np.float32) * rng.uniform(0.1, 10)
                for b in (None, bias):
                    expected = ternary_matmul_reference(a, w_kn, scales, gs, 1, b)
                    assert np.array_equal(weights.matmul(a, ACT_INT8_TOKEN, b), expected), (k, n, m)
            a[-1, k // 2] = np.nan
            y = weights.matmul(a, ACT_INT8_TOKEN, bias)
            assert np.isnan(y[-1]).all() and not np.isnan(y[:-1]).any()
            assert np.array_equal(y, ternary_matmul_reference(a, w_kn, scales, gs, 1, bias),
                                  equal_nan=True)


@pytest.mark.parametrize("q_pair,w_pair", [
    ((127, 127), (1, 1)),     # table entry 510: the largest high plane (15)
    ((-127, -127), (1, 1)),   # entry 2
    ((127, 96), (1, 1)),      # entry 479: high plane 14, low plane 31 (its largest)
    ((127, -96), (-1, 1)),    # entry 33
    ((127, 127), (0, 0)),     # entry 256 (zero weights)
])
def test_token_row_lookup_sums_at_full_magnitude(isa, q_pair, w_pair):
    """K = 65536 (512 K-blocks, 128 slabs) with every pair of k at one table entry:
    the byte, uint16 and int32 stages of the lookup kernel must all stay exact."""
    k, n = 65536, 33
    a = np.tile(np.array(q_pair, dtype=np.float32) / np.float32(127), k // 2)[None, :]
    w_kn = np.tile(np.array(w_pair, dtype=np.int8)[:, None], (k // 2, n))
    scales = np.full(1, 0.25, dtype=np.float32)
    weights = build(w_kn, scales, 0)
    expected = ternary_matmul_reference(a, w_kn, scales, 0, 1)
    isum = (k // 2) * (q_pair[0] * w_pair[0] + q_pair[1] * w_pair[1])
    assert expected[0, 0] == np.float32(np.float32(isum) * np.float32(0.25)) / np.float32(127)
    assert np.array_equal(weights.matmul(a, ACT_INT8_TOKEN), expected)


@pytest.mark.skipif("avx2" not in native.available_isas(), reason="needs an AVX2 CPU")
@pytest.mark.parametrize("fmt", ["2bit", "base3"])
def test_token_rows_on_the_plain_avx2_level(rng, fmt):
    """CPUs with AVX2 but no VNNI run token rows through the single-row lookup
    kernel (the GEMV slots of the plain AVX2 table), over a layout prepack only
    builds for that table: forced here on any AVX2 CPU, weights prepacked under
    it, every M that path serves and the multiply rows past it."""
    with native.forced_isa("avx2", baseline=True):
        for k, n in ((5, 3), (255, 33), (4097, 257)):
            w_kn, scales, gs = make_case(rng, k, n, "channel")
            weights = build(w_kn, scales, gs, fmt)
            bias = rng.standard_normal(n).astype(np.float32)
            for m in (1, 2, 5, 6):
                a = rng.standard_normal((m, k)).astype(np.float32)
                a[m - 1, 0] = np.nan if m == 5 else a[m - 1, 0]
                expected = ternary_matmul_reference(a, w_kn, scales, gs, 1, bias)
                assert np.array_equal(weights.matmul(a, ACT_INT8_TOKEN, bias), expected,
                                      equal_nan=True), (k, n, m)


# M from the path's first row (24) over row-tile tails (6 rows a kernel call:
# 25, 49, 53) and several tasks (256 rows); N over panel-tile tails (32 columns:
# 3, 33, 257 leave 1..3 panels or part of one); K off the 128 blocks and the
# 8-byte steps (5, 255, 1000), over slabs of 8 K-blocks (1024 one slab, 1025
# and 4096 several, the sums carried between them) and K = 0 (bias only).
# The tables with the path: AVX-512 and AVX2 with AVX-VNNI (the plain AVX2
# level keeps its lookup path). test_isa.py fails where the CPU has a level
# that the library does not detect, so these skips cannot hide a kernel.
@pytest.mark.parametrize("level", ["avx512", "avxvnni"])
@pytest.mark.parametrize("m,k,n", [(24, 5, 3), (25, 77, 8), (49, 255, 33), (53, 1000, 257),
                                   (130, 4096, 64),
                                   (300, 200, 40), (60, 1024, 20), (61, 1025, 40), (50, 0, 9)])
def test_integer_gemm_path_is_exact(rng, m, k, n, level):
    has_vnni = "avx2" in native.available_isas() and native.lib().obx_cpu_has_avxvnni()
    if level == "avx512" and "avx512" not in native.available_isas() or level == "avxvnni" and not has_vnni:
        pytest.skip(f"this CPU has no {level}")
    w_kn, scales, gs = make_case(rng, k, n, "channel")
    weights = build(w_kn, scales, gs)
    bias = rng.standard_normal(n).astype(np.float32)
    a = rng.standard_normal((m, k)).astype(np.float32) * 3
    if k:
        a[m // 2, k - 1] = np.inf  # a row of NaN from a non-finite activation
        a[m - 1] *= 1e-30  # a row whose scale is at the 1e-5 floor
    # (the numpy reference takes no K = 0: every sum is empty, y is the bias)
    expected = (ternary_matmul_reference(a, w_kn, scales, gs, 1, bias) if k
                else np.tile(bias, (m, 1)))
    with native.forced_isa("scalar"):
        scalar = weights.matmul(a, ACT_INT8_TOKEN, bias)
    assert np.array_equal(scalar, expected, equal_nan=True)
    with native.forced_isa("avx512" if level == "avx512" else "avx2"):
        assert weights.compute_path(m, ACT_INT8_TOKEN) == "i8_gemm"
        assert weights.compute_path(23, ACT_INT8_TOKEN) != "i8_gemm"
        assert np.array_equal(weights.matmul(a, ACT_INT8_TOKEN, bias), expected, equal_nan=True)
        # rows past a task's first 256 and in the last partial row tile, alone
        tail = a[m - 24:]
        assert np.array_equal(weights.matmul(tail, ACT_INT8_TOKEN, bias), expected[m - 24:],
                              equal_nan=True)
