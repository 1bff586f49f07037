"""`onnxbit bench model`: both models timed on synthesized short and
prefill-sized inputs, slowdowns printed as slowdowns."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnx_models import mlp
from onnxbit.bench.model import ModelTiming, bench_models, speed_words, workload_feeds, workload_notes
from onnxbit.cli.main import main
from onnxbit.convert import convert


def test_speed_words_never_call_a_slowdown_faster():
    assert speed_words(2.0) == "2.00x faster"
    assert speed_words(0.5) == "2.00x slower"
    assert speed_words(0.97) == "1.03x slower"
    # within 2% of 1: the same speed, with the ratio (a red "1.00x slower" for 0.997 said nothing true)
    assert speed_words(0.997) == "as fast (0.997x)" and speed_words(1.012) == "as fast (1.012x)"
    assert ModelTiming("w", "x [1]", 1, ms_original=1.0, ms_converted=4.0).ratio == 0.25


def test_a_model_without_a_sequence_axis_gets_a_128_row_batch(rng):
    model, _ = mlp(rng)
    feeds = workload_feeds(model)
    assert [(name, feed["x"].shape) for name, feed in feeds] == [("batch 1", (1, 64)), ("batch 128", (128, 64))]


def test_a_model_with_fixed_input_shapes_gets_one_workload():
    """A fixed 1 x 3 x 8 x 8 image input has no batch or sequence to grow: one workload, not the
    same input again under the name batch 128."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["y"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    feeds = workload_feeds(helper.make_model(graph))
    assert [(name, feed["images"].shape) for name, feed in feeds] == [("batch 1", (1, 3, 8, 8))]


def _image_model(rng, shape=("batch", 3, "height", "width")):
    """A 3x3 Conv on images whose size the graph leaves open (or fixes, given a shape of ints)."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["images", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_open_image_sizes_are_timed_at_224_or_the_size_given_with_a_batch_of_8(rng):
    """verify's 32x32 guess times almost nothing of an image model; a batch of 128 images at a
    real size would take minutes."""
    model = _image_model(rng)
    shapes = [(name, feed["images"].shape) for name, feed in workload_feeds(model)]
    assert shapes == [("batch 1", (1, 3, 224, 224)), ("batch 8", (8, 3, 224, 224))]
    shapes = [(name, feed["images"].shape) for name, feed in workload_feeds(model, image_size=40)]
    assert shapes == [("batch 1", (1, 3, 40, 40)), ("batch 8", (8, 3, 40, 40))]
    [note] = workload_notes(model)
    assert "images at 224x224" in note and "--image-size N" in note and "--inputs" in note
    assert workload_notes(model, image_size=40) == []
    fixed = _image_model(rng, (1, 3, 8, 8))
    assert workload_notes(fixed) == []
    assert "no effect" in workload_notes(fixed, image_size=40)[0]
    # a classifier whose image size is fixed but not its batch is still an image model: 8 images, not 128
    classifier = _image_model(rng, ("N", 3, 8, 8))
    assert [(name, feed["images"].shape) for name, feed in workload_feeds(classifier)] == [
        ("batch 1", (1, 3, 8, 8)), ("batch 8", (8, 3, 8, 8))]


def test_bench_model_cli_takes_an_image_size(rng, tmp_path):
    original = tmp_path / "m.onnx"
    onnx.save(_image_model(rng), str(original))
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "model", str(original), str(original), "--rounds", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "images [1, 3, 224, 224]" in result.output and "image sizes guessed" in result.output
    result = runner.invoke(main, ["bench", "model", str(original), str(original), "--rounds", "1", "--threads", "1",
                                  "--image-size", "16"])
    assert result.exit_code == 0, result.output
    assert "images [8, 3, 16, 16]" in result.output and "guessed" not in result.output
    np.savez(tmp_path / "in.npz", images=np.zeros((1, 3, 8, 8), np.float32))
    result = runner.invoke(main, ["bench", "model", str(original), str(original), "--image-size", "16",
                                  "--inputs", str(tmp_path / "in.npz")])
    assert result.exit_code == 2 and "not both" in result.output


def test_bench_model_times_both_models_on_each_input_and_thread_count(rng, tmp_path):
    model, _ = mlp(rng)
    original = tmp_path / "m.onnx"
    onnx.save(model, str(original))
    converted = tmp_path / "m.int8.onnx"
    convert(original, preset="int8", target="onnx", output_path=converted, progress=False)
    results = bench_models(original, converted, threads=(1, 2), rounds=2)
    assert [(r.workload, r.threads) for r in results] == [("batch 1", 1), ("batch 128", 1), ("batch 1", 2),
                                                          ("batch 128", 2)]
    assert all(r.ms_original > 0 and r.ms_converted > 0 for r in results)
    result = CliRunner().invoke(main, ["bench", "model", str(original), str(converted), "--rounds", "2",
                                       "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "batch 128 (x [128, 64])" in result.output
    assert any(words in result.output for words in ("faster", "slower", "as fast"))


def test_two_thread_timings_keep_spinning_workers_and_alternate_in_blocks(rng, tmp_path, monkeypatch):
    from onnxbit.bench import timing
    from onnxbit.verify import compare, open_model, open_session

    model, _ = mlp(rng)
    original = tmp_path / "m.onnx"
    onnx.save(model, str(original))
    session = open_session(open_model(original, "original"), 2)
    with pytest.raises(Exception, match="allow_spinning"):  # not set: onnxruntime's default, spinning
        session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    slept = []
    monkeypatch.setattr(timing.time, "sleep", slept.append)
    results = bench_models(original, original, threads=(1, 2), rounds=5)
    assert [r.threads for r in results] == [1, 1, 2, 2]
    assert slept == [timing.SPIN_SETTLE_S] * 4  # two workloads x two models, at two threads only
    slept.clear()
    compare(original, original, threads=2, rounds=5)
    assert slept == [timing.SPIN_SETTLE_S] * 2


def test_bench_model_errors_are_one_line(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"nope")
    result = CliRunner().invoke(main, ["bench", "model", str(tmp_path / "bad.onnx"), str(tmp_path / "bad.onnx")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: ")


def test_known_slow_paths_are_named_in_the_report(rng):
    model, _ = mlp(rng)
    float_acts = convert(model, config={"default": {"precision": "int8", "granularity": "channel"}}, target="onnx",
                         progress=False).report.notes
    assert any("can run slower than the float model" in n and "bench model" in n for n in float_acts)
    assert not any("slower" in n for n in convert(model, preset="int8", target="onnx", progress=False).report.notes)
    float_ternary = {"preset": "ternary", "default": {"act_quant": 0}}
    ternary_ort = convert(model, config=float_ternary, target="ort", progress=False).report.notes
    assert any("2-bit MatMulNBits with float activations (accuracy_level 0) is a slow path" in n for n in ternary_ort)
    fast = convert(model, preset="ternary", target="ort", progress=False).report.notes  # int8 activations
    assert not any("slow path" in n for n in fast)
    for target in ("ort", "onnx"):  # MatMulNBits, or DequantizeLinear INT4 that onnxruntime fuses into it
        int4 = convert(model, preset="int4", target=target, progress=False).report.notes
        assert sum("slower on prefill-sized ones" in n and "int8 preset" in n for n in int4) == 1
    assert any("slower on prefill-sized ones" in n for n in fast)
    for quiet in (convert(model, preset="int8", target="ort", progress=False),
                  convert(model, preset="ternary", target="onnxbit", progress=False)):
        assert not any("prefill" in n for n in quiet.report.notes)
