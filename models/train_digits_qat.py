"""Train a digits MLP with BitNet b1.58 QAT and export its fake-quant graph to ONNX.

Every Linear sees absmean-ternary weights and per-token absmax int8 activations in
forward (straight-through gradients). Writes to --out:
  digits_qat_mlp.onnx          TorchScript exporter (Gemm where the exporter chose it)
  digits_qat_mlp_dynamo.onnx   dynamo exporter
  digits_test.npz              X_test float32 [N, 64], y_test int64 [N]
  digits_qat_mlp.json          onnxruntime test accuracy of each file, architecture, seed

Usage:  python models/train_digits_qat.py --out models/fixtures
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits_mlp  # noqa: E402  (sibling script module, not an installed package)

EPOCHS = 60
LEARNING_RATE = 5e-3
# A QAT MLP on digits that scores below this has not trained; the run fails instead of
# committing a broken fixture.
MIN_ACCURACY = 0.9
# Logit agreement between onnxruntime and PyTorch; a rare int8 rounding tie flip (one float
# ulp at a .5 boundary) may move one sample's logits by more, so compare the predictions too.
LOGITS_ATOL = 1e-4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "fixtures")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")
    torch.manual_seed(digits_mlp.SEED)

    x_train, x_test, y_train, y_test = digits_mlp.digits_split()
    np.savez(args.out / "digits_test.npz", X_test=x_test, y_test=y_test)

    model = digits_mlp.DigitsMLP(quantization_aware=True)
    digits_mlp.train(model, x_train, y_train, EPOCHS, LEARNING_RATE)
    torch_accuracy = digits_mlp.torch_accuracy(model, x_test, y_test)
    print(f"torch QAT test accuracy: {torch_accuracy:.4f}")

    record = {
        "architecture": "Linear(64,128)+ReLU -> Linear(128,64)+ReLU -> Linear(64,10), every Linear BitNet b1.58 QAT "
        "(absmean ternary weights, per-token absmax int8 activations), bias=True",
        "seed": digits_mlp.SEED,
        "epochs": EPOCHS,
        "learning_rate": LEARNING_RATE,
        "torch_test_accuracy": torch_accuracy,
        "input_name": "pixels",
        "output_name": "logits",
        "exports": {},
    }
    failures = []
    for file_name, export in (
        ("digits_qat_mlp.onnx", digits_mlp.export_torchscript),
        ("digits_qat_mlp_dynamo.onnx", digits_mlp.export_dynamo),
    ):
        path = args.out / file_name
        export(model, path)
        accuracy = digits_mlp.onnx_accuracy(path, x_test, y_test)
        diff = digits_mlp.max_logit_diff(path, model, x_test)
        print(f"{file_name}: {path.stat().st_size / 1024:.0f} KiB, onnxruntime test accuracy {accuracy:.4f}, "
              f"max |onnxruntime - torch| logits {diff:.3e}")
        record["exports"][file_name] = {"onnxruntime_test_accuracy": accuracy, "max_abs_logit_diff_vs_torch": diff}
        if accuracy < MIN_ACCURACY or abs(accuracy - torch_accuracy) > 1.0 / len(y_test) + 1e-9:
            failures.append(f"{file_name}: accuracy {accuracy} (torch {torch_accuracy})")
        if diff > LOGITS_ATOL:
            print(f"  note: logits differ by more than {LOGITS_ATOL:g} (int8 rounding tie flip)")
    record["test_accuracy"] = record["exports"]["digits_qat_mlp.onnx"]["onnxruntime_test_accuracy"]
    digits_mlp.write_record(args.out / "digits_qat_mlp.json", record)
    for failure in failures:
        print("FAILURE:", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
