"""onnxbit.model_check on real files in tmp_path: unreadable files, bad tensors,
forged external data, broken graphs, and every committed fixture being clean."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_models import model_of, value
from onnxbit.errors import ModelError
from onnxbit.model_check import (ExternalData, Problem, check_model, external_data_info, model_problems,
                                 raw_data_nbytes, read_model, weightless_skeleton)

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "models" / "fixtures").glob("*.onnx"))




def matmul_model(w: np.ndarray | None = None) -> onnx.ModelProto:
    w = np.arange(12, dtype=np.float32).reshape(3, 4) if w is None else w
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    return model_of(nodes, [value("x", [1, w.shape[0]])], [value("y", [1, w.shape[1]])],
                    [numpy_helper.from_array(w, "W")])


def where(problems: list[Problem]) -> list[str]:
    return [p.where for p in problems]


# --------------------------------------------------------------------------- read_model


def test_read_model_loads_a_valid_tiny_model(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(matmul_model(), path)
    model = read_model(path)
    assert [n.name for n in model.graph.node] == ["fc", "relu"]
    assert model_problems(model, tmp_path) == []


def test_read_model_smallest_valid_model(tmp_path):
    # One Identity node, no initializer: a few dozen bytes, still a model.
    path = tmp_path / "tiny.onnx"
    onnx.save(model_of([helper.make_node("Identity", ["x"], ["y"])], [value("x", [1])], [value("y", [1])]), path)
    assert path.stat().st_size < 100
    assert model_problems(read_model(path), tmp_path) == []


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "truncated", "random", "text", "no-graph"])
def test_read_model_rejects_unreadable_files_naming_them(tmp_path, case):
    path = tmp_path / f"{case}.onnx"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        data = matmul_model(np.ones((64, 64), np.float32)).SerializeToString()
        path.write_bytes(data[: len(data) // 2])
    elif case == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif case == "text":
        path.write_text("this is not a model\nbut a text file\n")
    elif case == "no-graph":
        # Valid protobuf, but not a model: a TensorProto decodes as a ModelProto with no graph.
        path.write_bytes(numpy_helper.from_array(np.ones(8, np.float32), "t").SerializeToString())
    with pytest.raises(ModelError) as info:
        read_model(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    expected = {"missing": "no such file", "directory": "is a directory", "empty": "empty",
                "truncated": "truncated", "random": "not an ONNX model", "text": "not an ONNX model",
                "no-graph": "not an ONNX model"}[case]
    assert expected in message


def test_model_cut_after_the_graph_has_no_opset(tmp_path):
    # Fields are written in number order: graph (7) before opset_import (8). A cut
    # between them decodes fine; the missing opset import gives it away.
    model = matmul_model()
    graph_only = onnx.ModelProto(ir_version=model.ir_version, graph=model.graph)
    path = tmp_path / "cut.onnx"
    path.write_bytes(graph_only.SerializeToString())
    with pytest.raises(ModelError, match="imports no opset"):
        read_model(path)


def test_read_model_can_load_external_data(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save_model(matmul_model(np.ones((32, 16), np.float32)), path, save_as_external_data=True,
                    location="ext.data", size_threshold=0)
    lazy = read_model(path)
    assert lazy.graph.initializer[0].data_location == TensorProto.EXTERNAL
    loaded = read_model(path, load_external_data=True)
    assert numpy_helper.to_array(loaded.graph.initializer[0]).sum() == 32 * 16


def test_read_model_with_external_data_refuses_escaping_locations(tmp_path):
    outside = tmp_path / "secret"
    outside.write_bytes(b"\0" * 48)
    inner = tmp_path / "models"
    inner.mkdir()
    path = inner / "m.onnx"
    onnx.save(external_model(location="../secret", length=48), path)
    assert read_model(path).graph.node  # lazily: fine
    with pytest.raises(ModelError, match=r"W.*leaves the model's folder"):
        read_model(path, load_external_data=True)


# --------------------------------------------------------------------------- tensors


def test_raw_data_size_without_copy_matches_len():
    for shape in [(0,), (3,), (127,), (128,), (40, 50), (1, 4100)]:
        t = numpy_helper.from_array(np.ones(shape, np.float32), "t")
        assert raw_data_nbytes(t) == len(t.raw_data)
    t = numpy_helper.from_array(np.ones(10, np.float32), "t")
    t.raw_data = t.raw_data[:-3]
    assert raw_data_nbytes(t) == 37


def test_wrong_raw_data_size_is_named():
    model = matmul_model()
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-4]
    problems = model_problems(model, None)
    assert where(problems) == ["W"]
    assert "raw_data holds 44 bytes" in problems[0].what and "needs 48" in problems[0].what


def test_typed_field_counts_and_packed_types():
    ok = [helper.make_tensor("f", TensorProto.FLOAT, [2, 2], [1, 2, 3, 4]),
          helper.make_tensor("i4", TensorProto.INT4, [5], [1, -1, 2, 0, 3]),
          helper.make_tensor("i2", TensorProto.INT2, [5], [1, -1, 0, 1, -2]),
          helper.make_tensor("s", TensorProto.STRING, [2], [b"a", b"bc"])]
    short = helper.make_tensor("short", TensorProto.FLOAT, [3], [1, 2, 3])
    short.dims[:] = [2, 2]
    bad = [short,
           onnx.TensorProto(name="none", data_type=TensorProto.INT64, dims=[3]),
           numpy_helper.from_array(np.ones(3, np.float16), "h")]
    bad[2].raw_data = b"\0" * 5  # FLOAT16 [3] needs 6 bytes
    int4_raw = onnx.TensorProto(name="i4raw", data_type=TensorProto.INT4, dims=[5], raw_data=b"\0\0")  # needs 3
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    model = model_of(nodes, [value("x", [1])], [value("y", [1])], ok + bad + [int4_raw], opset=21)
    model.ir_version = 10
    problems = model_problems(model, None)
    assert where(problems) == ["short", "none", "h", "i4raw"]
    assert "float_data has 3 entries" in problems[0].what
    assert "has no data" in problems[1].what
    assert "needs 3" in problems[3].what


def test_constant_node_tensor_is_checked_and_named():
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "")
    w.raw_data = w.raw_data[:8]
    nodes = [helper.make_node("Constant", [], ["W"], name="weight_const", value=w),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")]
    model = model_of(nodes, [value("x", [1, 3])], [value("y", [1, 4])])
    problems = model_problems(model, None)
    assert where(problems) == ["weight_const"]
    assert "Constant attribute 'value'" in problems[0].what


def test_subgraph_tensor_problems_name_the_enclosing_node():
    bad = numpy_helper.from_array(np.ones(4, np.float32), "B")
    bad.raw_data = b"\0" * 3
    then = helper.make_graph([helper.make_node("Add", ["x", "B"], ["t"], name="add")], "then", [],
                             [value("t", [4])], [bad])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"], name="id")], "else", [], [value("e", [4])])
    nodes = [helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=other)]
    model = model_of(nodes, [value("c", [], TensorProto.BOOL), value("x", [4])], [value("y", [4])])
    assert where(model_problems(model, None)) == ["branch/B"]


# --------------------------------------------------------------------------- external data


def external_model(location: str, length: int | None = 48, offset: int = 0) -> onnx.ModelProto:
    """matmul_model with W [3, 4] float (48 bytes) in external data."""
    model = matmul_model()
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for key, val in entries.items():
        w.external_data.add(key=key, value=val)
    return model


def test_valid_external_data_model_is_clean_without_loading(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save_model(matmul_model(np.ones((64, 32), np.float32)), path, save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=0)
    model = read_model(path)
    info = external_data_info(model.graph.initializer[0])
    assert info == ExternalData(location="ext.onnx.data", offset=0, length=64 * 32 * 4, checksum=None)
    assert model_problems(model, tmp_path) == []
    assert model.graph.initializer[0].data_location == TensorProto.EXTERNAL  # not loaded
    assert external_data_info(matmul_model().graph.initializer[0]) is None


@pytest.mark.parametrize("case, expected", [
    ("forged-length", "length 4 does not match FLOAT[3, 4], which needs 48"),
    ("offset-beyond", "offset 4096 is beyond the end"),
    ("runs-past-end", "runs past the end"),
    ("no-length-wrong-size", "to the end of 'w.bin' is 40 bytes"),
    ("dotdot", "leaves the model's folder"),
    ("absolute", "is an absolute path"),
    ("symlink", "is a symbolic link to"),
    ("missing-file", "does not exist"),
    ("directory", "is not a regular file"),
    ("bad-offset", "offset 'x' is not an integer"),
])
def test_external_data_problems(tmp_path, case, expected):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"\0" * 48)
    (tmp_path / "outside.bin").write_bytes(b"\0" * 48)
    model = {
        "forged-length": lambda: external_model("w.bin", length=4),
        "offset-beyond": lambda: external_model("w.bin", offset=4096),
        "runs-past-end": lambda: external_model("w.bin", offset=8),
        "no-length-wrong-size": lambda: external_model("w.bin", length=None, offset=8),
        "dotdot": lambda: external_model("../outside.bin"),
        "absolute": lambda: external_model(str(tmp_path / "outside.bin")),
        "symlink": lambda: external_model("link.bin"),
        "missing-file": lambda: external_model("nope.bin"),
        "directory": lambda: external_model("sub"),
        "bad-offset": lambda: external_model("w.bin"),
    }[case]()
    if case == "symlink":
        os.symlink(tmp_path / "outside.bin", folder / "link.bin")
    if case == "directory":
        (folder / "sub").mkdir()
    if case == "bad-offset":
        model.graph.initializer[0].external_data[1].value = "x"
    path = folder / "m.onnx"
    onnx.save(model, path)
    problems = model_problems(read_model(path), folder)
    assert where(problems) == ["W"], problems
    assert expected in problems[0].what
    with pytest.raises(ModelError, match=r"m\.onnx: invalid model, 1 problem: W: "):
        check_model(read_model(path), folder, source=str(path))


def test_symlink_inside_the_folder_is_fine(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 48)
    os.symlink(tmp_path / "w.bin", tmp_path / "alias.bin")
    assert model_problems(external_model("alias.bin"), tmp_path) == []


def test_forged_length_is_caught_without_a_folder():
    problems = model_problems(external_model("w.bin", length=10**12), None)
    assert where(problems) == ["W"] and "forged" in problems[0].what


# --------------------------------------------------------------------------- graphs


def test_cycle_is_named():
    nodes = [helper.make_node("Relu", ["b"], ["a"], name="n1"),
             helper.make_node("Relu", ["a"], ["b"], name="n2"),
             helper.make_node("Add", ["x", "b"], ["y"], name="n3")]
    problems = model_problems(model_of(nodes, [value("x", [2])], [value("y", [2])]), None)
    assert len(problems) == 1 and "cycle" in problems[0].what
    assert "n1" in problems[0].what and "n2" in problems[0].what


def test_undefined_input_is_named():
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="ok"), helper.make_node("Add", ["h", "ghost"], ["y"],
                                                                                   name="adder")]
    problems = model_problems(model_of(nodes, [value("x", [2])], [value("y", [2])]), None)
    assert where(problems) == ["adder"] and "'ghost'" in problems[0].what


def test_nodes_out_of_order_are_named():
    nodes = [helper.make_node("Relu", ["h"], ["y"], name="second"), helper.make_node("Relu", ["x"], ["h"],
                                                                                      name="first")]
    problems = model_problems(model_of(nodes, [value("x", [2])], [value("y", [2])]), None)
    assert where(problems) == ["second"] and "topological order" in problems[0].what


def test_empty_graph_and_missing_opset():
    model = model_of([], [value("x", [2])], [value("x", [2])])
    assert [p.what for p in model_problems(model, None)] == ["the graph is empty (it has no nodes)"]
    model = matmul_model()
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    assert any("imports no ai.onnx opset" in p.what for p in model_problems(model, None))


def test_checker_findings_name_the_node():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="odd", bogus=3)]
    problems = model_problems(model_of(nodes, [value("x", [2])], [value("y", [2])]), None)
    assert where(problems) == ["odd"] and "onnx.checker" in problems[0].what and "\n" not in problems[0].what


def test_check_model_lists_the_first_problems_and_the_count():
    inits = []
    for i in range(7):
        t = numpy_helper.from_array(np.ones(4, np.float32), f"T{i}")
        t.raw_data = b"\0"
        inits.append(t)
    model = model_of([helper.make_node("Identity", ["x"], ["y"], name="id")], [value("x", [4])],
                     [value("y", [4])], inits)
    with pytest.raises(ModelError) as info:
        check_model(model, None, source="m.onnx")
    message = str(info.value)
    assert message.startswith("m.onnx: invalid model, 7 problems: T0: ")
    assert "T4:" in message and "T5:" not in message and message.endswith("and 2 more")
    check_model(matmul_model(), None)  # a valid model passes


def test_skeleton_holds_no_weight_bytes():
    w = numpy_helper.from_array(np.ones((256, 256), np.float32), "")
    nodes = [helper.make_node("Constant", [], ["C"], value=w), helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Add", ["h", "C"], ["y"])]
    model = model_of(nodes, [value("x", [1, 256])], [value("y", [256, 256])],
                     [numpy_helper.from_array(np.ones((256, 256), np.float32), "W")])
    assert model.ByteSize() > 500_000
    skeleton = weightless_skeleton(model)
    assert skeleton.ByteSize() < 2_000
    onnx.checker.check_model(skeleton)


# --------------------------------------------------------------------------- committed fixtures


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_committed_fixtures_are_clean(path):
    model = read_model(path)
    assert model_problems(model, path.parent) == []


def test_fixtures_were_found():
    assert len(FIXTURES) >= 5
