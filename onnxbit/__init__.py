"""onnxbit: deploy 1.58-bit (BitNet) and other low-bit models with onnxruntime."""

from onnxbit.native import available_isas, isa, library_path
from onnxbit.runtime import InferenceSession, register

__version__ = "0.1.0"

__all__ = ["InferenceSession", "quantize", "available_isas", "isa", "library_path", "register", "__version__"]


def __getattr__(name: str):
    # The converter pulls in onnx-graphsurgeon and the passes; load it on first use
    # so `import onnxbit` stays cheap for code that only runs converted models.
    if name == "quantize":
        from onnxbit.convert import quantize

        return quantize
    raise AttributeError(f"module 'onnxbit' has no attribute {name!r}")
