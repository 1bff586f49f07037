"""The com.onnxbit custom ops on the Python side: ONNX schemas (so onnx's checker
and shape inference accept them) and numpy reference implementations."""

from onnxbit.ops.schemas import DOMAIN, OPSET_VERSION, TERNARY_MATMUL, register_schemas

__all__ = ["DOMAIN", "OPSET_VERSION", "TERNARY_MATMUL", "register_schemas"]
