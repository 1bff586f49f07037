"""onnxbit: deploy 1.58-bit (BitNet) and other low-bit models with onnxruntime."""

from onnxbit.native import available_isas, isa, library_path

__version__ = "0.1.0"

__all__ = ["available_isas", "isa", "library_path", "__version__"]
