"""`onnxbit bench conv` runs every variant on a quick shape, and the variant
models compute the same convolution (so the timings compare like with like)."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

import onnxbit
from onnxbit.bench.conv import QUICK_SHAPES, run_benchmark, variant_models
from onnxbit.cli.main import main as cli


def test_variant_models_agree_with_fp32():
    rng = np.random.default_rng(0)
    for shape in QUICK_SHAPES:
        models = variant_models(shape, rng)
        x = rng.standard_normal((1, shape.channels, shape.size, shape.size)).astype(np.float32)
        outputs = {name: onnxbit.InferenceSession(model).run(None, {"X": x})[0] for name, model in models.items()}
        reference = outputs.pop("fp32")
        for name, y in outputs.items():
            assert y.shape == reference.shape, name
            tolerance = 0.05 if name in ("ternary_a8", "ternary_a8px", "convinteger", "int4") else 1e-4
            assert np.abs(y - reference).max() <= tolerance * np.abs(reference).max(), name


def test_cli_quick_run(tmp_path):
    out = tmp_path / "conv.json"
    result = CliRunner().invoke(cli, ["bench", "conv", "--quick", "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "ternary_a8" in result.output and out.exists()


def test_cpu_time_clock_times_one_thread_runs_only():
    result = run_benchmark(QUICK_SHAPES[:1], threads=(1, 2), rounds=1, variants=("fp32", "ternary_a8"),
                           cpu_time=True)
    assert [(run["threads"], run["clock"]) for run in result["runs"]] == [(1, "thread cpu"), (2, "wall")]
    assert all(ms > 0 for run in result["runs"] for ms in run["ms"].values())


def test_sessions_keep_spinning_workers_and_two_threads_alternate_in_blocks(monkeypatch):
    """Timed as deployed: onnxruntime's default spinning workers, variants alternating run by
    run at one thread and in blocks after a pause at two (timing.interleave_for_threads)."""
    import onnxruntime as ort

    import onnxbit.runtime
    from onnxbit.bench import timing

    options_seen = []
    original = onnxbit.runtime.InferenceSession  # run_benchmark imports it from here when it runs

    def recording_session(model, sess_options=None, **kwargs):
        options_seen.append(sess_options)
        return original(model, sess_options=sess_options, **kwargs)

    monkeypatch.setattr(onnxbit.runtime, "InferenceSession", recording_session)
    slept = []
    monkeypatch.setattr(timing.time, "sleep", slept.append)
    result = run_benchmark(QUICK_SHAPES[:1], threads=(1, 2), rounds=5, variants=("fp32", "ternary_a8"))
    assert [run["threads"] for run in result["runs"]] == [1, 2]
    assert len(options_seen) == 4 and all(isinstance(o, ort.SessionOptions) for o in options_seen)
    for options in options_seen:
        try:
            spinning = options.get_session_config_entry("session.intra_op.allow_spinning")
        except Exception:
            spinning = None  # not set: onnxruntime's default, spinning
        assert spinning is None
    assert slept == [timing.SPIN_SETTLE_S] * 2  # one block per variant, at two threads only
