"""Train the digits MLP in plain float (no QAT) and export it for post-training-quantization tests.

The TorchScript exporter turns each nn.Linear on a 2-D input into Gemm(transB=1) with the
weight [out, in] and bias as initializers. Writes to --out:
  digits_float_mlp.onnx   digits_float_mlp.json (onnxruntime test accuracy, architecture, seed)
The test set is the same as train_digits_qat.py's digits_test.npz.

Usage:  python models/make_float_mlp.py --out models/fixtures
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits_mlp  # noqa: E402  (sibling script module, not an installed package)

EPOCHS = 40
LEARNING_RATE = 5e-3
MIN_ACCURACY = 0.93
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
    model = digits_mlp.DigitsMLP(quantization_aware=False)
    digits_mlp.train(model, x_train, y_train, EPOCHS, LEARNING_RATE)
    torch_accuracy = digits_mlp.torch_accuracy(model, x_test, y_test)

    path = args.out / "digits_float_mlp.onnx"
    digits_mlp.export_torchscript(model, path)
    accuracy = digits_mlp.onnx_accuracy(path, x_test, y_test)
    diff = digits_mlp.max_logit_diff(path, model, x_test)
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    print(f"{path.name}: {path.stat().st_size / 1024:.0f} KiB, ops {ops}, onnxruntime test accuracy {accuracy:.4f} "
          f"(torch {torch_accuracy:.4f}), max |onnxruntime - torch| logits {diff:.3e}")
    digits_mlp.write_record(
        args.out / "digits_float_mlp.json",
        {
            "architecture": "Linear(64,128)+ReLU -> Linear(128,64)+ReLU -> Linear(64,10), float32, bias=True",
            "seed": digits_mlp.SEED,
            "epochs": EPOCHS,
            "learning_rate": LEARNING_RATE,
            "torch_test_accuracy": torch_accuracy,
            "test_accuracy": accuracy,
            "max_abs_logit_diff_vs_torch": diff,
            "onnx_ops": ops,
            "input_name": "pixels",
            "output_name": "logits",
        },
    )
    failures = []
    if accuracy < MIN_ACCURACY:
        failures.append(f"test accuracy {accuracy} below {MIN_ACCURACY}")
    if diff > LOGITS_ATOL:
        failures.append(f"onnxruntime logits differ from PyTorch by {diff}")
    for failure in failures:
        print("FAILURE:", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
