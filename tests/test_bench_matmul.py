"""`onnxbit bench matmul`: peer model builders, accuracy checks, interleaving,
and one tiny end-to-end run (structure and accuracy, not timings)."""

import json

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxbit.bench import matmul, peers, timing
from onnxbit.cli.main import main
from onnxbit.reference.ternary_matmul import ternary_matmul_reference
from onnxbit.targets.matmulnbits import nbits_dequantized, pack_nbits


def _run(model, a):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"A": a})[0]


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("k", [64, 200])
def test_nbits_packing_matches_dequantized_weight(bits, k, rng):
    # The converter's MatMulNBits packer, which the benchmark's peers use too.
    # accuracy_level 0 keeps activations in float, so any layout mistake in
    # B, scales or packed zero points shows up far above rounding error.
    n, block = 24, 32
    blocks = -(-k // block)
    codes = rng.integers(0, 1 << bits, (k, n)).astype(np.uint8)
    zero_points = rng.integers(0, 1 << bits, (blocks, n)).astype(np.uint8)
    scales = rng.uniform(0.5, 2.0, (blocks, n)).astype(np.float32)
    packed = pack_nbits(codes, bits, scales, zero_points, "group", block)
    assert packed.b.shape == (n, blocks, block * bits // 8)
    assert packed.zero_points.shape == (n * -(-blocks * bits // 8),)
    w = nbits_dequantized(packed)
    expected = (codes.astype(np.float32) - np.repeat(zero_points, block, axis=0)[:k]) * np.repeat(scales, block, 0)[:k]
    np.testing.assert_array_equal(w, expected)
    a = rng.standard_normal((3, k)).astype(np.float32)
    y = _run(peers.matmul_nbits_model(packed, accuracy_level=0), a)
    reference = a.astype(np.float64) @ w
    rounding = k * 2.0 ** -23 * (np.abs(a).astype(np.float64) @ np.abs(w))
    assert np.all(np.abs(y - reference) <= rounding)


def test_nbits_packing_rejects_bad_input():
    codes = np.zeros((64, 4), np.uint8)
    ok = np.ones((2, 4), np.float32), np.zeros((2, 4), np.uint8)
    with pytest.raises(ValueError, match="bits must be 2, 4 or 8"):
        pack_nbits(codes, 3, *ok, "group", 32)
    with pytest.raises(ValueError, match="power of two"):
        pack_nbits(codes, 4, *ok, "group", 24)
    with pytest.raises(ValueError, match="must be < 4"):
        pack_nbits(codes + 4, 2, *ok, "group", 32)
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        peers.fp32_matmul_model(np.full((4, 4), 2, np.int8), 1.0)


@pytest.mark.parametrize("variant", [v for v in matmul.VARIANTS if v.peer], ids=lambda v: v.name)
def test_peer_models_compute_the_ternary_product(variant, rng):
    codes = matmul.random_ternary(rng, 96, 40)
    a = rng.standard_normal((5, 96)).astype(np.float32)
    y = _run(variant.build(codes, 0.05), a)
    error, bound = matmul.check_output(variant, matmul.ReferenceProduct(a, codes, 0.05), y)
    assert error <= bound
    # The bound is tight enough to catch a wrong product: drop one row of W.
    broken = codes.copy()
    broken[0] = 0
    error, bound = matmul.check_output(variant, matmul.ReferenceProduct(a, broken, 0.05), y)
    assert error > bound


def test_int8_token_emulation_equals_the_project_reference(rng):
    codes = matmul.random_ternary(rng, 300, 24)
    a = (rng.standard_normal((4, 300)) * [[1e-7], [1.0], [50.0], [0.0]]).astype(np.float32)
    fast = matmul.ReferenceProduct(a, codes, 0.07).int8_token()
    slow = ternary_matmul_reference(a, codes, np.array([0.07], np.float32), act_quant=1)
    np.testing.assert_array_equal(fast, slow)


def test_reference_checks_a_spread_of_rows(rng):
    codes = matmul.random_ternary(rng, 8, 4)
    a = rng.standard_normal((100, 8)).astype(np.float32)
    rows = matmul.ReferenceProduct(a, codes, 1.0).rows
    assert len(rows) == matmul.CHECK_ROWS and rows[0] == 0 and rows[-1] == 99


@pytest.mark.parametrize("variant", matmul.VARIANTS, ids=lambda v: v.name)
def test_check_output_flags_results_outside_the_bound(variant, rng):
    codes = matmul.random_ternary(rng, 64, 16)
    a = rng.standard_normal((3, 64)).astype(np.float32)
    reference = matmul.ReferenceProduct(a, codes, 0.1)
    if variant.activations == matmul.ACT_INT8_TOKEN:
        good = ternary_matmul_reference(a, codes, np.array([0.1], np.float32), act_quant=1)
    else:
        good = (a.astype(np.float64) @ peers.dequantized_weight(codes, 0.1)).astype(np.float32)
    error, bound = matmul.check_output(variant, reference, good)
    assert error <= bound
    bad = good.copy()
    bad[1, 3] += np.float32(max(3 * bound, 1e-3 * abs(bad[1, 3])) + 1e-3)
    error, bound = matmul.check_output(variant, reference, bad)
    assert error > bound
    nan = good.copy()
    nan[2, 5] = np.nan
    assert matmul.check_output(variant, reference, nan)[0] == np.inf


def test_rotation_is_round_robin_starting_elsewhere_each_round():
    calls = []
    probes = {name: (lambda name=name: calls.append(name) or {"t": 1.0}) for name in "abc"}
    samples = timing.interleave(probes, rounds=4)
    assert calls == list("abc" "bca" "cab" "abc")
    assert {name: len(s["t"]) for name, s in samples.items()} == {"a": 4, "b": 4, "c": 4}
    with pytest.raises(ValueError, match="rounds"):
        timing.interleave(probes, rounds=0)


def test_spinning_sessions_alternate_in_blocks_after_a_pause(monkeypatch):
    calls, slept = [], []
    monkeypatch.setattr(timing.time, "sleep", lambda s: slept.append(s) or calls.append("|"))
    monkeypatch.setattr(timing, "WARM_UP_S", 0.0)  # probe count alone (the duration: the test below)
    probes = {name: (lambda name=name: calls.append(name) or {"t": float(len(calls))}) for name in "ab"}
    samples = timing.interleave_spinning(probes, rounds=7, block=3)
    # per block and variant: the pause, three untimed warm-up probes, then the timed ones
    assert timing.WARM_UP_PROBES == 3
    assert "".join(calls) == "|aaaaaa|bbbbbb" "|bbbbbb|aaaaaa" "|aaaa|bbbb"
    assert slept == [timing.SPIN_SETTLE_S] * 6
    assert {name: len(s["t"]) for name, s in samples.items()} == {"a": 7, "b": 7}
    assert samples["a"]["t"][:3] == [5.0, 6.0, 7.0]  # the warm-up probes (2.0-4.0) are not samples
    with pytest.raises(ValueError, match="rounds"):
        timing.interleave_spinning(probes, rounds=0)


def test_spinning_warm_up_lasts_warm_up_s_after_each_pause(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(timing.time, "sleep", lambda s: None)
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    calls = []

    def probe():  # each run takes 4 ms of the fake clock
        clock[0] += 0.004
        calls.append(clock[0])
        return {"t": clock[0]}

    samples = timing.interleave_spinning({"a": probe}, rounds=2, block=2)
    untimed = len(calls) - 2
    assert untimed * 0.004 >= timing.WARM_UP_S > (untimed - 1) * 0.004
    assert timing.WARM_UP_S >= 0.02  # less left blocks of short runs on one core (see timing.py)
    assert samples["a"]["t"] == calls[-2:]


@given(per_round=st.floats(0, 100), budget=st.floats(0.1, 100),
       lo=st.integers(1, 10), extra=st.integers(0, 50))
@settings(max_examples=50, deadline=None)
def test_rounds_for_budget_stays_in_range(per_round, budget, lo, extra):
    rounds = timing.rounds_for_budget(per_round, budget, lo, lo + extra)
    assert lo <= rounds <= lo + extra


def test_copies_stream_the_cold_budget():
    assert matmul.copies_for(4 << 20, 64 << 20, 24) == 16
    assert matmul.copies_for(64 << 20, 64 << 20, 24) == 2      # never fewer than 2
    assert matmul.copies_for(1 << 10, 64 << 20, 24) == 24      # capped


@pytest.mark.parametrize("text", ["1x2", "0x4x4", "ax4x4", "1x4x4x4"])
def test_shape_parse_rejects_malformed(text):
    with pytest.raises(matmul.BenchmarkError, match="MxKxN"):
        matmul.MatMulShape.parse(text)


def test_cli_rejects_bad_options():
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "matmul", "--shapes", "4x4"])
    assert result.exit_code != 0 and "MxKxN" in result.output
    result = runner.invoke(main, ["bench", "matmul", "--variants", "fp32,fp64"])
    assert result.exit_code != 0 and "unknown variant(s) fp64" in result.output
    result = runner.invoke(main, ["bench", "matmul", "--threads", "0"])
    assert result.exit_code != 0 and "--threads" in result.output


def test_quick_run_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "matmul", "--quick", "--threads", "1,2", "--repeat", "1",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    for shape in matmul.QUICK_SHAPES:
        for threads in ("1 thread,", "2 threads,"):
            assert f"{shape.label} (MxKxN), {threads}" in result.output
    assert "vs NBits2" in result.output and "DRAM read bandwidth" in result.output

    data = json.loads(out.read_text())
    assert data["machine"]["dram_read_gb_per_s"] > 0
    assert data["options"]["threads"] == [1, 2] and data["options"]["repeat"] == 1
    runs = data["runs"]
    assert [(r["shape"]["m"], r["threads"]) for r in runs] == [(s.m, t) for s in matmul.QUICK_SHAPES
                                                                 for t in (1, 2)]
    for run in runs:
        assert run["rounds"] == 1
        assert [row["name"] for row in run["variants"]] == list(matmul.VARIANT_NAMES)
        for row in run["variants"]:
            assert row["accurate"], row
            assert row["cold_ms"] > 0 and row["hot_ms"] > 0 and row["copies"] >= 2
            assert row["cold_quartiles_ms"][0] <= row["cold_ms"] <= row["cold_quartiles_ms"][1]
            assert row["cold_gb_per_s"] == pytest.approx(row["weight_bytes"] / (row["cold_ms"] * 1e6))
            expected_peers = {p for p in matmul.PEER_NAMES if p != row["name"]}
            assert set(row["speedup_cold"]) == expected_peers
            for peer in expected_peers:
                peer_row = next(r for r in run["variants"] if r["name"] == peer)
                assert row["speedup_cold"][peer] == pytest.approx(peer_row["cold_ms"] / row["cold_ms"])
    # Packed ternary weights are the smallest of all: 2 bits (or 1.6) a weight.
    first = {row["name"]: row["weight_bytes"] for row in runs[0]["variants"]}
    assert first["tmm_base3_a8"] < first["tmm_2bit_a8"] < first["nbits2"] < first["nbits4"] < first["int8"] < first["fp32"]


def test_scaling_table_divides_single_thread_by_multi_thread_times():
    from rich.console import Console

    from onnxbit.bench.render_matmul import render

    def run(threads, fp32_ms, tmm_ms):
        rows = [{"name": name, "label": label, "weight_bytes": 1e6, "copies": 2, "cold_ms": ms,
                 "cold_quartiles_ms": [ms, ms], "hot_ms": ms, "cold_gb_per_s": 1e6 / (ms * 1e6),
                 "speedup_cold": {}, "accurate": True}
                for name, label, ms in (("fp32", "fp32 MatMul", fp32_ms), ("tmm_2bit_a8", "Ternary a8", tmm_ms))]
        return {"threads": threads, "shape": {"m": 8, "k": 64, "n": 32}, "rounds": 1, "variants": rows}

    result = {"machine": {"cpu": "test", "logical_cpus": 2, "dram_read_gb_per_s": 2.0, "dram_probe_bytes": 1 << 20,
                          "onnxruntime": "x"},
              "cold_bytes_per_variant": 1 << 20, "runs": [run(1, 3.0, 1.0), run(2, 2.0, 0.8)]}
    console = Console(record=True, width=200)
    render(result, console)
    text = console.export_text()
    assert "thread scaling" in text
    assert "1.50x" in text and "1.25x" in text  # 3.0 / 2.0 and 1.0 / 0.8
    assert "% DRAM" in text and "50%" in text  # 1 GB/s of a 2 GB/s roofline, 1-thread table only


def test_a_failing_worker_is_reported(tmp_path, capfd):
    config = matmul.WorkerConfig(threads=1, shapes=[(1, 32, 32)], variants=["fp32"], repeat=1,
                                 budget_seconds=1.0, min_rounds=1, max_rounds=1, cold_bytes=1,
                                 max_copies=2, seed=0, model_dir=str(tmp_path / "missing"),
                                 weight_bytes={"1x32x32_fp32": 4096})
    with pytest.raises(matmul.BenchmarkError, match="worker for 1 thread"):
        matmul._run_worker_process(config)
    assert "missing" in capfd.readouterr().err


def test_quartiles_bracket_the_median():
    samples = [5e6, 1e6, 3e6, 2e6, 4e6]
    low, high = timing.quartiles_ms(samples)
    assert low <= timing.median_ms(samples) == 3.0 <= high
