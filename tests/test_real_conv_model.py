"""A real convolutional model with trained weights, shipped inside a PyPI
package (rapidocr-onnxruntime's PP-OCR orientation classifier), converts on
every target and runs; int8 keeps every top-1 prediction. Skipped when the
package (or scikit-learn, whose digit glyphs draw the test images) is not
installed (pip install --no-deps rapidocr-onnxruntime==1.4.4)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxbit
from onnxbit.convert import convert

SPEC = importlib.util.find_spec("rapidocr_onnxruntime")
pytestmark = pytest.mark.skipif(SPEC is None, reason="rapidocr-onnxruntime is not installed")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))


@pytest.fixture(scope="module")
def classifier():
    pytest.importorskip("sklearn", reason="the synthetic document images use sklearn's digit glyphs")
    from convert_rapidocr import synthetic_page

    path = Path(SPEC.origin).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    crops = np.stack([synthetic_page(np.random.default_rng(i), 48, 192) for i in range(8)])
    x = np.ascontiguousarray(np.concatenate([crops, crops[:, :, ::-1, ::-1]]), dtype=np.float32)
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    return path, x, reference


@pytest.mark.parametrize("target", ["onnxbit", "ort", "onnx"])
def test_int8_keeps_top1_and_ternary_runs(classifier, target, tmp_path):
    path, x, reference = classifier
    out = tmp_path / "cls.onnx"
    result = convert(path, config={"preset": "int8"}, target=target, output_path=out, progress=False)
    assert len(result.report.converted) == 54  # 53 Conv + the Linear head
    y = onnxbit.InferenceSession(str(out)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y.argmax(1), reference.argmax(1))
    assert out.stat().st_size < 0.5 * path.stat().st_size

    result = convert(path, config={"default": {"precision": "ternary", "granularity": "channel"}}, target=target,
                     output_path=out, progress=False)
    convs = [r for r in result.report.converted if r.op_type == "Conv"]
    assert len(convs) == 53
    if target == "onnxbit":  # depthwise convs run TernaryConv; dense ones with float activations onnxruntime's Conv
        depthwise = {n.name for n in onnx.load(str(out), load_external_data=False).graph.node
                     if n.op_type == "TernaryConv"}
        assert {r.storage for r in convs if r.node in depthwise} == {"TernaryConv/base3"}
        assert {r.storage for r in convs if r.node not in depthwise} == {"Cast+Mul/INT2"}
        assert len(depthwise) > 0
    y = onnxbit.InferenceSession(str(out)).run(None, {"x": x})[0]
    assert y.shape == reference.shape and np.isfinite(y).all()
