"""The packed ternary storage formats: the one list of them in Python.

Each format is a name (the `format` attribute of TernaryMatMul and the
`format` setting of a config), the id the C library knows it by (OBX_FMT_*
in csrc/include/onnxbit/formats.h, checked against the library by
tests/test_formats.py), and its layout: `codes_per_byte` base-`radix`
digits d = w + 1 a byte, element i at digit i % codes_per_byte of byte
i // codes_per_byte, least significant first. The README's "Packed ternary
formats" section is the file-format contract.

Adding a format is one line here and one in formats.h, plus its codec.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StorageFormat:
    name: str
    id: int  # OBX_FMT_* in csrc/include/onnxbit/formats.h
    codes_per_byte: int
    radix: int  # digit base: 4 for two-bit fields (code 3 invalid), 3 for trits

    @property
    def bits_per_weight(self) -> float:
        return 8.0 / self.codes_per_byte

    def row_bytes(self, k: int) -> int:
        """Bytes of one packed row of k weights (rows start on a byte boundary)."""
        return -(-k // self.codes_per_byte)


FORMATS: dict[str, StorageFormat] = {f.name: f for f in (
    StorageFormat("2bit", 0, codes_per_byte=4, radix=4),
    StorageFormat("base3", 1, codes_per_byte=5, radix=3),
)}
NAMES: tuple[str, ...] = tuple(FORMATS)
# The codec functions' default layout: plain 2-bit codes, what stock ops
# (MatMulNBits, INT2 DequantizeLinear) store too.
DEFAULT = "2bit"
# What TernaryMatMul conversions store unless a config says otherwise: 20 %
# smaller than 2bit, and free at run time, since sessions repack every format
# into the same compute layout when they are created (measured: base3 also
# creates sessions faster, 17 ms vs 35 ms for a 4096 x 4096 weight, having
# fewer bytes to parse; inference time is the same).
STORAGE_DEFAULT = "base3"

# Stream formats (csrc/include/onnxbit/streams.h; codecs in onnxbit.streams):
# a variable-length encoding of a whole tensor that sessions decode to base3
# rows when they are created. Not row formats: the codecs above do not take
# them. rans entropy-codes base3 bytes (skewed tensors); zeroruns stores the
# zero-run length before each nonzero with its sign, sparse each row's
# delta-coded positions and a sign bit a nonzero (both mostly-zero tensors).
RANS = "rans"
ZERO_RUNS = "zeroruns"
SPARSE = "sparse"
STREAMS: tuple[str, ...] = (RANS, ZERO_RUNS, SPARSE)  # in the library's id order (OBX_STREAM_*)
STREAM_ROW_FORMAT = "base3"  # the rows every stream decodes to
RANS_ROW_FORMAT = STREAM_ROW_FORMAT  # the rows a rans stream codes
# Per tensor, the smallest of base3 and every stream by total bytes (scales are the same).
AUTO = "auto"
STORAGE_CHOICES: tuple[str, ...] = NAMES + STREAMS + (AUTO,)
OP_FORMATS: tuple[str, ...] = NAMES + STREAMS  # what a TernaryMatMul / TernaryConv format attribute may say


def get(name: str) -> StorageFormat:
    """The format called `name`; ValueError naming the known ones otherwise."""
    fmt = FORMATS.get(name) if isinstance(name, str) else None
    if fmt is None:
        raise ValueError(f"unknown packed format {name!r}; expected one of {NAMES}")
    return fmt
