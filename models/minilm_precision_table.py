"""Per-precision table for the all-MiniLM-L6-v2 export (models/export_minilm.py):
weight bytes against float (the 36 MatMul weights; the embedding tables are
Gathers and not counted), and the cosine of the sentence embeddings against
the float model on held-out sentences, for uniform precisions and for
calibrated mixes.

    python models/export_minilm.py /tmp/onnxbit-minilm
    onnxbit calibrate /tmp/onnxbit-minilm/minilm.onnx --data /tmp/onnxbit-minilm/calibration.npz \\
        --samples 100 --budget "cosine>=0.99" -o /tmp/onnxbit-minilm/calib.json
    python models/minilm_precision_table.py /tmp/onnxbit-minilm --calibration /tmp/onnxbit-minilm/calib.json

"held out" is calibration's own held-out split of the first 100 samples
(every 5th); "unseen" are the samples after the first 100, which calibration
never ran. Every converted model uses target onnx (DequantizeLinear + MatMul,
float activations), which computes what calibration simulates.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxbit.calibration import load_calibration_data
from onnxbit.calibration.result import load_calibration
from onnxbit.convert import convert

NAMES = ("input_ids", "attention_mask", "token_type_ids")
UNIFORM = {
    "int8, per channel": {"precision": "int8", "granularity": "channel", "symmetric": True},
    "int4, per channel": {"precision": "int4", "granularity": "channel", "symmetric": True},
    "int4, blocks of 128 (symmetric)": {"precision": "int4", "granularity": "group", "group_size": 128,
                                        "symmetric": True},
    "int4, blocks of 32 (zero points)": {"precision": "int4", "granularity": "group", "group_size": 32,
                                         "symmetric": False},
    "int2, blocks of 32 (zero points)": {"precision": "int2", "granularity": "group", "group_size": 32,
                                         "symmetric": False},
    "ternary, per channel (absmean)": {"precision": "ternary", "granularity": "channel", "method": "absmean"},
}


def cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    a, b = reference.astype(np.float64), candidate.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def embed(model: str | Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def weight_ratio(model: Path, report) -> float:
    """Stored bytes of the MatMul/Gemm weights over their float bytes."""
    float_bytes = {r.node: r.bytes_before for r in report.layers if r.bytes_before}
    stored = {r.node: r.bytes_after for r in report.layers if r.action == "converted"}
    return sum(stored.get(node, size) for node, size in float_bytes.items()) / sum(float_bytes.values())


def row(name: str, model: Path, config, folder: Path, sets: dict[str, dict[str, np.ndarray]],
        references: dict[str, np.ndarray]) -> dict:
    out = folder / "converted.onnx"
    result = convert(model, config=config, target="onnx", output_path=out, progress=False, measure_error=False)
    entry = {"configuration": name, "weights_vs_fp32": weight_ratio(model, result.report)}
    for label, feeds in sets.items():
        c = cosines(references[label], embed(out, feeds))
        entry[f"{label}_cosine_mean"] = float(c.mean())
        entry[f"{label}_cosine_min"] = float(c.min())
    return entry


def gptq_everywhere(model: Path, feeds, precision: str, scratch: Path) -> dict:
    """A config putting every layer at `precision` with GPTQ codes computed
    on the calibration split, as calibration does."""
    from onnxbit.calibration.codes import codes_bytes, weight_digest
    from onnxbit.calibration.hessians import layer_hessians
    from onnxbit.calibration.result import SETTINGS, literal_glob
    from onnxbit.calibration.search import _candidate_layers
    from onnxbit.quant.gptq import quantize_int_gptq

    proto = onnx.load(str(model))
    layers, _, _, weights = _candidate_layers(proto)
    hessians = layer_hessians(proto, [l.activation for l in layers], feeds)
    settings = SETTINGS[precision]
    codes, rules = {}, []
    for layer in layers:
        w = weights[layer.node]
        q = quantize_int_gptq(w, hessians[layer.activation], int(precision[3:]), symmetric=settings["symmetric"],
                              granularity=settings["granularity"], group_size=settings.get("group_size"))
        codes[layer.weight] = (q, weight_digest(w))
        rules.append({"match": {"name": literal_glob(layer.node)}, **settings,
                      "codes": str(scratch / f"{precision}.codes.npz")})
    (scratch / f"{precision}.codes.npz").write_bytes(codes_bytes(codes))
    return {"default": {"precision": "fp32"}, "rules": rules}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="the folder export_minilm.py wrote")
    parser.add_argument("--calibration", action="append", default=[], type=Path,
                        help="a calibration file to add as a row (repeatable)")
    parser.add_argument("--gptq-uniform", action="store_true",
                        help="also rows for every layer at int4 / int8 with GPTQ codes")
    parser.add_argument("--skip-uniform", action="store_true", help="only the --calibration rows")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    folder = Path(args.folder)
    model = folder / "minilm.onnx"
    data = np.load(folder / "calibration.npz")
    split = load_calibration_data(folder / "calibration.npz", NAMES, samples=100)
    sets = {"held_out": {n: np.concatenate([f[n] for f in split.holdout]) for n in NAMES},
            "unseen": {n: data[n][100:] for n in NAMES}}
    references = {label: embed(model, feeds) for label, feeds in sets.items()}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        configs = [] if args.skip_uniform else [(name, {"default": settings}) for name, settings in UNIFORM.items()]
        if args.gptq_uniform:
            for precision in ("int8", "int4"):
                configs.append((f"{precision} GPTQ ({'per channel' if precision == 'int8' else 'blocks of 32'})",
                                gptq_everywhere(model, split.calibration, precision, scratch)))
        for path in args.calibration:
            saved = json.loads(path.read_text())
            configs.append((f"calibrated {saved['budget']} ({path.name})", load_calibration(path)))
        for name, config in configs:
            rows.append(row(name, model, config, scratch, sets, references))
            r = rows[-1]
            print(f"| {name} | {r['weights_vs_fp32']:.3f}x | {r['held_out_cosine_mean']:.4f} / "
                  f"{r['held_out_cosine_min']:.4f} | {r['unseen_cosine_mean']:.4f} / {r['unseen_cosine_min']:.4f} |",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
