"""onnxruntime sessions that can run the com.onnxbit custom ops.

The custom ops live in the same shared library Python loads through cffi
(:mod:`onnxbit.native`), so a session registered here computes with exactly
the kernels (and the forced ISA, if any) the Python side sees.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import onnx

from onnxbit.native import library_path

__all__ = ["InferenceSession", "library_path", "register"]


# Session config entry marking options the library is registered on: onnxruntime
# refuses a second registration ("Domain already set in registry") and offers
# no way to ask which libraries options carry.
_REGISTERED_KEY = "onnxbit.custom_ops_library"


def _registered_library(options) -> str | None:
    try:
        return options.get_session_config_entry(_REGISTERED_KEY)
    except RuntimeError:  # no such entry
        return None


def register(session_options=None):
    """Register the onnxbit custom-op library on ``session_options``.

    Creates new options when none are given; returns the options either way.
    Registering the same options again does nothing.
    """
    import onnxruntime as ort

    options = session_options if session_options is not None else ort.SessionOptions()
    if _registered_library(options) is None:
        path = library_path()
        options.register_custom_ops_library(path)
        options.add_session_config_entry(_REGISTERED_KEY, path)
    return options


def _model_argument(path_or_model: Any) -> str | bytes:
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model.SerializeToString()
    if isinstance(path_or_model, (bytes, bytearray, memoryview)):
        return bytes(path_or_model)
    if isinstance(path_or_model, (str, os.PathLike)):
        return os.fspath(path_or_model)
    raise TypeError(
        "expected a model path, serialized model bytes or an onnx.ModelProto, "
        f"got {type(path_or_model).__name__}"
    )


def InferenceSession(path_or_model: Any, sess_options=None,
                     providers: Sequence[Any] | None = None, **kwargs: Any):
    """An ``onnxruntime.InferenceSession`` with the onnxbit custom ops registered.

    ``path_or_model`` is a file path, serialized model bytes or an
    ``onnx.ModelProto``. ``sess_options`` are registered in place (create a
    fresh ``SessionOptions`` per call if you reuse them elsewhere);
    ``providers`` defaults to the CPU execution provider, which is where the
    custom ops run.
    """
    import onnxruntime as ort

    options = register(sess_options)
    return ort.InferenceSession(_model_argument(path_or_model), sess_options=options,
                                providers=list(providers) if providers else
                                ["CPUExecutionProvider"], **kwargs)
