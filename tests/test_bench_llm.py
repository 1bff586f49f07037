"""`onnxbit bench llm`: the KV-cache LM, its int4 MatMulNBits and ternary conversions,
prefill and decode timed, peak memory measured per variant in its own process."""

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from onnxbit.bench.llm import CacheLayout, LlmModelError, bench_llm, files_bytes
from onnxbit.cli.main import main

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"
MODEL = FIXTURES / "bitnet_llm_tiny.onnx"


def test_bench_llm_measures_every_variant_at_every_thread_count(tmp_path):
    result = bench_llm(MODEL, tmp_path, threads=(1, 2), prompt_tokens=8, decode_steps=2, rounds=2)
    assert [(t.variant, t.threads) for t in result.timings] == [
        (v, n) for n in (1, 2) for v in ("fp32", "int4-ort", "ternary")]
    assert all(t.prefill_ms > 0 and t.decode_tokens_per_s > 0 for t in result.timings)
    ops = {name: {n.op_type for n in onnx.load(path, load_external_data=False).graph.node}
           for name, path in result.files.items()}
    assert "MatMulNBits" in ops["int4-ort"] and "TernaryMatMul" not in ops["int4-ort"]
    assert "TernaryMatMul" in ops["ternary"]
    assert {m.variant for m in result.memory} == {"fp32", "int4-ort", "ternary"}
    assert all(m.peak_rss >= m.after_load_rss >= m.baseline_rss > 0 for m in result.memory)
    assert result.sizes["fp32"] == MODEL.stat().st_size > result.sizes["ternary"]


def test_sessions_spin_as_deployed_and_rounds_pause_for_the_last_pool_to_park(monkeypatch):
    """Decode is timed with onnxruntime's default spinning workers (with spinning off a
    two-thread 0.7B decode step took 1.2-1.6x as long); a pause before each variant's round
    keeps the previous session's still-spinning worker off its cores."""
    from onnxbit.bench import llm

    session = llm.open_session(MODEL, 2)
    with pytest.raises(Exception, match="allow_spinning"):
        session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    slept = []
    monkeypatch.setattr(llm.time, "sleep", slept.append)
    timings = llm.time_variants({"a": MODEL, "b": MODEL}, threads=2, prompt_tokens=4, decode_steps=1, rounds=3)
    assert [t.variant for t in timings] == ["a", "b"]
    assert slept == [llm.SPIN_SETTLE_S] * 6 and llm.SPIN_SETTLE_S >= 0.1


def test_bench_llm_cli_prints_the_table_and_reuses_given_conversions(tmp_path):
    runner = CliRunner()
    args = ["bench", "llm", str(MODEL), "--out-dir", str(tmp_path), "--threads", "1", "--prompt-tokens", "4",
            "--decode-steps", "2", "--rounds", "1", "--no-memory", "--json", str(tmp_path / "r.json")]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "decode tok/s" in result.output and "int4-ort" in result.output and "ternary" in result.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert {t["variant"] for t in saved["timings"]} == {"fp32", "int4-ort", "ternary"}
    ternary = Path(saved["files"]["ternary"])
    again = runner.invoke(main, args[:-2] + ["--converted", f"mine={ternary}"])
    assert again.exit_code == 0, again.output
    assert "mine" in again.output
    assert files_bytes(ternary) == ternary.stat().st_size


def test_a_model_without_a_kv_cache_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["bench", "llm", str(FIXTURES / "bitnet_online_torchscript.onnx"),
                                       "--out-dir", str(tmp_path)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "not a KV-cache export" in result.output.strip().splitlines()[-1]
    try:
        CacheLayout.of(FIXTURES / "digits_float_mlp.onnx")
    except LlmModelError as error:
        assert "input_ids" in str(error)
    else:
        raise AssertionError("an MLP passed as a KV-cache LM")
    bad = CliRunner().invoke(main, ["bench", "llm", str(MODEL), "--converted", "nonsense"])
    assert bad.exit_code != 0 and "NAME=PATH" in bad.output


def test_decode_profile_splits_decode_node_time_by_op_type(tmp_path):
    from onnxbit.bench.llm_profile import decode_profile
    from onnxbit.convert import convert

    converted = tmp_path / "ternary.onnx"
    convert(MODEL, output_path=converted, progress=False)
    shares = decode_profile(converted, threads=1, prompt_tokens=4, steps=3)
    ops = {op: share for op, share in shares.items() if not op.startswith("_")}
    assert "TernaryMatMul" in ops and "MatMul" in ops  # lm_head stays a float MatMul
    assert abs(sum(ops.values()) - 1.0) < 1e-9 and shares["_per_token_ms"] > 0
