"""Outputs of a model converted with a calibration's choices, run in
onnxruntime: what the user will run, int8 activations and all, for budget
checks the search's float-activation simulation cannot make."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from onnxbit.calibration.result import CalibrationResult


def converted_outputs(model, result: "CalibrationResult", feeds: Sequence[dict[str, np.ndarray]]
                      ) -> list[list[np.ndarray]]:
    """model converted with result's config (through a calibration file, so
    error-compensated layers take their codes as `quantize --calibration`
    would), then run on every feed."""
    from onnxbit import runtime
    from onnxbit.calibration.result import load_calibration
    from onnxbit.convert import convert

    with tempfile.TemporaryDirectory(prefix="onnxbit-calibration-") as folder:
        path = Path(folder) / "calibration.json"
        result.write_json(path)
        converted = convert(model, config=load_calibration(path), progress=False, measure_error=False).model
    session = runtime.InferenceSession(converted)
    return [session.run(None, feed) for feed in feeds]
