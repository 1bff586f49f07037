"""CRC32C (csrc/integrity/): the published test vectors, and every ISA path
bit-exact with the pure-Python definition for any length, alignment and chain."""

import numpy as np
import pytest

from onnxbit import checksum
from onnxbit.reference import crc32c as reference

# RFC 3720 (iSCSI) appendix B.4, and the "check" value of the CRC catalogue.
VECTORS = [
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b"", 0),
]


@pytest.mark.parametrize("data, expected", VECTORS)
def test_published_vectors(isa, data, expected):
    assert checksum.crc32c(data) == expected
    assert reference.crc32c(data) == expected


def test_every_length_and_offset_matches_the_definition(isa, rng):
    data = rng.integers(0, 256, 300, dtype=np.uint8)
    for start in range(0, 9):
        for length in list(range(0, 40)) + [63, 64, 65, 127, 200, 291]:
            piece = data[start:start + length]
            assert checksum.crc32c(piece) == reference.crc32c(piece.tobytes()), (start, length)


def test_chained_calls_equal_one_call_over_the_concatenation(isa, rng):
    a = rng.integers(0, 256, 77, dtype=np.uint8)
    b = rng.standard_normal(13).astype(np.float32)
    whole = a.tobytes() + b.tobytes()
    assert checksum.crc32c(a, b) == reference.crc32c(whole) == checksum.crc32c(whole)
    assert reference.crc32c(b.tobytes(), reference.crc32c(a.tobytes())) == reference.crc32c(whole)


def test_big_endian_arrays_are_hashed_as_stored_little_endian():
    values = np.arange(5, dtype=np.float32)
    assert checksum.crc32c(values.astype(">f4")) == checksum.crc32c(values)


def test_packed_weight_checksum_is_b_then_scales(rng):
    packed = rng.integers(0, 243, (4, 7), dtype=np.uint8)
    scales = rng.uniform(0.5, 2, 4).astype(np.float32)
    expected = reference.crc32c(packed.tobytes() + scales.tobytes())
    assert checksum.packed_weight_crc32c(packed, scales) == expected
    assert reference.packed_weight_crc32c(packed, scales) == expected
