"""The scikit-learn digits task shared by train_digits_qat.py and make_float_mlp.py:
a fixed train/test split, a small MLP (float or BitNet b1.58 QAT), training and scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import sklearn
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
TEST_FRACTION = 0.25
LAYER_SIZES = (64, 128, 64, 10)
# Pixel values in load_digits are 0..16; dividing keeps inputs in [0, 1].
PIXEL_SCALE = 16.0


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """X_train, X_test (float32, scaled to [0, 1]) and y_train, y_test (int64), stratified and seeded."""
    digits = load_digits()
    features = (digits.data / PIXEL_SCALE).astype(np.float32)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=TEST_FRACTION, random_state=SEED, stratify=labels
    )
    return x_train, x_test, y_train, y_test


class TernaryWeightSTE(torch.autograd.Function):
    """BitNet b1.58 weight fake-quant (same formula as transformers' WeightQuant):
    s = 1 / max(mean|W|, 1e-5); W_q = clamp(round(W * s), -1, 1) / s. Straight-through gradient."""

    @staticmethod
    def forward(ctx, weight):
        scale = 1.0 / weight.abs().mean().clamp(min=1e-5)
        return (weight * scale).round().clamp(-1, 1) / scale

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


class Int8ActivationSTE(torch.autograd.Function):
    """BitNet per-token activation fake-quant (same formula as transformers' ActQuant):
    s = 127 / max(max|x| over the last axis, 1e-5); x_q = clamp(round(x * s), -128, 127) / s."""

    @staticmethod
    def forward(ctx, activation):
        scale = 127 / activation.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
        return (activation * scale).round().clamp(-128, 127) / scale

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


class BitLinearQAT(torch.nn.Linear):
    """nn.Linear whose forward sees ternary weights and int8 per-token activations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(Int8ActivationSTE.apply(x), TernaryWeightSTE.apply(self.weight), self.bias)


class DigitsMLP(torch.nn.Module):
    def __init__(self, quantization_aware: bool):
        super().__init__()
        linear = BitLinearQAT if quantization_aware else torch.nn.Linear
        layers: list[torch.nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(zip(LAYER_SIZES[:-1], LAYER_SIZES[1:])):
            layers.append(linear(fan_in, fan_out))
            if index < len(LAYER_SIZES) - 2:
                layers.append(torch.nn.ReLU())
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def train(model: DigitsMLP, x_train: np.ndarray, y_train: np.ndarray, epochs: int, learning_rate: float) -> None:
    torch.manual_seed(SEED)
    # Tiny matrices: threading only adds overhead, and one thread keeps runs bit-reproducible.
    torch.set_num_threads(1)
    inputs = torch.from_numpy(x_train)
    targets = torch.from_numpy(y_train)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
    batch_size = 64
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs))
        for start in range(0, len(inputs), batch_size):
            batch = order[start : start + batch_size]
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            loss.backward()
            optimiser.step()
        scheduler.step()
    model.eval()


def torch_accuracy(model: DigitsMLP, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        predictions = model(torch.from_numpy(x)).argmax(dim=-1).numpy()
    return float((predictions == y).mean())


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x})
    return float((logits.argmax(axis=-1) == y).mean())


def export_torchscript(model: DigitsMLP, path: Path) -> None:
    example = torch.zeros(2, LAYER_SIZES[0])
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=18,
    )
    onnx.checker.check_model(str(path))


def export_dynamo(model: DigitsMLP, path: Path) -> None:
    example = torch.zeros(2, LAYER_SIZES[0])
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
        opset_version=18,
        external_data=False,
    )
    program.save(str(path), external_data=False)
    exported = onnx.load(str(path))
    for node in exported.graph.node:  # stack traces only: no semantics, much size
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(exported, str(path))
    onnx.checker.check_model(str(path))


def max_logit_diff(path: Path, model: DigitsMLP, x: np.ndarray) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x})
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    return float(np.abs(logits - expected).max())


def write_record(path: Path, record: dict) -> None:
    record["versions"] = {
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
    }
    record["data"] = {
        "dataset": "sklearn.datasets.load_digits",
        "features": f"pixels / {PIXEL_SCALE:g}, float32, shape [N, 64]",
        "split": f"train_test_split(test_size={TEST_FRACTION}, random_state={SEED}, stratify=labels)",
    }
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
