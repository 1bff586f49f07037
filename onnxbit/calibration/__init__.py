"""Calibration: run the model on sample data and choose each layer's
precision under an accuracy budget (onnxbit.calibration.search), from data
given as .npz files or a CalibrationDataReader (onnxbit.calibration.data)."""

from onnxbit.calibration.budget import Budget, parse_budget
from onnxbit.calibration.data import CalibrationData, load_calibration_data
from onnxbit.calibration.search import CalibrationResult, calibrate

__all__ = ["Budget", "CalibrationData", "CalibrationResult", "calibrate", "load_calibration_data", "parse_budget"]
