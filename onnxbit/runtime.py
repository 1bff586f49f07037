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


LIBRARY_DOMAIN = "com.onnxbit"
LIBRARY_DOMAIN_VERSION = 1


def check_domain_version(model: onnx.ModelProto) -> None:
    """Refuse a model that imports com.onnxbit at a version this library does
    not implement: onnxruntime registers a custom domain for every version
    and would run our version-1 kernels for it (custom-op ABI limitation)."""
    for imp in model.opset_import:
        if imp.domain == LIBRARY_DOMAIN and imp.version != LIBRARY_DOMAIN_VERSION:
            from onnxbit.errors import ModelError

            raise ModelError(f"the model imports {LIBRARY_DOMAIN} version {imp.version}; this onnxbit library "
                             f"implements version {LIBRARY_DOMAIN_VERSION} only")


def _parsed(argument: str | bytes) -> onnx.ModelProto:
    if isinstance(argument, bytes):
        return onnx.load_model_from_string(argument)
    return onnx.load_model(argument, load_external_data=False)


def InferenceSession(path_or_model: Any, sess_options=None,
                     providers: Sequence[Any] | None = None, **kwargs: Any):
    """An ``onnxruntime.InferenceSession`` with the onnxbit custom ops registered.

    ``path_or_model`` is a file path, serialized model bytes or an
    ``onnx.ModelProto``. ``sess_options`` are registered in place (create a
    fresh ``SessionOptions`` per call if you reuse them elsewhere);
    ``providers`` defaults to the CPU execution provider, which is where the
    custom ops run. A model importing com.onnxbit at another version than 1
    is refused (ModelError).
    """
    import onnxruntime as ort

    argument = _model_argument(path_or_model)
    check_domain_version(path_or_model if isinstance(path_or_model, onnx.ModelProto) else _parsed(argument))
    options = register(sess_options)
    return ort.InferenceSession(argument, sess_options=options,
                                providers=list(providers) if providers else
                                ["CPUExecutionProvider"], **kwargs)
