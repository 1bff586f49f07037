"""`onnxbit verify MODEL`: integrity of a converted model on its own, and the
checksum check onnxruntime runs at session creation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import onnxbit
from onnxbit.cli.main import main
from onnxbit.runtime import InferenceSession
from onnxbit.verify_model import ERROR, WARNING, verify_model, verify_model_file

from op_models import NODE_NAME, build_model, pack_codes

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"


@pytest.fixture(scope="module")
def converted() -> onnx.ModelProto:
    return onnxbit.quantize(str(FIXTURES / "digits_qat_mlp.onnx"), preset="bitnet", target="onnxbit")


def _packed_initializers(model: onnx.ModelProto):
    """(node name, initializer) for B and scales of every TernaryMatMul node."""
    by_name = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "TernaryMatMul":
            for name in node.input[1:3]:
                yield node.name, by_name[name]


def _errors(report) -> list:
    return [f for f in report.findings if f.severity == ERROR]


def test_a_converted_model_is_intact_and_carries_checksums(converted):
    report = verify_model(converted)
    assert report.ok and not report.findings, report.findings
    nodes = [n for n in converted.graph.node if n.op_type == "TernaryMatMul"]
    assert report.nodes_checked == report.checksums_verified == report.weights_decoded == len(nodes) > 0
    assert all(any(a.name == "crc32c" for a in n.attribute) for n in nodes)


def test_every_single_byte_flip_of_every_packed_initializer_is_reported(converted):
    """Acceptance: all byte positions of B and scales of every node, 100 %."""
    model = onnx.ModelProto()
    model.CopyFrom(converted)
    tried = 0
    for node_name, tensor in _packed_initializers(model):
        original = tensor.raw_data
        assert original, "packed initializers are stored as raw_data"
        for position in range(len(original)):
            flipped = bytearray(original)
            flipped[position] ^= 0xFF
            tensor.raw_data = bytes(flipped)
            errors = _errors(verify_model(model))
            assert any(f.where == node_name for f in errors), (tensor.name, position)
            tried += 1
        tensor.raw_data = original
    assert verify_model(model).ok
    assert tried > 1000


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _corrupted(model: onnx.ModelProto, position: int, xor: int = 0x01) -> tuple[onnx.ModelProto, str]:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    node_name, tensor = next(_packed_initializers(copy))
    data = bytearray(tensor.raw_data)
    data[position] ^= xor
    tensor.raw_data = bytes(data)
    return copy, node_name


def test_cli_reports_the_node_and_exits_1_and_json_lists_findings(converted, tmp_path):
    good = _save(converted, tmp_path / "good.onnx")
    result = CliRunner().invoke(main, ["verify", str(good)])
    assert result.exit_code == 0, result.output
    assert "3 checksums verified" in result.output and result.output.rstrip().endswith(": ok")
    bad_model, node_name = _corrupted(converted, 5)
    bad = _save(bad_model, tmp_path / "bad.onnx")
    result = CliRunner().invoke(main, ["verify", str(bad)])
    assert result.exit_code == 1
    assert f"error: {node_name}: checksum mismatch" in result.output
    result = CliRunner().invoke(main, ["verify", str(bad), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["ok"] is False and data["findings"][0]["where"] == node_name
    assert data["findings"][0]["severity"] == "error"


def test_cli_usage_errors(converted, tmp_path):
    good = _save(converted, tmp_path / "good.onnx")
    result = CliRunner().invoke(main, ["verify", str(good), "--rtol", "0.1"])
    assert result.exit_code == 2 and "--rtol" in result.output
    result = CliRunner().invoke(main, ["verify", str(good), str(good), str(good)])
    assert result.exit_code == 2 and "got 3 paths" in result.output
    not_a_model = tmp_path / "x.onnx"
    not_a_model.write_bytes(b"junk")
    result = CliRunner().invoke(main, ["verify", str(not_a_model), "--json"])
    assert result.exit_code == 2 and '"ok": false' in result.output


def test_session_creation_fails_naming_the_node_on_a_checksum_mismatch(converted):
    bad, node_name = _corrupted(converted, 0, xor=0x01)  # 2bit code 0 <-> 1: still decodes
    with pytest.raises(Exception, match=f"node '{node_name}'.*corrupt weights.*CRC32C"):
        InferenceSession(bad)
    options = ort.SessionOptions()
    options.add_session_config_entry("onnxbit.verify_checksums", "0")
    InferenceSession(bad, sess_options=options)  # valid codes, checksum not checked: loads


def test_without_checksum_verification_out_of_range_codes_still_fail(converted):
    # 0xFF is four codes 3, invalid in 2bit; scales untouched.
    copy = onnx.ModelProto()
    copy.CopyFrom(converted)
    node_name, tensor = next(_packed_initializers(copy))
    data = bytearray(tensor.raw_data)
    data[0] = 0xFF
    tensor.raw_data = bytes(data)
    options = ort.SessionOptions()
    options.add_session_config_entry("onnxbit.verify_checksums", "0")
    with pytest.raises(Exception, match=f"node '{node_name}'.*invalid weights"):
        InferenceSession(copy, sess_options=options)


def test_sampled_byte_flips_all_fail_session_creation(converted):
    copy = onnx.ModelProto()
    copy.CopyFrom(converted)
    pairs = list(_packed_initializers(copy))
    for node_name, tensor in pairs:
        original = tensor.raw_data
        for position in range(0, len(original), max(1, len(original) // 6)):
            flipped = bytearray(original)
            flipped[position] ^= 0x10
            tensor.raw_data = bytes(flipped)
            with pytest.raises(Exception, match=f"node '{node_name}'"):
                InferenceSession(copy)
        tensor.raw_data = original


def test_a_bad_config_value_is_refused():
    options = ort.SessionOptions()
    options.add_session_config_entry("onnxbit.verify_checksums", "yes")
    with pytest.raises(Exception, match="onnxbit.verify_checksums='yes' must be"):
        onnxbit.register(options)


def _node_model(rng, **attr_changes):
    k, n = 12, 3
    codes = rng.integers(-1, 2, (k, n)).astype(np.int8)
    packed = pack_codes(codes, "base3")
    scales = np.full(n, 0.5, np.float32)
    attrs = {"K": k, "N": n, "format": "base3",
             "crc32c": onnxbit.checksum.packed_weight_crc32c(packed, scales)}
    attrs.update(attr_changes)
    attrs = {key: value for key, value in attrs.items() if value is not None}
    return build_model(packed, scales, attrs=attrs).model


@pytest.mark.parametrize("changes, fragment", [
    ({"K": 0}, "attribute K=0 must be > 0"),
    ({"N": None}, "attribute N is missing"),
    ({"format": "4bit"}, "format='4bit' is not one of"),
    ({"act_quant": 3}, "act_quant=3 must be 0, 1 or 2"),
    ({"act_quant": 2}, "attribute act_scale is missing (act_quant=2 needs it)"),
    ({"act_quant": 2, "act_scale": 0.0}, "act_scale=0.0 must be finite and > 0"),
    ({"act_quant": 2, "act_scale": float("inf")}, "act_scale=inf must be finite and > 0"),
    ({"act_quant": 2, "act_scale": 5}, "act_scale must be a float, got INT"),
    ({"act_quant": 1, "act_scale": 5.0}, "act_scale is only used with act_quant=2, but act_quant=1"),
    ({"group_size": -1}, "group_size=-1 must be >= 0"),
    ({"crc32c": 2 ** 32}, "is not a CRC32C"),
    ({"crc32c": 12345}, "checksum mismatch"),
    ({"K": 16}, "B ('B') has shape [3, 3]; K=16 N=3 in format base3 needs [3, 4]"),
])
def test_attribute_and_shape_problems_are_errors_naming_the_node(rng, changes, fragment):
    report = verify_model(_node_model(rng, **changes))
    assert not report.ok
    assert any(f.where == NODE_NAME and fragment in f.message for f in _errors(report)), report.findings


def test_a_static_act_scale_node_is_ok(rng):
    report = verify_model(_node_model(rng, act_quant=2, act_scale=42.5))
    assert report.ok and not _errors(report), report.findings


def test_a_node_without_checksum_is_a_warning_only(rng):
    report = verify_model(_node_model(rng, crc32c=None))
    assert report.ok
    assert [f.severity for f in report.findings] == [WARNING]
    assert "no crc32c attribute" in report.findings[0].message


def test_bad_scales_are_reported(rng):
    model = _node_model(rng, crc32c=None)
    scales = next(t for t in model.graph.initializer if t.name == "scales")
    scales.CopyFrom(numpy_helper.from_array(np.array([0.5, -1.0, np.nan], np.float32), "scales"))
    errors = _errors(verify_model(model))
    assert any("2 values not finite and > 0, first at index 1" in f.message for f in errors), errors


def test_external_data_outside_the_model_folder_is_reported(converted, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "m.onnx"
    onnx.save_model(converted, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert verify_model_file(path).ok
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere.bin"
    onnx.save(model, str(path))
    report = verify_model_file(path)
    assert not report.ok
    assert any("outside" in f.message or "elsewhere" in f.message for f in _errors(report)), report.findings


def test_a_name_that_is_not_utf8_is_a_clean_model_error(converted, tmp_path):
    """protobuf parses such a file and hands the name out as bytes; every command must refuse it cleanly."""
    data = converted.SerializeToString()
    name = converted.graph.initializer[0].name.encode()
    broken = data.replace(name, name[:3] + b"\xe5" + name[4:], 1)
    path = tmp_path / "bad_name.onnx"
    path.write_bytes(broken)
    for command in (["verify", str(path)], ["inspect", str(path)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code != 0
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "not valid UTF-8" in result.output, result.output


@pytest.fixture(scope="module")
def converted_cnn() -> onnx.ModelProto:
    """The QAT CNN converted: TernaryConv nodes (base3, then rans with auto on a copy below)."""
    return onnxbit.quantize(str(FIXTURES / "digits_qat_cnn.onnx"), preset="bitnet", target="onnxbit")


@pytest.mark.parametrize("fmt", ["base3", "rans"])
def test_ternary_conv_nodes_carry_checksums_verify_checks_and_every_byte_flip_is_reported(fmt, rng):
    model = onnxbit.quantize(str(FIXTURES / "digits_qat_cnn.onnx"), config={"preset": "bitnet",
                                                                            "default": {"format": fmt}},
                             target="onnxbit")
    nodes = [n for n in model.graph.node if n.op_type == "TernaryConv"]
    assert nodes and all(any(a.name == "crc32c" for a in n.attribute) for n in nodes)
    assert {a.s.decode() for n in nodes for a in n.attribute if a.name == "format"} == {fmt}
    report = verify_model(model)
    assert report.ok and not report.findings, report.findings
    assert report.nodes_checked == report.checksums_verified == report.weights_decoded == len(nodes)
    by_name = {t.name: t for t in model.graph.initializer}
    for node in nodes:
        for tensor in (by_name[name] for name in node.input[1:3]):
            original = tensor.raw_data
            positions = rng.choice(len(original), size=min(40, len(original)), replace=False)
            for position in positions:
                flipped = bytearray(original)
                flipped[position] ^= 0x01
                tensor.raw_data = bytes(flipped)
                assert any(f.where == node.name for f in _errors(verify_model(model))), (tensor.name, position)
            tensor.raw_data = original


def test_ternary_conv_session_creation_checks_the_checksum(converted_cnn):
    copy = onnx.ModelProto()
    copy.CopyFrom(converted_cnn)
    node = next(n for n in copy.graph.node if n.op_type == "TernaryConv")
    scales = next(t for t in copy.graph.initializer if t.name == node.input[2])
    data = bytearray(scales.raw_data)
    data[0] ^= 0x01  # a scale's lowest mantissa bit: still a valid scale
    scales.raw_data = bytes(data)
    with pytest.raises(Exception, match=f"TernaryConv node '{node.name}'.*corrupt weights.*CRC32C"):
        InferenceSession(copy)
    options = ort.SessionOptions()
    options.add_session_config_entry("onnxbit.verify_checksums", "0")
    InferenceSession(copy, sess_options=options)  # valid weights, checksum not checked: loads


def test_ternary_conv_attribute_problems_name_the_node(converted_cnn):
    copy = onnx.ModelProto()
    copy.CopyFrom(converted_cnn)
    node = next(n for n in copy.graph.node if n.op_type == "TernaryConv")
    shape = next(a for a in node.attribute if a.name == "weight_shape")
    shape.ints[0] += 1
    errors = _errors(verify_model(copy))
    assert any(f.where == node.name and "weight_shape's M=" in f.message for f in errors), errors
    del shape.ints[:]
    errors = _errors(verify_model(copy))
    assert any(f.where == node.name and "attribute weight_shape=[]" in f.message for f in errors), errors
