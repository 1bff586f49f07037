"""Convert the convolutional OCR models shipped inside the rapidocr-onnxruntime
wheel (PP-OCRv4 text detector, PP-OCR mobile orientation classifier) on every
target and precision, and report file size, latency and output agreement
against the original model. Offline: the models come from the installed
package (`pip install --no-deps rapidocr-onnxruntime==1.4.4`).

Inputs are synthetic document images (lines of sklearn's handwritten digit
glyphs on a light page, seeded), as the package ships no images:
  detector:   [1, 3, 640, 640]; agreement = IoU of the text masks
              (probability > 0.3, rapidocr's threshold) and max |diff|
  classifier: 64 crops [3, 48, 192] and their 180-degree rotations; agreement
              = share of identical top-1 predictions

Usage:  python models/convert_rapidocr.py [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = {
    "ternary": {"default": {"precision": "ternary", "granularity": "channel"}},
    # int8 activations per im2col row: TernaryConv's fast path (target onnxbit; the others keep float ones)
    "ternary-a8": {"default": {"precision": "ternary", "granularity": "channel", "act_quant": 1}},
    "int8": {"preset": "int8"},
    "int4": {"default": {"precision": "int4", "granularity": "channel", "symmetric": False}},
}
TARGETS = ("onnxbit", "ort", "onnx")


def model_dir() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        raise SystemExit("rapidocr-onnxruntime is not installed (pip install --no-deps rapidocr-onnxruntime==1.4.4)")
    return Path(spec.origin).parent / "models"


def synthetic_page(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A light page with lines of dark handwritten digits (sklearn's 8x8 digit
    glyphs, scaled up), normalized as PP-OCR expects ([3, height, width])."""
    from sklearn.datasets import load_digits

    glyphs = load_digits().images / 16.0  # [1797, 8, 8], ink in [0, 1]
    scale = max(1, height // 24)
    size = 8 * scale
    page = np.full((height, width), 0.95, np.float32)
    top = (height - size) // 2 if height < 3 * size else size // 2
    while top + size <= height:
        left = int(rng.integers(0, size))
        while left + size <= width:
            for _ in range(int(rng.integers(3, 9))):  # one "word"
                if left + size > width:
                    break
                glyph = np.kron(glyphs[int(rng.integers(len(glyphs)))], np.ones((scale, scale)))
                page[top:top + size, left:left + size] -= 0.85 * glyph.astype(np.float32)
                left += size - scale
            left += 2 * size
        top += 2 * size
    page += rng.normal(0, 0.02, page.shape).astype(np.float32)
    image = np.repeat(np.clip(page, 0, 1)[None], 3, axis=0)
    return ((image - 0.5) / 0.5).astype(np.float32)


def latency_ms(session, feeds, budget: float = 1.5) -> float:
    session.run(None, feeds)
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < budget or len(times) < 3:
        t = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def agreement(kind: str, reference: np.ndarray, output: np.ndarray) -> dict:
    if kind == "det":
        a, b = reference > 0.3, output > 0.3
        union = np.logical_or(a, b).sum()
        return {"mask_iou": float(np.logical_and(a, b).sum() / union) if union else 1.0,
                "max_abs_diff": float(np.abs(reference - output).max())}
    return {"top1_agreement": float((reference.argmax(-1) == output.argmax(-1)).mean()),
            "max_abs_diff": float(np.abs(reference - output).max())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import onnxruntime as ort

    import onnxbit
    from onnxbit.convert import convert

    rng = np.random.default_rng(0)
    det_input = synthetic_page(rng, 640, 640)[None]
    crops = np.stack([synthetic_page(rng, 48, 192) for _ in range(32)])
    cls_input = np.concatenate([crops, crops[:, :, ::-1, ::-1]]).astype(np.float32)
    models = {"det": ("ch_PP-OCRv4_det_infer.onnx", det_input),
              "cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", np.ascontiguousarray(cls_input))}
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle sessions keep off the cores
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for kind, (file_name, x) in models.items():
            source = model_dir() / file_name
            original = ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
            feeds = {original.get_inputs()[0].name: x}
            reference = original.run(None, feeds)[0]
            base_ms = latency_ms(original, feeds)
            print(f"{file_name}: {source.stat().st_size / 1e6:.2f} MB, {base_ms:.2f} ms", flush=True)
            for precision, config in CONFIGS.items():
                for target in TARGETS:
                    out = Path(folder) / f"{kind}_{precision}_{target}.onnx"
                    result = convert(source, config=config, target=target, output_path=out, progress=False)
                    session = onnxbit.InferenceSession(str(out), sess_options=options)
                    output = session.run(None, feeds)[0]
                    row = {"model": file_name, "precision": precision, "target": target,
                           "converted": len(result.report.converted), "skipped": len(result.report.skipped),
                           "size_ratio": os.path.getsize(out) / source.stat().st_size,
                           "latency_ratio": latency_ms(session, feeds) / base_ms,
                           **agreement(kind, reference, output)}
                    results.append(row)
                    print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in row.items() if k != "model"), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
