"""The "rans" storage format in pure Python (layout: csrc/include/onnxbit/rans.h):
base3 rows entropy-coded by byte-wise rANS, one static 14-bit frequency table
over the 243 base3 byte values, independent streams per block of rows. Slow;
the reference the C codec (csrc/codec/codec_rans.c) must match byte for byte."""

from __future__ import annotations

import struct

import numpy as np

VERSION = 1
SYMBOLS = 243
PROB_BITS = 14
TOTAL = 1 << PROB_BITS
LOW = 1 << 23
HEADER = 1 + 2 + 2 * SYMBOLS
STATES = 4  # symbol i of a block goes through state i % STATES
DEFAULT_BLOCK_ROWS = 64


def normalise(counts: list[int]) -> list[int]:
    """Counts -> frequencies summing to TOTAL, every present symbol >= 1
    (the integer rule of codec_rans.c: floor scaling, then the largest
    frequency, lowest symbol first, absorbs the difference)."""
    total = sum(counts)
    freq = [(c * TOTAL // total) if c else 0 for c in counts]
    freq = [1 if c and f == 0 else f for c, f in zip(counts, freq)]
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


def encode(base3_rows: np.ndarray, block_rows: int = DEFAULT_BLOCK_ROWS) -> bytes:
    """uint8 base3 rows [N, row_bytes] -> the rans stream."""
    rows = np.asarray(base3_rows, dtype=np.uint8)
    n, row_bytes = rows.shape
    if not 1 <= block_rows <= 0xFFFF:
        raise ValueError(f"block_rows={block_rows} must be in [1, 65535]")
    symbols = rows.reshape(-1).tolist()
    if any(s >= SYMBOLS for s in symbols):
        raise ValueError("not base3 bytes (< 243)")
    counts = [0] * SYMBOLS
    for s in symbols:
        counts[s] += 1
    freq = normalise(counts) if symbols else [0] * SYMBOLS
    cum = [sum(freq[:s]) for s in range(SYMBOLS)]
    blocks = -(-n // block_rows)
    payload = bytearray()
    ends = []
    for b in range(blocks):
        block = symbols[b * block_rows * row_bytes:min((b + 1) * block_rows, n) * row_bytes]
        backwards = bytearray()
        states = [LOW] * STATES
        for i in range(len(block) - 1, -1, -1):
            s, j = block[i], i % STATES
            f = freq[s]
            x_max = ((LOW >> PROB_BITS) << 8) * f
            while states[j] >= x_max:
                backwards.append(states[j] & 0xFF)
                states[j] >>= 8
            states[j] = ((states[j] // f) << PROB_BITS) + (states[j] % f) + cum[s]
        payload += struct.pack(f"<{STATES}I", *states) + bytes(reversed(backwards))
        ends.append(len(payload))
    header = struct.pack("<BH", VERSION, block_rows) + struct.pack(f"<{SYMBOLS}H", *freq)
    return header + struct.pack(f"<{blocks}I", *ends) + bytes(payload)


def decode(stream: bytes, n: int, row_bytes: int) -> np.ndarray:
    """The rans stream -> uint8 base3 rows [N, row_bytes]; ValueError for any malformed or corrupt stream."""
    data = bytes(stream)
    if len(data) < HEADER:
        raise ValueError(f"rans stream of {len(data)} bytes is shorter than its {HEADER}-byte header")
    version, block_rows = struct.unpack_from("<BH", data)
    if version != VERSION:
        raise ValueError(f"rans stream version {version} is not {VERSION}")
    if block_rows == 0:
        raise ValueError("rans stream has block_rows 0")
    freq = list(struct.unpack_from(f"<{SYMBOLS}H", data, 3))
    cum = [sum(freq[:s]) for s in range(SYMBOLS)]
    if n * row_bytes and sum(freq) != TOTAL:
        raise ValueError(f"rans frequencies sum to {sum(freq)}, not {TOTAL}")
    blocks = -(-n // block_rows)
    if (len(data) - HEADER) // 4 < blocks:
        raise ValueError(f"rans stream of {len(data)} bytes cannot hold the offsets of {blocks} blocks")
    ends = struct.unpack_from(f"<{blocks}I", data, HEADER)
    payload = data[HEADER + 4 * blocks:]
    slot_symbol = [s for s in range(SYMBOLS) for _ in range(freq[s])]
    out = bytearray()
    start = 0
    for b, end in enumerate(ends):
        if end < start + 4 * STATES or end > len(payload):
            raise ValueError(f"rans block {b} ends at {end}, outside [{start + 4 * STATES}, {len(payload)}]")
        states = list(struct.unpack_from(f"<{STATES}I", payload, start))
        for j, x in enumerate(states):
            if not LOW <= x < LOW << 8:
                raise ValueError(f"rans block {b}: state {j} starts at {x}, outside [2^23, 2^31)")
        p = start + 4 * STATES
        first = b * block_rows * row_bytes
        for i in range(first, min((b + 1) * block_rows, n) * row_bytes):
            j = (i - first) % STATES
            x = states[j]
            slot = x & (TOTAL - 1)
            s = slot_symbol[slot]
            out.append(s)
            x = freq[s] * (x >> PROB_BITS) + slot - cum[s]
            while x < LOW:
                if p == end:
                    raise ValueError(f"rans block {b} runs out of bytes at row {i // row_bytes}")
                x = (x << 8) | payload[p]
                p += 1
            states[j] = x
        if p != end or any(x != LOW for x in states):
            raise ValueError(f"rans block {b} is corrupt: it does not end in the initial states with its bytes used up")
        start = end
    if start != len(payload):
        raise ValueError(f"rans stream has {len(payload) - start} bytes after its last block")
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(n, row_bytes)
