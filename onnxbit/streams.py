"""The stream storage formats (onnxbit.formats.STREAMS) behind one interface:
encode base3 rows to a stream, decode a stream back (the library's decoders,
the ones sessions run), and the per-tensor choice of format "auto"."""

from __future__ import annotations

import numpy as np

from onnxbit import codecs, formats, rans, sparse, zero_runs

ROW_FORMAT = formats.STREAM_ROW_FORMAT
# What any stream decoder raises for a malformed, truncated or corrupt stream.
CORRUPT_STREAM_ERRORS = (rans.CorruptStreamError, zero_runs.CorruptStreamError, sparse.CorruptStreamError)


def encode(name: str, rows: np.ndarray, k: int) -> np.ndarray:
    """base3 rows [N, row_bytes] of K codes -> the 1-D uint8 stream of format `name`."""
    if name == formats.RANS:
        return rans.encode_base3(rows, k)
    if name == formats.ZERO_RUNS:
        return zero_runs.encode_base3(rows, k)
    if name == formats.SPARSE:
        return sparse.encode_base3(rows, k)
    raise ValueError(f"unknown stream format {name!r}; expected one of {formats.STREAMS}")


def decode_base3(name: str, stream, n: int, k: int) -> np.ndarray:
    """The stream -> base3 rows [N, row_bytes]; one of CORRUPT_STREAM_ERRORS for bad data."""
    if name == formats.RANS:
        return rans.decode_base3(stream, n, formats.get(ROW_FORMAT).row_bytes(k))
    if name == formats.ZERO_RUNS:
        return zero_runs.decode_base3(stream, n, k)
    if name == formats.SPARSE:
        return sparse.decode_base3(stream, n, k)
    raise ValueError(f"unknown stream format {name!r}; expected one of {formats.STREAMS}")


def pack(name: str, codes_nk: np.ndarray) -> np.ndarray:
    """int8 codes [N, K] -> the stream."""
    codes_nk = np.atleast_2d(codes_nk)
    return encode(name, codecs.pack_ternary(codes_nk, ROW_FORMAT), codes_nk.shape[1])


def unpack(name: str, stream, k: int, n: int) -> np.ndarray:
    """The stream -> int8 codes [N, K]."""
    return codecs.unpack_ternary(decode_base3(name, stream, n, k), k, ROW_FORMAT)


def stored(setting: str, rows: np.ndarray, k: int) -> tuple[np.ndarray, str]:
    """base3 rows as a config's `format` setting stores them, and the op's
    format attribute: a stream format encodes them; "auto" keeps the smallest
    of base3 and every stream by bytes (ties: base3, then formats.STREAMS order)."""
    if setting in formats.STREAMS:
        return encode(setting, rows, k), setting
    if setting != formats.AUTO:
        return rows, setting
    best, best_format = rows, ROW_FORMAT
    for name in formats.STREAMS:
        stream = encode(name, rows, k)
        if stream.nbytes < best.nbytes:
            best, best_format = stream, name
    return best, best_format
