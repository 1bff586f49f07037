"""`onnxbit inspect` on broken and unusual models, through click's test runner
(and once through `python -m onnxbit`): one Error line and a non-zero exit for
bad files, every weight-carrying node listed for good ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnx_models import model_of, value
from onnxbit.cli.main import main
from onnxbit.inspect_model import inspect_model

REPO = Path(__file__).resolve().parents[1]




def matmul_model(k=16, n=8) -> onnx.ModelProto:
    w = np.arange(k * n, dtype=np.float32).reshape(k, n)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")]
    return model_of(nodes, [value("x", [1, k])], [value("y", [1, n])], [numpy_helper.from_array(w, "W")])


def run(*args):
    return CliRunner().invoke(main, ["inspect", *map(str, args)])


def assert_one_error_line(result, *fragments):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "runs on stock onnxruntime" not in result.output


# --------------------------------------------------------------------------- broken models


def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    assert_one_error_line(run(path), str(path), "empty")


def test_missing_file_and_directory(tmp_path):
    assert_one_error_line(run(tmp_path / "nope.onnx"), "nope.onnx", "no such file")
    assert_one_error_line(run(tmp_path), str(tmp_path), "directory")


def test_truncated_file(tmp_path):
    data = matmul_model(64, 64).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    assert_one_error_line(run(path), str(path), "truncated")


def test_cyclic_graph(tmp_path):
    nodes = [helper.make_node("Relu", ["b"], ["a"], name="loop_a"), helper.make_node("Relu", ["a"], ["b"],
                                                                                      name="loop_b"),
             helper.make_node("Add", ["x", "b"], ["y"], name="out")]
    path = tmp_path / "cycle.onnx"
    onnx.save(model_of(nodes, [value("x", [2])], [value("y", [2])]), path)
    assert_one_error_line(run(path), str(path), "cycle", "loop_a", "loop_b")


def test_missing_input(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W_missing"], ["y"], name="fc")]
    path = tmp_path / "missing.onnx"
    onnx.save(model_of(nodes, [value("x", [1, 4])], [value("y", [1, 4])]), path)
    assert_one_error_line(run(path), str(path), "fc:", "'W_missing'")


def test_wrong_raw_data_size(tmp_path):
    model = matmul_model()
    model.graph.initializer[0].raw_data = b"\0" * 12
    path = tmp_path / "raw.onnx"
    onnx.save(model, path)
    assert_one_error_line(run(path, "--json"), str(path), "W:", "raw_data holds 12 bytes")


def test_forged_external_length(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save_model(matmul_model(64, 32), path, save_as_external_data=True, location="ext.data", size_threshold=0)
    model = onnx.load(path, load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "length":
            entry.value = "16"  # the old inspect reported 0.06 bits per weight from this
    onnx.save(model, path)
    assert_one_error_line(run(path), str(path), "W:", "length 16")


def test_external_location_outside_the_folder(tmp_path):
    (tmp_path / "outside.data").write_bytes(b"\0" * 4096)
    folder = tmp_path / "m"
    folder.mkdir()
    model = matmul_model(16, 16)
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="../outside.data")
    w.external_data.add(key="length", value="1024")
    path = folder / "m.onnx"
    onnx.save(model, path)
    assert_one_error_line(run(path), "leaves the model's folder")


def test_python_m_onnxbit_prints_one_line(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(os.urandom(64) + b"\xff" * 64)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "onnxbit", "inspect", str(path)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: not an ONNX model"), proc.stderr


# --------------------------------------------------------------------------- what inspect shows


def test_external_data_sizes_come_from_checked_entries(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save_model(matmul_model(64, 32), path, save_as_external_data=True, location="ext.data", size_threshold=0)
    result = run(path, "--json")
    assert result.exit_code == 0, result.output
    layer = json.loads(result.output)["layers"][0]
    assert layer["bytes"] == 64 * 32 * 4 and layer["bits_per_weight"] == 32.0


def test_constant_node_weights_are_counted_and_named(tmp_path):
    w = numpy_helper.from_array(np.ones((16, 8), np.float32), "")
    nodes = [helper.make_node("Constant", [], ["W"], name="w_const", value=w),
             helper.make_node("MatMul", ["x", "W"], ["h"], name="fc1"),
             helper.make_node("MatMul", ["h", "W2"], ["y"], name="fc2")]
    w2 = numpy_helper.from_array(np.ones((8, 4), np.float32), "W2")
    path = tmp_path / "const.onnx"
    onnx.save(model_of(nodes, [value("x", [1, 16])], [value("y", [1, 4])], [w2]), path)
    data = json.loads(run(path, "--json").output)
    storage = {layer["node"]: layer["storage"] for layer in data["layers"]}
    assert storage == {"fc1": "Constant", "fc2": "initializer"}
    assert data["constant_bytes"] == 16 * 8 * 4 and data["initializer_bytes"] == 8 * 4 * 4
    text = run(path)
    assert text.exit_code == 0, text.output
    assert "initializers 128 B" in text.output and "Constant tensors 512 B" in text.output


def test_activation_matmuls_and_unconverted_weight_nodes_are_listed(tmp_path):
    conv_w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "conv_w")
    emb = numpy_helper.from_array(np.ones((10, 6), np.float16), "emb")
    lstm_w = numpy_helper.from_array(np.ones((1, 4 * 5, 6), np.float32), "lstm_w")
    lstm_r = numpy_helper.from_array(np.ones((1, 4 * 5, 5), np.float32), "lstm_r")
    shape = numpy_helper.from_array(np.array([2, 3], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["img", "conv_w"], ["feat"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
        helper.make_node("Gather", ["shape", "zero"], ["s0"], name="shape_pick"),  # 1-D: not a weight
        helper.make_node("Cast", ["e"], ["e32"], to=TensorProto.FLOAT),
        helper.make_node("LSTM", ["e32", "lstm_w", "lstm_r"], ["seq"], name="lstm", hidden_size=5),
        helper.make_node("MatMul", ["a", "b"], ["ab"], name="scores"),
    ]
    inputs = [value("img", [1, 3, 8, 8]), value("ids", [2, 1], TensorProto.INT64), value("a", [2, 3]),
              value("b", [3, 2]), value("zero", [], TensorProto.INT64)]
    outputs = [value("feat", [1, 4, 8, 8]), value("seq", [2, 1, 1, 5]), value("ab", [2, 2]),
               value("s0", [], TensorProto.INT64)]
    path = tmp_path / "mixed.onnx"
    onnx.save(model_of(nodes, inputs, outputs, [conv_w, emb, lstm_w, lstm_r, shape]), path)
    data = json.loads(run(path, "--json").output)
    layers = {layer["node"]: layer for layer in data["layers"]}
    assert set(layers) == {"conv", "embed", "lstm", "scores"}
    assert layers["scores"]["precision"] == "activation x activation" and layers["scores"]["note"]
    assert layers["conv"]["precision"] == "float" and "not converted" in layers["conv"]["note"]
    assert "no low-bit op" in layers["lstm"]["note"] and "no low-bit op" in layers["embed"]["note"]
    assert layers["conv"]["details"]["shape"] == [4, 3, 3, 3] and layers["conv"]["bytes"] == 4 * 27 * 4
    assert layers["embed"]["precision"] == "float16" and layers["embed"]["bits_per_weight"] == 16.0
    assert layers["lstm"]["bytes"] == (20 * 6 + 20 * 5) * 4
    text = run(path)
    assert text.exit_code == 0 and "activation x activation" in text.output and "not converted" in text.output


def test_weight_computed_by_a_qat_chain_is_listed_with_its_shape(tmp_path):
    w = numpy_helper.from_array(np.ones((8, 16), np.float32), "w_out_in")  # [N, K], as torch stores it
    scale = numpy_helper.from_array(np.array(0.5, np.float32), "scale")
    nodes = [helper.make_node("Mul", ["w_out_in", "scale"], ["ws"]),
             helper.make_node("Round", ["ws"], ["wr"]),
             helper.make_node("Transpose", ["wr"], ["wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "wt"], ["y"], name="fc")]
    path = tmp_path / "qat.onnx"
    onnx.save(model_of(nodes, [value("x", [1, 16])], [value("y", [1, 8])], [w, scale]), path)
    layer = json.loads(run(path, "--json").output)["layers"][0]
    assert (layer["node"], layer["k"], layer["n"]) == ("fc", 16, 8)
    assert layer["storage"] == "initializer, computed" and "w_out_in" in layer["note"]
    assert layer["bytes"] == 8 * 16 * 4 + 4


def test_inspect_model_api_validates_protos():
    model = matmul_model()
    assert inspect_model(model).layers[0].bits_per_weight == 32.0
    model.graph.initializer[0].raw_data = b""
    from onnxbit.errors import ModelError

    with pytest.raises(ModelError, match="W"):
        inspect_model(model)


@pytest.mark.parametrize("name", ["digits_float_mlp.onnx", "bitnet_online_dynamo.onnx"])
def test_committed_fixtures_inspect(name):
    result = run(REPO / "models" / "fixtures" / name, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["layers"] and all(layer["precision"] for layer in data["layers"])
