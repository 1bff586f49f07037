"""The "sparse" stream format: C decoder against the numpy reference on
random tensors at several sparsities, and corrupt or truncated streams
rejected by both with a clear error, never a crash. (Op and auto tests for
every stream format: tests/test_zero_runs.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from onnxbit.bench.formats import synthetic_codes
from onnxbit import codecs, sparse
from onnxbit.reference import sparse as reference


@pytest.mark.parametrize("zeros", [0.10, 0.50, 0.90, 0.99, 1.0])
@pytest.mark.parametrize("n, k", [(1, 1), (3, 7), (17, 130), (64, 1000)])
def test_round_trip_matches_the_reference(rng, zeros, n, k):
    codes = synthetic_codes(n, k, zeros, rng)
    stream = sparse.pack_sparse(codes)
    rows = sparse.decode_base3(stream, n, k)
    np.testing.assert_array_equal(rows, codecs.pack_ternary(codes, "base3"))
    np.testing.assert_array_equal(rows, reference.decode(stream.tobytes(), n, k))


def test_layout_of_a_small_tensor():
    codes = np.array([[0, 0, 1, 0, -1], [0, 0, 0, 0, 0], [-1, 0, 0, 0, 0]], np.int8)
    # version, 3 nonzeros, signs 0b110 (nonzeros 1 and 2 negative), row 0: 2 at 2 then gap 1,
    # row 1: none, row 2: 1 at 0.
    assert sparse.pack_sparse(codes).tobytes() == bytes([1, 3, 0b110, 2, 2, 1, 0, 1, 0])


def _both_reject(data: bytes, n: int, k: int, message: str) -> None:
    with pytest.raises(sparse.CorruptStreamError, match=message):
        sparse.decode_base3(np.frombuffer(data, np.uint8), n, k)
    with pytest.raises(ValueError):
        reference.decode(data, n, k)


def test_corrupt_and_truncated_streams_are_errors(rng):
    codes = synthetic_codes(8, 50, 0.9, rng)
    stream = sparse.pack_sparse(codes).tobytes()
    for cut in range(len(stream)):
        _both_reject(stream[:cut], 8, 50, "empty|truncated|hold")
    _both_reject(stream + b"\0", 8, 50, "1 bytes after its last row")
    _both_reject(b"\x02" + stream[1:], 8, 50, "version 2")
    _both_reject(bytes([1, 1, 0b10, 1, 0, 0]), 2, 2, "sign bits set past its 1 nonzeros")
    _both_reject(bytes([1, 1, 0, 1, 2, 0]), 2, 2, "position 0 of row 0 is past K=2")
    _both_reject(bytes([1, 1, 0, 3, 0, 0, 0, 0]), 2, 2, "row 0 claims 3 nonzeros")
    _both_reject(bytes([1, 2, 0, 1, 0, 0]), 2, 2, "rows hold 1 nonzeros, its header says 2")
    _both_reject(bytes([1, 5]), 2, 2, "claims 5 nonzeros in 4 codes")


def test_every_byte_flip_decodes_to_valid_rows_or_is_rejected(rng):
    codes = synthetic_codes(6, 40, 0.8, rng)
    stream = sparse.pack_sparse(codes).tobytes()
    for position in range(len(stream)):
        for xor in (0x01, 0x80, 0xFF):
            data = bytearray(stream)
            data[position] ^= xor
            try:
                rows = sparse.decode_base3(np.frombuffer(bytes(data), np.uint8), 6, 40)
            except sparse.CorruptStreamError:
                with pytest.raises(ValueError):
                    reference.decode(bytes(data), 6, 40)
                continue
            np.testing.assert_array_equal(rows, reference.decode(bytes(data), 6, 40))
