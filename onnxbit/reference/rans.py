"""The "rans" storage format in pure Python (layout: csrc/include/onnxbit/rans.h):
base3 rows entropy-coded by byte-wise rANS with 16-bit frequencies derived
from the counts of -1 and +1 codes (the byte's probability is the product of
its digits'), independent streams per block of rows. Slow; the reference the
C codec (csrc/codec/codec_rans.c) must match byte for byte."""

from __future__ import annotations

import struct

import numpy as np

VERSION = 2
SYMBOLS = 243
DIGITS = 5
PROB_BITS = 16
TOTAL = 1 << PROB_BITS
FRACTION_BITS = 31
LOW = 1 << 23
STATES = 4  # symbol i of a block goes through state i % STATES
AUTO_BLOCK_BYTES = 1 << 16
VARINT_MAX_BYTES = 9


def block_rows_for(block_rows: int, row_bytes: int) -> int:
    """block_rows 0 -> blocks of about AUTO_BLOCK_BYTES base3 bytes."""
    return block_rows or -(-AUTO_BLOCK_BYTES // max(row_bytes, 1))


def normalise(weights: list[int]) -> list[int]:
    """Weights -> frequencies summing to TOTAL, every nonzero weight's >= 1
    (floor scaling, then the largest frequency, lowest symbol first, absorbs
    the difference)."""
    total = sum(weights)
    freq = [(w * TOTAL // total) if w else 0 for w in weights]
    freq = [1 if w and f == 0 else f for w, f in zip(weights, freq)]
    current = sum(freq)
    while current != TOTAL:
        largest = max(range(SYMBOLS), key=lambda s: (freq[s], -s))
        if current < TOTAL:
            freq[largest] += TOTAL - current
            current = TOTAL
        else:
            take = min(freq[largest] - 1, current - TOTAL)
            freq[largest] -= take
            current -= take
    return freq


def _table(fraction: list[int], digits: int) -> list[int]:
    weights = []
    for s in range(SYMBOLS):
        v, rest = 1 << FRACTION_BITS, s
        for j in range(DIGITS):
            d, rest = rest % 3, rest // 3
            if j >= digits:
                v = v if d == 0 else 0
            elif v:
                v = max(1, (v * fraction[d]) >> FRACTION_BITS) if fraction[d] else 0
        weights.append(v)
    return normalise(weights)


def tables(minus: int, plus: int, codes: int, tail_digits: int) -> tuple[list[int], list[int]]:
    """The frequencies of a row's full bytes and of its last byte."""
    counts = [minus, codes - minus - plus, plus]
    fraction = [max(1, ((c << FRACTION_BITS) + codes // 2) // codes) if c else 0 for c in counts]
    return _table(fraction, DIGITS), _table(fraction, tail_digits or DIGITS)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    value = 0
    for i in range(VARINT_MAX_BYTES):
        if pos >= len(data):
            raise ValueError(f"rans stream: {what} is truncated")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise ValueError(f"rans stream: {what} is longer than 9 bytes")


def _cumulative(freq: list[int]) -> list[int]:
    cum, c = [], 0
    for f in freq:
        cum.append(c)
        c += f
    return cum


def encode(base3_rows: np.ndarray, k: int, block_rows: int = 0) -> bytes:
    """uint8 base3 rows [N, row_bytes] of K codes -> the rans stream."""
    rows = np.asarray(base3_rows, dtype=np.uint8)
    n, row_bytes = rows.shape
    if n == 0 or k == 0 or row_bytes != -(-k // DIGITS):
        raise ValueError("rans needs N, K > 0 and base3 rows of ceil(K / 5) bytes")
    tail_digits = k % DIGITS
    block_rows = block_rows_for(block_rows, row_bytes)
    codes = rows.reshape(-1).tolist()
    minus = plus = 0
    for i, byte in enumerate(codes):
        digits = tail_digits if tail_digits and i % row_bytes == row_bytes - 1 else DIGITS
        if byte >= SYMBOLS:
            raise ValueError("not base3 bytes (< 243)")
        for j in range(DIGITS):
            d = byte // 3 ** j % 3
            if j >= digits and d:
                raise ValueError("a padding digit is not 0")
            if j < digits:
                minus += d == 0
                plus += d == 2
    main, tail = tables(minus, plus, n * k, tail_digits)
    main_cum, tail_cum = _cumulative(main), _cumulative(tail)
    blocks = -(-n // block_rows)
    payload = bytearray()
    lengths = bytearray()
    for b in range(blocks):
        block = codes[b * block_rows * row_bytes:min((b + 1) * block_rows, n) * row_bytes]
        backwards = bytearray()
        states = [LOW] * STATES
        for i in range(len(block) - 1, -1, -1):
            s, j = block[i], i % STATES
            last = i % row_bytes == row_bytes - 1
            f, c = (tail[s], tail_cum[s]) if last else (main[s], main_cum[s])
            x_max = ((LOW >> PROB_BITS) << 8) * f
            while states[j] >= x_max:
                backwards.append(states[j] & 0xFF)
                states[j] >>= 8
            states[j] = ((states[j] // f) << PROB_BITS) + (states[j] % f) + c
        chunk = struct.pack(f"<{STATES}I", *states) + bytes(reversed(backwards))
        payload += chunk
        lengths += _varint(len(chunk))
    header = bytes([VERSION, tail_digits]) + _varint(block_rows) + _varint(minus) + _varint(plus)
    return header + bytes(lengths) + bytes(payload)


def decode(stream: bytes, n: int, row_bytes: int) -> np.ndarray:
    """The rans stream -> uint8 base3 rows [N, row_bytes]; ValueError for any malformed or corrupt stream."""
    data = bytes(stream)
    if n <= 0 or row_bytes <= 0:
        raise ValueError("rans stream: N and row bytes must be > 0")
    if len(data) < 2:
        raise ValueError(f"rans stream of {len(data)} bytes is shorter than its 2-byte header")
    if data[0] != VERSION:
        raise ValueError(f"rans stream version {data[0]} is not {VERSION}")
    tail_digits = data[1]
    if tail_digits >= DIGITS:
        raise ValueError(f"rans stream says {tail_digits} codes in a row's last byte, not 0..4")
    codes = n * (DIGITS * (row_bytes - 1) + (tail_digits or DIGITS))
    block_rows, pos = _read_varint(data, 2, "block_rows")
    minus, pos = _read_varint(data, pos, "the count of -1 codes")
    plus, pos = _read_varint(data, pos, "the count of +1 codes")
    if block_rows == 0:
        raise ValueError("rans stream has block_rows 0")
    if minus > codes or plus > codes - minus:
        raise ValueError("rans stream counts more codes than it holds")
    blocks = -(-n // block_rows)
    lengths = []
    for b in range(blocks):
        length, pos = _read_varint(data, pos, f"the length of block {b}")
        if not 4 * STATES <= length <= len(data):
            raise ValueError(f"rans block {b} has {length} bytes")
        lengths.append(length)
    if sum(lengths) > len(data) - pos:
        raise ValueError(f"rans stream is truncated: its blocks need {sum(lengths)} bytes, {len(data) - pos} are left")
    if sum(lengths) < len(data) - pos:
        raise ValueError(f"rans stream has {len(data) - pos - sum(lengths)} bytes after its last block")
    main, tail = tables(minus, plus, codes, tail_digits)
    main_cum, tail_cum = _cumulative(main), _cumulative(tail)
    main_slot = [s for s in range(SYMBOLS) for _ in range(main[s])]
    tail_slot = [s for s in range(SYMBOLS) for _ in range(tail[s])]
    out = bytearray()
    for b, length in enumerate(lengths):
        end = pos + length
        states = list(struct.unpack_from(f"<{STATES}I", data, pos))
        for j, x in enumerate(states):
            if not LOW <= x < LOW << 8:
                raise ValueError(f"rans block {b}: state {j} starts at {x}, outside [2^23, 2^31)")
        p = pos + 4 * STATES
        symbols = (min((b + 1) * block_rows, n) - b * block_rows) * row_bytes
        for i in range(symbols):
            j = i % STATES
            last = i % row_bytes == row_bytes - 1
            freq, cum, slots = (tail, tail_cum, tail_slot) if last else (main, main_cum, main_slot)
            x = states[j]
            slot = x & (TOTAL - 1)
            s = slots[slot]
            out.append(s)
            x = freq[s] * (x >> PROB_BITS) + slot - cum[s]
            while x < LOW:
                if p == end:
                    raise ValueError(f"rans block {b} runs out of bytes at row {i // row_bytes}")
                x = (x << 8) | data[p]
                p += 1
            states[j] = x
        if p != end or any(x != LOW for x in states):
            raise ValueError(f"rans block {b} is corrupt: it does not end in the initial states with its bytes used up")
        pos = end
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(n, row_bytes)
