"""`onnxbit verify` and `onnxbit demo` on the bundled sample model."""

import re
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from rich.console import Console

from onnxbit.cli.main import main
from onnxbit.convert import convert
from onnxbit.demo import run_demo
from onnxbit.samples import SAMPLE_INPUTS, SAMPLE_MODEL, sample_path
from onnxbit.verify import compare, load_feeds, synthesize_feeds


def test_demo_converts_the_sample_and_agrees():
    console = Console(record=True, width=150)
    comparison = run_demo(rounds=3, layer=False, console=console)
    assert comparison.worst_rel < 1e-4
    assert comparison.outputs[0].argmax_match == 1.0
    assert comparison.bytes_converted < 0.6 * comparison.bytes_original
    text = console.export_text()
    assert "TernaryMatMul/base3" in text and "agreement over 3 input batches" in text


def test_load_feeds_accepts_indexed_keys_and_names_what_is_missing(tmp_path):
    feeds = load_feeds(sample_path(SAMPLE_INPUTS), ["input_ids", "attention_mask"])
    assert len(feeds) == 3 and feeds[1]["input_ids"].shape == (2, 8)
    np.savez(tmp_path / "bad.npz", tokens=np.zeros((1, 4), np.int64))
    try:
        load_feeds(tmp_path / "bad.npz", ["input_ids"])
    except ValueError as exc:
        assert "['tokens']" in str(exc) and "input_ids" in str(exc)
    else:
        raise AssertionError("load_feeds accepted a file without the model's inputs")


def test_synthesized_feeds_follow_the_input_types():
    model = onnx.load(str(sample_path(SAMPLE_MODEL)))
    feeds = synthesize_feeds(model, batch=2, seq=7)
    assert feeds["input_ids"].shape == (2, 7) and feeds["input_ids"].dtype == np.int64
    assert (feeds["attention_mask"] == 1).all()


def test_verify_cli_passes_a_faithful_conversion_and_fails_a_wrong_one(tmp_path):
    original = sample_path(SAMPLE_MODEL)
    good = tmp_path / "good.onnx"
    convert(original, output_path=good, progress=False)
    inputs = str(sample_path(SAMPLE_INPUTS))
    result = CliRunner().invoke(main, ["verify", str(original), str(good), "--inputs", inputs, "--rounds", "2"])
    assert result.exit_code == 0, result.output
    assert "agreement within 0.0001: ok" in result.output

    # int4 post-training quantization of the float head changes the logits.
    lossy = tmp_path / "lossy.onnx"
    convert(original, config={"preset": "bitnet", "float_weights": "quantize", "rules": [{"match": {"position": "last"}, "precision": "int4",
                                                               "symmetric": False, "granularity": "group",
                                                               "group_size": 32}]},
            output_path=lossy, progress=False)
    result = CliRunner().invoke(main, ["verify", str(original), str(lossy), "--inputs", inputs, "--rounds", "2",
                                       "--rtol", "1e-4"])
    assert result.exit_code == 1
    assert "more than --rtol 0.0001" in result.output
    measured = float(re.search(r"--rtol (\S+) would pass", result.output).group(1))
    assert 1e-3 < measured < 0.2
    # ... while the default tolerance follows the int4 head: it passes, and says why.
    result = CliRunner().invoke(main, ["verify", str(original), str(lossy), "--inputs", inputs, "--rounds", "2"])
    assert result.exit_code == 0, result.output
    assert "agreement within 0.2: ok (default for int4: MatMulNBits bits=4 x1" in result.output
    # The measured value really passes.
    result = CliRunner().invoke(main, ["verify", str(original), str(lossy), "--inputs", inputs, "--rounds", "2",
                                       "--rtol", str(measured)])
    assert result.exit_code == 0, result.output


def test_compare_reports_sizes_from_disk(tmp_path):
    original = sample_path(SAMPLE_MODEL)
    converted = tmp_path / "c.onnx"
    convert(original, output_path=converted, progress=False)
    comparison = compare(original, converted, rounds=2)
    assert comparison.bytes_original == Path(original).stat().st_size
    assert comparison.bytes_converted == converted.stat().st_size


def test_demo_cli_times_a_deployment_sized_layer():
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    assert "1x2560x6912" in result.output
    for variant in ("fp32 MatMul", "NBits2", "Ternary 2bit a8"):
        assert variant in result.output
