"""`onnxbit quantize` never loses a user's data: no output may be a file the
conversion reads, outputs appear all together or not at all, files get the
modes a normal tool gives them, and signals leave nothing behind. Every test
works on real files in a temporary folder."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import helper

from onnx_models import init, make_model, mlp, value
from onnxbit.cli.main import main
from onnxbit.convert import convert, save_model_atomic
from onnxbit.errors import OutputPathError


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def external_model(folder: Path, rng, name="ext.onnx", data_name=None) -> tuple[Path, Path]:
    """An MLP saved with its weights in an external-data file; returns (model, data file)."""
    model, _ = mlp(rng, k=64, hidden=48, n=32)
    path = folder / name
    data_name = data_name or f"{name}.data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=0)
    return path, folder / data_name


def outputs_of(path: Path, x: np.ndarray) -> np.ndarray:
    from onnxbit.runtime import InferenceSession

    return InferenceSession(str(path)).run(None, {"x": x})[0]


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# -- 1. data loss -------------------------------------------------------------

def test_output_onto_the_inputs_external_data_is_refused(tmp_path, rng):
    model, data = external_model(tmp_path, rng)
    before = digest(data)
    result = run_cli("quantize", model, data)
    assert result.exit_code != 0
    assert "external-data file of the input model" in result.output
    assert "Traceback" not in result.output
    assert digest(data) == before
    onnx.load(str(model))  # still loads with its data


@pytest.mark.parametrize("how", ["symlink", "dotdot", "hardlink"])
def test_output_that_resolves_to_the_input_is_refused(tmp_path, rng, how):
    model, data = external_model(tmp_path, rng)
    sub = tmp_path / "sub"
    sub.mkdir()
    if how == "symlink":
        target = sub / "link.onnx"
        target.symlink_to(model)
    elif how == "dotdot":
        target = sub / ".." / model.name
    else:
        target = sub / "hard.onnx"
        os.link(model, target)
    before = digest(model)
    result = run_cli("quantize", model, target)
    assert result.exit_code != 0 and "is the input model" in result.output, result.output
    assert digest(model) == before


def test_report_onto_the_input_or_the_output_is_refused(tmp_path, rng):
    model, _ = mlp(rng)
    source = tmp_path / "in.onnx"
    onnx.save(model, str(source))
    before = digest(source)
    out = tmp_path / "out.onnx"
    result = run_cli("quantize", source, out, "--report", source)
    assert result.exit_code != 0 and "--report" in result.output and "is the input model" in result.output
    assert digest(source) == before and not out.exists()
    result = run_cli("quantize", source, out, "--report", out)
    assert result.exit_code != 0 and "same file as output" in result.output, result.output
    assert not out.exists()
    assert no_temporaries(tmp_path)


def test_an_input_data_file_named_like_the_outputs_is_never_replaced(tmp_path, rng):
    # The input keeps its weights in "out.onnx.data": the name a naive writer
    # would give the output's external data.
    model, data = external_model(tmp_path, rng, name="in.onnx", data_name="out.onnx.data")
    x = rng.standard_normal((3, 64)).astype(np.float32)
    expected = outputs_of(model, x)
    before = digest(data)
    out = tmp_path / "out.onnx"
    result = run_cli("quantize", model, out, "--preset", "int8", "--target", "ort", "--external-data", "-q")
    assert result.exit_code == 0, result.output
    assert digest(data) == before
    np.testing.assert_array_equal(outputs_of(model, x), expected)
    assert (tmp_path / "out.onnx.1.data").is_file()
    converted = onnx.load(str(out), load_external_data=False)
    locations = {e.value for t in converted.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"out.onnx.1.data"}
    np.testing.assert_allclose(outputs_of(out, x), expected, rtol=0.05, atol=0.05 * np.abs(expected).max())


def test_external_data_output_twice_from_the_output_folder(tmp_path, rng, monkeypatch):
    model, _ = external_model(tmp_path, rng)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    monkeypatch.chdir(out_dir)
    for _ in range(2):  # onnx's own writer failed the second time with FileExistsError
        result = run_cli("quantize", model, "model.onnx", "--preset", "int8", "--target", "onnx",
                         "--external-data", "-q")
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out_dir.iterdir()) == ["model.onnx", "model.onnx.data"]
    x = rng.standard_normal((2, 64)).astype(np.float32)
    assert ort.InferenceSession(str(out_dir / "model.onnx")).run(None, {"x": x})[0].shape == (2, 32)


def test_external_data_writer_keeps_the_callers_model_whole(tmp_path, rng):
    model, weights = mlp(rng)
    save_model_atomic(model, tmp_path / "m.onnx", external_data=True)
    assert model.graph.initializer[0].HasField("raw_data")  # onnx's writer emptied them
    loaded = onnx.load(str(tmp_path / "m.onnx"))
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(loaded.graph.initializer[0]), weights["W1"])


# -- 2. files like a normal tool ------------------------------------------------

def _convert_under_umask(source: Path, out: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        convert(source, preset="int8", target="ort", output_path=out, report_path=out.with_suffix(".json"),
                progress=False)
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_outputs_follow_the_umask(tmp_path, rng, mask, mode):
    model, _ = mlp(rng)
    source = tmp_path / "in.onnx"
    onnx.save(model, str(source))
    out = tmp_path / "out.onnx"
    _convert_under_umask(source, out, mask)
    assert stat.S_IMODE(out.stat().st_mode) == mode
    assert stat.S_IMODE(out.with_suffix(".json").stat().st_mode) == mode


def test_a_replaced_output_keeps_its_mode(tmp_path, rng):
    model, _ = mlp(rng)
    source = tmp_path / "in.onnx"
    onnx.save(model, str(source))
    out = tmp_path / "out.onnx"
    out.write_bytes(b"old")
    out.chmod(0o640)
    _convert_under_umask(source, out, 0o077)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    onnx.load(str(out))


SIGNAL_SCRIPT = """
import sys
from onnxbit.convert import convert
convert(sys.argv[1], config={"default": {"precision": "fp32"}}, output_path=sys.argv[2], progress=False,
        external_data=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_writing_leaves_no_file_behind(tmp_path, signum):
    # A no-op conversion of a 192 MB model: the output is all payload, so the
    # write takes long enough to be caught in the act.
    weights = np.ones((3 * 1024, 16 * 1024), np.float32)
    model = make_model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [value("x", [1, 3 * 1024])],
                       [value("y", [1, 16 * 1024])], [init("W", weights)])
    source = tmp_path / "in.onnx"
    onnx.save(model, str(source))
    del model, weights
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "out.onnx"
    process = subprocess.Popen([sys.executable, "-c", SIGNAL_SCRIPT, str(source), str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    caught = False
    while time.monotonic() < deadline and process.poll() is None:
        if [p for p in out_dir.iterdir() if p.name.endswith(".tmp")]:
            process.send_signal(signum)
            caught = True
            break
        time.sleep(0.002)
    process.communicate(timeout=60)
    if not caught:
        pytest.skip("the write finished before the signal could be sent")
    assert process.returncode != 0
    assert list(out_dir.iterdir()) == []


def test_a_missing_report_folder_writes_nothing(tmp_path, rng):
    model, _ = mlp(rng)
    source = tmp_path / "in.onnx"
    onnx.save(model, str(source))
    out = tmp_path / "out.onnx"
    result = run_cli("quantize", source, out, "--report", tmp_path / "missing" / "r.json")
    assert result.exit_code == 1 and "folder" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and no_temporaries(tmp_path)


FULL_DISK_SCRIPT = """
import resource, signal, sys
from click.testing import CliRunner
from onnxbit.cli.main import main
# A file-size limit makes the write fail part way with EFBIG, as a full disk does with ENOSPC.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.RLIM_INFINITY))
result = CliRunner().invoke(main, ["quantize", sys.argv[1], sys.argv[2], "--preset", "int8", "--target", "ort",
                                   "--report", sys.argv[2] + ".json", "-q"])
print(result.output)
sys.exit(result.exit_code)
"""


def test_a_write_that_runs_out_of_space_publishes_nothing(tmp_path, rng):
    model, _ = mlp(rng, k=256, hidden=256, n=256)
    source = tmp_path / "in.onnx"
    onnx.save(model, str(source))
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous output")
    process = subprocess.run([sys.executable, "-c", FULL_DISK_SCRIPT, str(source), str(out), "20000"],
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == 1, process.stdout + process.stderr
    assert "Error: cannot write" in process.stdout and "Traceback" not in process.stdout + process.stderr
    assert out.read_bytes() == b"previous output"
    assert not Path(str(out) + ".json").exists() and no_temporaries(tmp_path)


# -- 4. one clean line for every error --------------------------------------------

def _one_error_line(result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], result.output


def test_unreadable_models_give_one_line(tmp_path, rng):
    model, _ = mlp(rng)
    good = model.SerializeToString()
    cases = {"empty.onnx": b"", "truncated.onnx": good[: len(good) // 2], "text.onnx": b"hello, not a model\n"}
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        _one_error_line(run_cli("quantize", tmp_path / name, tmp_path / "o.onnx"), name)
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-4]
    onnx.save(model, str(tmp_path / "short.onnx"))
    _one_error_line(run_cli("quantize", tmp_path / "short.onnx", tmp_path / "o.onnx"), "W1", "raw_data")
    assert not (tmp_path / "o.onnx").exists()


def test_output_equal_to_input_and_missing_folder_give_one_line(tmp_path, rng):
    model, _ = mlp(rng)
    source = tmp_path / "in.onnx"
    onnx.save(model, str(source))
    _one_error_line(run_cli("quantize", source, source), "is the input model")
    _one_error_line(run_cli("quantize", source, tmp_path / "nowhere" / "o.onnx"), "nowhere", "does not exist")
    _one_error_line(run_cli("quantize", source, tmp_path), "is a folder")


def test_non_finite_weights_keep_that_layer_float_and_say_why(tmp_path, rng):
    model, weights = mlp(rng)
    bad = weights["W1"].copy()
    bad[3, 5], bad[7, 1] = np.nan, np.inf
    model.graph.initializer[0].CopyFrom(init("W1", bad))
    source = tmp_path / "in.onnx"
    onnx.save(model, str(source))
    result = convert(source, preset="int8", target="ort", output_path=tmp_path / "o.onnx", progress=False)
    rows = {r.node: r for r in result.report.table_rows()}
    assert rows["fc1"].action == "skipped" and "2 NaN/Inf value(s); kept float" in rows["fc1"].reason
    assert rows["fc2"].action == "converted"


# -- 6. what the summary says ------------------------------------------------------

def test_summary_sizes_are_the_files_on_disk(tmp_path, rng):
    model, data = external_model(tmp_path, rng)
    out = tmp_path / "out.onnx"
    result = convert(model, preset="int8", target="ort", output_path=out, progress=False)
    assert result.report.model_bytes_before == model.stat().st_size + data.stat().st_size
    assert result.report.model_bytes_after == out.stat().st_size
    assert result.written == [out]


def test_a_conversion_that_changes_nothing_writes_the_input_unchanged(tmp_path, rng):
    model, _ = mlp(rng)
    source = tmp_path / "in.onnx"
    onnx.save(model, str(source))
    out = tmp_path / "out.onnx"
    result = convert(source, config={"default": {"precision": "fp32"}}, output_path=out, progress=False)
    assert out.read_bytes() == source.read_bytes()
    assert result.report.model_bytes_after == result.report.model_bytes_before
    assert any("no layer was converted" in note for note in result.report.notes)


def test_int8_on_the_onnx_target_has_no_low_bit_fusion_note(tmp_path, rng):
    model, _ = mlp(rng)
    int8 = convert(model, preset="int8", target="onnx", progress=False).report.notes
    int4 = convert(model, preset="int4", target="onnx", progress=False).report.notes
    assert not any("fuses these into MatMulNBits" in n for n in int8)  # int8 preset: MatMulInteger
    assert any("fuses these into MatMulNBits" in n for n in int4)


def test_output_path_error_is_an_onnxbit_error():
    assert issubclass(OutputPathError, ValueError)


# -- 3. bounded memory ----------------------------------------------------------------

def test_large_model_bench_measures_each_conversion(tmp_path):
    from onnxbit.bench.large_model import parse_size, run_large_model_bench

    assert parse_size("2.2G") == 2_200_000_000 and parse_size("500M") == 500_000_000
    results = run_large_model_bench(parse_size("98K"), size=64, cases=[("int8", "ort"), ("ternary", "onnxbit")],
                                    folder=tmp_path)
    assert [(r.preset, r.target) for r in results] == [("int8", "ort"), ("ternary", "onnxbit")]
    layers = round(98_000 / (64 * 64 * 4))
    assert results[0].layers_converted == layers and results[1].layers_converted == layers - 1
    for r in results:
        assert 0 < r.output_bytes < r.input_bytes
        assert 20 << 20 < r.peak_rss_bytes < 2 << 30  # a Python process with numpy and onnxruntime loaded
        assert r.seconds > 0 and r.predicted_seconds > 0
    assert list(tmp_path.iterdir()) == []


def test_external_weights_are_read_a_layer_at_a_time(tmp_path):
    """Peak memory of a conversion stays near one layer, not the model: 8
    layers of 16 MB in external data convert within a few layers' worth."""
    import json as json_module

    from onnxbit.bench.large_model import _RUNNER, make_large_model

    model = make_large_model(tmp_path, layers=8, size=2048)
    baseline = subprocess.run([sys.executable, "-c", "import onnxbit.convert, onnxruntime, numpy\n"
                               "print(next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') "
                               "if l.startswith('VmHWM:')))"], capture_output=True, text=True, check=True)
    run = subprocess.run([sys.executable, "-c", _RUNNER, str(model), str(tmp_path / "out.onnx"), "int8", "ort"],
                         capture_output=True, text=True, check=True)
    measured = json_module.loads(run.stdout.strip().splitlines()[-1])
    layer = 2048 * 2048 * 4
    assert measured["converted"] == 8
    # Imports alone take `baseline`; the conversion may add a few layers' worth, never all 8.
    assert measured["peak_rss_bytes"] - int(baseline.stdout) < 5 * layer, measured


def test_summary_size_of_a_model_given_in_memory_is_its_serialized_size(rng):
    model, _ = mlp(rng)
    report = convert(model, preset="int8", target="onnx", progress=False).report
    assert report.model_bytes_before == model.ByteSize()
