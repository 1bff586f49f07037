"""`onnxbit quantize` and `onnxbit inspect` through click's test runner."""

import json

import onnx
from click.testing import CliRunner

from onnx_models import mlp
from onnxbit.cli.main import main


def write_mlp(tmp_path, rng):
    model, _ = mlp(rng, k=64, hidden=48, n=32)
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    return path


def test_quantize_writes_model_report_and_summary(tmp_path, rng):
    src = write_mlp(tmp_path, rng)
    out, report = tmp_path / "mlp.obx.onnx", tmp_path / "report.json"
    result = CliRunner().invoke(main, ["quantize", str(src), str(out), "--preset", "ternary", "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "1 layer(s) converted, 1 skipped" in result.output
    assert f"wrote {out}" in result.output
    data = json.loads(report.read_text())
    assert data["target"] == "onnxbit" and data["preset"] == "ternary"
    assert [layer["node"] for layer in data["layers"]] == ["fc1", "fc2"]
    assert [n.op_type for n in onnx.load(out).graph.node] == ["TernaryMatMul", "Relu", "Gemm"]


def test_quantize_with_config_file_and_target(tmp_path, rng):
    src = write_mlp(tmp_path, rng)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"default": {"precision": "int4", "granularity": "group", "group_size": 16}}))
    out = tmp_path / "out.onnx"
    result = CliRunner().invoke(main, ["quantize", str(src), str(out), "--config", str(cfg),
                                       "--target", "ort", "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(n.op_type for n in onnx.load(out).graph.node) == ["MatMulNBits", "MatMulNBits", "Relu"]


def test_quantize_errors_are_reported_without_traceback(tmp_path, rng):
    src = write_mlp(tmp_path, rng)
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"default": {"precision": "int5"}}))
    result = CliRunner().invoke(main, ["quantize", str(src), str(tmp_path / "o.onnx"), "--config", str(cfg)])
    assert result.exit_code == 1
    assert "unknown precision 'int5'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.onnx").exists()


def test_inspect_lists_layers_and_library_needs(tmp_path, rng):
    src = write_mlp(tmp_path, rng)
    out = tmp_path / "out.onnx"
    assert CliRunner().invoke(main, ["quantize", str(src), str(out), "--preset", "ternary", "-q"]).exit_code == 0
    result = CliRunner().invoke(main, ["inspect", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["needs_onnxbit_library"] is True and data["library_ops"] == ["TernaryMatMul"]
    layers = {layer["node"]: layer for layer in data["layers"]}
    assert layers["fc1"]["storage"] == "TernaryMatMul/base3" and (layers["fc1"]["k"], layers["fc1"]["n"]) == (64, 48)
    assert layers["fc1"]["bits_per_weight"] == 8 * (48 * 13 + 4) / (64 * 48)  # 13 base3 bytes a row of 64
    assert layers["fc2"]["precision"] == "float" and (layers["fc2"]["k"], layers["fc2"]["n"]) == (48, 32)
    text = CliRunner().invoke(main, ["inspect", str(src)])
    assert text.exit_code == 0 and "runs on stock onnxruntime" in text.output


def test_inspect_reports_dequantize_linear_layers(tmp_path, rng):
    src = write_mlp(tmp_path, rng)
    out = tmp_path / "out.onnx"
    args = ["quantize", str(src), str(out), "--preset", "int4", "--target", "onnx", "-q"]
    assert CliRunner().invoke(main, args).exit_code == 0
    data = json.loads(CliRunner().invoke(main, ["inspect", str(out), "--json"]).output)
    assert {layer["storage"] for layer in data["layers"]} == {"DequantizeLinear/UINT4"}
    assert data["needs_onnxbit_library"] is False
    # int4 preset: 4-bit codes, groups of 32 along K = 64 -> 2 float32 scales and 2 4-bit zero points a column.
    assert data["layers"][0]["bits_per_weight"] == 8 * (64 * 48 // 2 + 2 * 48 * 4 + 2 * 48 // 2) / (64 * 48)


def test_external_data_models_convert_and_inspect(tmp_path, rng):
    from onnxbit.convert import save_model_atomic

    model, _ = mlp(rng, k=64, hidden=48, n=32)
    src = tmp_path / "ext.onnx"
    save_model_atomic(model, src, external_data=True)
    out = tmp_path / "ext.obx.onnx"
    result = CliRunner().invoke(main, ["quantize", str(src), str(out), "--preset", "int8", "--target", "ort", "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads(CliRunner().invoke(main, ["inspect", str(src), "--json"]).output)
    sizes = {layer["node"]: layer["bytes"] for layer in data["layers"]}
    assert sizes == {"fc1": 64 * 48 * 4, "fc2": 48 * 32 * 4}  # read from the external-data entries


def test_bench_convert_reports_throughput(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "convert", "--size", "64", "--rounds", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    stages = {(r["layout"], r["stage"]) for r in data["results"]}
    assert len(stages) == 4 and all(r["gb_per_s"] > 0 for r in data["results"])
