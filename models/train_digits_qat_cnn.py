"""Train a small convolutional digits classifier with BitNet b1.58 QAT on its
convolutions and export its fake-quant graph to ONNX (the Conv QAT fixture).

Every convolution sees absmean-ternary weights (per tensor, straight-through
gradients); the second and third see int8 activations with one absmax scale
per pixel over the channels (left in the graph as standard ops: TernaryConv's
act_quant=1 shares a scale per im2col row instead, which a Conv export cannot
express). The head is a float Linear. Writes to --out:
  digits_qat_cnn.onnx   TorchScript exporter, input "pixels" [N, 64]
  digits_qat_cnn.json   onnxruntime test accuracy, architecture, seed
(the test split is models/fixtures/digits_test.npz, written by train_digits_qat.py)

Usage:  python models/train_digits_qat_cnn.py --out models/fixtures
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
import digits_mlp  # noqa: E402  (sibling script module: the shared split, STEs, training loop)

EPOCHS = 40
LEARNING_RATE = 5e-3
MIN_ACCURACY = 0.9


class PixelInt8STE(torch.autograd.Function):
    """int8 activation fake-quant with one absmax scale per pixel (over channels)."""

    @staticmethod
    def forward(ctx, activation):
        scale = 127 / activation.abs().amax(dim=1, keepdim=True).clamp(min=1e-5)
        return (activation * scale).round().clamp(-128, 127) / scale

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


class BitConv2dQAT(torch.nn.Conv2d):
    def __init__(self, *args, quantize_input: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.quantize_input = quantize_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize_input:
            x = PixelInt8STE.apply(x)
        return self._conv_forward(x, digits_mlp.TernaryWeightSTE.apply(self.weight), self.bias)


class DigitsCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            BitConv2dQAT(1, 16, 3, padding=1, quantize_input=False), torch.nn.ReLU(),
            BitConv2dQAT(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
            BitConv2dQAT(32, 32, 3, padding=1, groups=32), torch.nn.ReLU(),
        )
        self.head = torch.nn.Linear(32 * 4 * 4, 10)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.features(pixels.reshape(-1, 1, 8, 8))
        return self.head(x.flatten(1))


def export(model: DigitsCNN, path: Path) -> None:
    torch.onnx.export(model, (torch.zeros(2, 64),), str(path), dynamo=False, input_names=["pixels"],
                      output_names=["logits"], dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=18)
    onnx.checker.check_model(str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "fixtures")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")
    torch.manual_seed(digits_mlp.SEED)
    x_train, x_test, y_train, y_test = digits_mlp.digits_split()
    model = DigitsCNN()
    digits_mlp.train(model, x_train, y_train, EPOCHS, LEARNING_RATE)
    torch_accuracy = digits_mlp.torch_accuracy(model, x_test, y_test)
    path = args.out / "digits_qat_cnn.onnx"
    export(model, path)
    accuracy = digits_mlp.onnx_accuracy(path, x_test, y_test)
    print(f"torch QAT test accuracy {torch_accuracy:.4f}; {path.name}: {path.stat().st_size / 1024:.0f} KiB, "
          f"onnxruntime test accuracy {accuracy:.4f}")
    record = {
        "architecture": "pixels -> [N,1,8,8] -> Conv(1,16,3x3,pad 1)+ReLU -> Conv(16,32,3x3,stride 2,pad 1)+ReLU "
        "-> depthwise Conv(32,32,3x3,pad 1)+ReLU -> Linear(512,10); the convolutions BitNet b1.58 QAT (absmean "
        "ternary weights per tensor; int8 activations, one absmax scale per pixel, on the last two)",
        "seed": digits_mlp.SEED, "epochs": EPOCHS, "learning_rate": LEARNING_RATE,
        "torch_test_accuracy": torch_accuracy, "test_accuracy": accuracy,
        "input_name": "pixels", "output_name": "logits",
    }
    digits_mlp.write_record(args.out / "digits_qat_cnn.json", record)
    if accuracy < MIN_ACCURACY:
        print(f"FAILURE: accuracy {accuracy}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
