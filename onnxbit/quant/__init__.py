"""Weight quantizers: ternary (BitNet absmean and threshold methods), binary and
b-bit integer, per tensor, per output channel or per group along K."""

from onnxbit.quant.binary import quantize_binary
from onnxbit.quant.integer import quantize_int
from onnxbit.quant.result import QuantResult, QuantStats
from onnxbit.quant.ternary import bitnet_absmean, is_ternary, quantize_pack_absmean, quantize_ternary

__all__ = [
    "QuantResult",
    "QuantStats",
    "bitnet_absmean",
    "is_ternary",
    "quantize_binary",
    "quantize_int",
    "quantize_pack_absmean",
    "quantize_ternary",
]
