"""The calibration picture (`onnxbit calibrate --png`, the optional `plot` extra)."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnxbit.calibration.png import render_png, short_labels
from onnxbit.cli.main import main
from onnxbit.errors import ConfigError

FIXTURES = Path(__file__).resolve().parent.parent / "models" / "fixtures"
MODEL = FIXTURES / "digits_float_mlp.onnx"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "pixels.npz"
    np.savez(path, pixels=np.load(FIXTURES / "digits_test.npz")["X_test"])
    return path


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a valid PNG has first."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def test_calibrate_writes_a_png_of_both_charts(pixels, tmp_path):
    pytest.importorskip("matplotlib")
    calib, page, picture = tmp_path / "calib.json", tmp_path / "calib.html", tmp_path / "calib.png"
    result = CliRunner().invoke(main, ["calibrate", str(MODEL), "--data", str(pixels), "--budget", "cosine>=0.999",
                                       "--samples", "60", "-o", str(calib), "--html", str(page), "--png", str(picture)])
    assert result.exit_code == 0, result.output
    assert f"wrote {picture}" in result.output and page.is_file() and calib.is_file()
    data = picture.read_bytes()
    width, height = png_size(data)
    assert 1000 <= width <= 2000 and 350 <= height <= 1200, (width, height)
    assert not list(tmp_path.glob(".*.tmp"))  # published, no temporary left
    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(picture) as image:
        image.verify()
    with image_module.open(picture) as image:
        pixels_rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    # Not blank: the bar colours of the three precisions are drawn, not only white and text.
    colours = {"ternary": (0xd6, 0x27, 0x28), "int4": (0xff, 0x7f, 0x0e), "int8": (0x2c, 0xa0, 0x2c)}
    for name, rgb in colours.items():
        share = (np.abs(pixels_rgb - np.array(rgb)).max(axis=-1) <= 2).mean()
        assert share > 0.005, f"{name} bars missing ({share:.4f} of the pixels)"
    assert (pixels_rgb.max(axis=-1) < 60).mean() > 0.002  # text and outlines in black


def test_without_matplotlib_a_clear_error_and_nothing_written(pixels, tmp_path, monkeypatch):
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    calib, picture = tmp_path / "calib.json", tmp_path / "calib.png"
    result = CliRunner().invoke(main, ["calibrate", str(MODEL), "--data", str(pixels), "--samples", "20",
                                       "-o", str(calib), "--png", str(picture)])
    assert result.exit_code != 0
    assert "needs matplotlib" in result.output and "pip install 'onnxbit[plot]'" in result.output
    assert list(tmp_path.iterdir()) == []  # checked before the search: not even the calibration file
    with pytest.raises(ConfigError, match=r"onnxbit\[plot\]"):
        render_png(None)


def test_png_is_never_written_over_the_input_model(pixels, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(MODEL.read_bytes())
    result = CliRunner().invoke(main, ["calibrate", str(model), "--data", str(pixels), "--samples", "20",
                                       "-o", str(tmp_path / "calib.json"), "--png", str(model)])
    assert result.exit_code != 0 and "--png" in result.output and "is the input model" in result.output
    assert model.read_bytes() == MODEL.read_bytes() and not (tmp_path / "calib.json").exists()
    result = CliRunner().invoke(main, ["calibrate", str(model), "--data", str(pixels), "--samples", "20",
                                       "-o", str(tmp_path / "c.json"), "--html", str(tmp_path / "c.x"),
                                       "--png", str(tmp_path / "c.x")])
    assert result.exit_code != 0 and "same file as --html" in result.output


def test_layer_labels_are_short_and_distinct():
    bert = [f"/encoder/layer.{b}/{part}" for b in (0, 11)
            for part in ("attention/self/query/MatMul", "attention/output/dense/MatMul", "output/dense/MatMul")]
    labels = short_labels(bert)
    assert labels[0] == "layer.0/attention/self/query/MatMul"  # the shared "/encoder" prefix dropped
    assert labels[4] == "layer.11/…/output/dense/MatMul"  # too long: block and tail kept
    assert len(set(labels)) == len(labels) and all(len(l) <= 36 for l in labels)
    assert short_labels(["/layers/layers.0/Gemm", "/layers/layers.2/Gemm"]) == ["layers.0/Gemm", "layers.2/Gemm"]
    assert short_labels(["MatMul_0"]) == ["MatMul_0"]
    # Names that only differ in the part shortening would drop stay whole.
    twins = ["/a/block/left/x/MatMul", "/a/block/right/x/MatMul", "/b/block/x/MatMul"]
    assert short_labels(twins, limit=16) == twins


@pytest.mark.parametrize("case", ["no layers", "every error 0", "max_rel, float kept, not met"])
def test_unusual_results_still_draw(case):
    pytest.importorskip("matplotlib")
    from onnxbit.calibration import parse_budget
    from onnxbit.calibration.result import CalibratedLayer, CalibrationResult

    layers = [CalibratedLayer(f"/m/layer.{i}/MatMul", f"w{i}", 64, 32, precision,
                              {"ternary": 0.0, "int4": 0.0, "int8": 0.0} if case == "every error 0" else
                              {"ternary": 0.3, "int4": 1e-3, "int8": 0.0})
              for i, precision in enumerate(("int4", "fp32"))]
    budget = parse_budget("max_rel<=0.05" if case.startswith("max_rel") else "top1>=0.99")
    result = CalibrationResult(budget, [] if case == "no layers" else layers, {}, 0.04, 0.06 if case.startswith(
        "max_rel") else 1.0, [], (16, 4), [] if case == "no layers" else [(1.0, 0.0), (0.3, 0.04)])
    width, height = png_size(render_png(result, case))
    assert width > 800 and height > 300
