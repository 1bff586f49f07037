"""Accuracy budgets: how close the quantized model's outputs must stay to the
float model's, measured over samples.

  cosine>=0.99   worst per-sample cosine similarity of the flattened outputs
  max_rel<=0.01  max |quantized - float| / max |float| over all outputs
  top1>=0.99     share of samples whose last-axis argmax agrees (class scores)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from onnxbit.errors import ConfigError

METRICS = {"cosine": ">=", "max_rel": "<=", "top1": ">="}


@dataclass(frozen=True)
class Budget:
    metric: str
    bound: float

    def __str__(self) -> str:
        return f"{self.metric}{METRICS[self.metric]}{self.bound:g}"

    def measure(self, reference: Sequence[list[np.ndarray]], candidate: Sequence[list[np.ndarray]]) -> float:
        """The metric over samples; each item is the list of a sample's outputs."""
        if self.metric == "cosine":
            return min(_cosine(r, c) for r, c in zip(reference, candidate))
        if self.metric == "max_rel":
            top = max(max(float(np.abs(o).max(initial=0.0)) for o in r) for r in reference) or 1e-30
            return max(max(float(np.abs(o - p).max(initial=0.0)) for o, p in zip(r, c))
                       for r, c in zip(reference, candidate)) / top
        agree = [np.array_equal(np.argmax(r[0], axis=-1), np.argmax(c[0], axis=-1)) for r, c in zip(reference, candidate)]
        return float(np.mean(agree))

    def met(self, value: float) -> bool:
        return value >= self.bound if METRICS[self.metric] == ">=" else value <= self.bound

    def shortfall(self, value: float) -> float:
        """How far from perfect a value is (0 = perfect): the error a layer adds."""
        return value if self.metric == "max_rel" else 1.0 - value


def parse_budget(text: str | Budget) -> Budget:
    if isinstance(text, Budget):
        return text
    match = re.fullmatch(r"\s*(\w+)\s*(>=|<=)\s*([0-9.eE+-]+)\s*", str(text))
    if not match or match.group(1) not in METRICS:
        raise ConfigError(f"budget {text!r} is not one of " + ", ".join(f"{m}{op}NUMBER" for m, op in METRICS.items()))
    metric, op, number = match.groups()
    if op != METRICS[metric]:
        raise ConfigError(f"budget {text!r}: {metric} takes {METRICS[metric]}")
    try:
        bound = float(number)
    except ValueError:
        raise ConfigError(f"budget {text!r}: {number!r} is not a number") from None
    return Budget(metric, bound)


def _cosine(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    a = np.concatenate([np.asarray(o, np.float64).ravel() for o in reference])
    b = np.concatenate([np.asarray(o, np.float64).ravel() for o in candidate])
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else float(np.array_equal(a, b))
