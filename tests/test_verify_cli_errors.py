"""`onnxbit verify` on bad files and inputs: one `Error: ...` line, exit
status 2, never a traceback; and synthesized inputs for models whose inputs
have symbolic / -1 dims, embeddings and masks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxbit.cli.main import main

F, I64 = TensorProto.FLOAT, TensorProto.INT64
REPO = Path(__file__).resolve().parents[1]


def _model(nodes, inputs, outputs, initializers=(), opsets=(("", 17),)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                              initializer=[numpy_helper.from_array(np.asarray(a), name) for name, a in initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], ir_version=9)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _relu(tmp_path: Path, name: str = "relu.onnx") -> Path:
    return _save(_model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, ["batch", 6])], [("y", F, ["batch", 6])]),
                 tmp_path / name)


def _verify(*args: str):
    return CliRunner().invoke(main, ["verify", *map(str, args), "--rounds", "1"])


def _assert_clean_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an escaped exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("content", [b"this is not an onnx model\n", b"", bytes(range(256)) * 4],
                         ids=["text", "empty", "binary"])
def test_a_file_that_is_no_onnx_model(tmp_path, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    good = _relu(tmp_path)
    _assert_clean_error(_verify(bad, good), "cannot read the original model", "bad.onnx", "not an ONNX model")
    _assert_clean_error(_verify(good, bad), "cannot read the converted model", "bad.onnx")


def test_npz_missing_an_input_with_wrong_dtype_or_shape_or_no_npz(tmp_path):
    model = _relu(tmp_path)
    npz = tmp_path / "inputs.npz"
    np.savez(npz, pixels=np.zeros((2, 6), np.float32))
    _assert_clean_error(_verify(model, model, "--inputs", npz), "['pixels']", "'x'")
    np.savez(npz, x=np.zeros((2, 6), np.float64))
    _assert_clean_error(_verify(model, model, "--inputs", npz), "input 'x' is float64, the model wants float32")
    np.savez(npz, x=np.zeros((2, 5), np.float32))
    _assert_clean_error(_verify(model, model, "--inputs", npz), "input 'x' has shape [2, 5]", "[batch, 6]")
    npz.write_text("no zip")
    _assert_clean_error(_verify(model, model, "--inputs", npz), "cannot read inputs")


def test_a_session_that_fails_to_load_names_the_model_and_quotes_onnxruntime(tmp_path):
    original = _relu(tmp_path)
    unknown_op = _save(_model([helper.make_node("Frobnicate", ["x"], ["y"], domain="com.nowhere")],
                              [("x", F, ["batch", 6])], [("y", F, ["batch", 6])],
                              opsets=(("", 17), ("com.nowhere", 1))), tmp_path / "unknown_op.onnx")
    line = _assert_clean_error(_verify(original, unknown_op), "onnxruntime cannot load the converted model",
                               "unknown_op.onnx", "Frobnicate")
    assert "[ONNXRuntimeError]" not in line


def test_a_session_that_fails_to_run_names_the_model(tmp_path):
    original = _relu(tmp_path)
    # Reshapes 6 values per row into rows of 4: fails at run time for one row.
    broken = _save(_model([helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Relu", ["r"], ["q"]),
                           helper.make_node("Reshape", ["q", "back"], ["y"])],
                          [("x", F, ["batch", 6])], [("y", F, ["batch", 6])],
                          initializers=[("s", np.array([-1, 4], np.int64)), ("back", np.array([-1, 6], np.int64))]),
                   tmp_path / "broken.onnx")
    npz = tmp_path / "one.npz"
    np.savez(npz, x=np.ones((1, 6), np.float32))
    _assert_clean_error(_verify(original, broken, "--inputs", npz),
                        "the converted model", "broken.onnx", "failed to run on the inputs", "Reshape")


def test_converted_model_lacking_an_output(tmp_path):
    original = _save(_model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["z"])],
                            [("x", F, ["batch", 6])], [("y", F, None), ("z", F, None)]), tmp_path / "two.onnx")
    _assert_clean_error(_verify(original, _relu(tmp_path)), "lacks outputs ['z']")


def test_inputs_no_size_fits_ask_for_an_npz(tmp_path):
    model = _save(_model([helper.make_node("Reshape", ["tokens", "shape"], ["y"])], [("tokens", F, ["batch", -1])],
                         [("y", F, None)], initializers=[("shape", np.array([7, 13], np.int64))]),
                  tmp_path / "odd.onnx")
    _assert_clean_error(_verify(model, model), "cannot synthesize input 'tokens'", "pass --inputs FILE.npz")


def _embedding_lm(tmp_path: Path, name: str) -> Path:
    """input_ids / attention_mask / position_ids over shared symbolic dims;
    ids gather a 9-row table, positions a 12-row table; -1 for the sequence
    dim of the mask."""
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Gather", ["tokens", "input_ids"], ["e"]),
             helper.make_node("Gather", ["positions", "position_ids"], ["p"]),
             helper.make_node("Add", ["e", "p"], ["h"]),
             helper.make_node("Cast", ["attention_mask"], ["mf"], to=F),
             helper.make_node("Unsqueeze", ["mf", "last"], ["m"]),
             helper.make_node("Mul", ["h", "m"], ["last_hidden_state"]),
             helper.make_node("MatMul", ["last_hidden_state", "head"], ["logits"])]
    model = _model(nodes, [("input_ids", I64, ["batch", "sequence"]), ("attention_mask", I64, ["batch", 1]),
                           ("position_ids", I64, ["batch", "sequence"])],
                   [("logits", F, ["batch", "sequence", 9]), ("last_hidden_state", F, ["batch", "sequence", 8])],
                   initializers=[("tokens", rng.standard_normal((9, 8)).astype(np.float32)),
                                 ("positions", rng.standard_normal((12, 8)).astype(np.float32)),
                                 ("head", rng.standard_normal((8, 9)).astype(np.float32)),
                                 ("last", np.array([-1], np.int64))])
    mask = next(v for v in model.graph.input if v.name == "attention_mask")
    mask.type.tensor_type.shape.dim[1].Clear()
    mask.type.tensor_type.shape.dim[1].dim_value = -1
    return _save(model, tmp_path / name)


def test_verify_synthesizes_inputs_for_an_embedding_model(tmp_path):
    model = _embedding_lm(tmp_path, "lm.onnx")
    result = _verify(model, model)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "synthesized inputs: input_ids [1, 12], attention_mask [1, 12], position_ids [1, 12]" in result.output
    assert "agreement within 0.0001: ok" in result.output


def test_cli_in_a_subprocess_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("garbage")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "onnxbit", "verify", str(bad), str(_relu(tmp_path))],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("Error: cannot read the original model")
