/* The "rans" storage format (rans.h): byte-wise rANS with four interleaved 32-bit states,
 * static 14-bit frequencies over the 243 base3 byte values. Scalar only: it
 * runs once per tensor, at conversion and at session creation. */
#include "onnxbit/rans.h"

#include <stdlib.h>
#include <string.h>

#include "obx_common.h"

enum {
    RANS_VERSION = 1,
    RANS_SYMBOLS = 243,
    RANS_PROB_BITS = 14,
    RANS_TOTAL = 1 << RANS_PROB_BITS,
    RANS_HEADER = 1 + 2 + 2 * RANS_SYMBOLS, /* before the block offsets */
    /* Symbol i of a block goes through state i % RANS_STATES: independent
     * dependency chains the CPU overlaps when decoding. */
    RANS_STATES = 4,
};
#define RANS_LOW (1u << 23) /* the state stays in [RANS_LOW, 256 * RANS_LOW) */

static size_t block_count(size_t n, size_t block_rows) { return n / block_rows + (n % block_rows != 0); }

OBX_API size_t obx_rans_max_bytes(size_t n, size_t row_bytes, size_t block_rows)
{
    if (block_rows == 0) return 0;
    /* A symbol costs at most 14 bits (frequency >= 1): two bytes is an upper bound. */
    size_t blocks = block_count(n, block_rows);
    return RANS_HEADER + 4 * blocks + blocks * 4 * RANS_STATES + 2 * n * row_bytes;
}

/* counts -> frequencies summing to RANS_TOTAL, every present symbol >= 1.
 * Integer-only and deterministic: onnxbit/reference/rans.py does the same. */
static void normalise(const uint64_t *counts, uint64_t total, uint32_t *freq)
{
    int64_t sum = 0;
    for (int s = 0; s < RANS_SYMBOLS; s++) {
        freq[s] = counts[s] ? (uint32_t)(counts[s] * RANS_TOTAL / total) : 0;
        if (counts[s] && freq[s] == 0) freq[s] = 1;
        sum += freq[s];
    }
    while (sum != RANS_TOTAL) {
        int largest = 0;
        for (int s = 1; s < RANS_SYMBOLS; s++)
            if (freq[s] > freq[largest]) largest = s;
        if (sum < RANS_TOTAL) {
            freq[largest] += (uint32_t)(RANS_TOTAL - sum);
            sum = RANS_TOTAL;
        } else {
            uint32_t take = (uint32_t)OBX_MIN((int64_t)freq[largest] - 1, sum - RANS_TOTAL);
            freq[largest] -= take;
            sum -= take;
        }
    }
}

static void put_u16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

OBX_API size_t obx_rans_encode_base3(const uint8_t *base3, size_t n, size_t row_bytes,
                                     size_t block_rows, uint8_t *out, size_t out_cap, char *err,
                                     size_t err_len)
{
    if (block_rows == 0 || block_rows > 0xFFFF) {
        obx_set_error(err, err_len, "block_rows=%zu must be in [1, 65535]", block_rows);
        return 0;
    }
    if (out_cap < obx_rans_max_bytes(n, row_bytes, block_rows)) {
        obx_set_error(err, err_len, "output buffer of %zu bytes is smaller than obx_rans_max_bytes",
                      out_cap);
        return 0;
    }
    size_t symbols = n * row_bytes;
    uint64_t counts[RANS_SYMBOLS] = {0};
    for (size_t i = 0; i < symbols; i++) {
        if (base3[i] >= RANS_SYMBOLS) {
            obx_set_error(err, err_len, "byte %zu is %u, not a base3 byte (< 243)", i, base3[i]);
            return 0;
        }
        counts[base3[i]]++;
    }
    uint32_t freq[RANS_SYMBOLS] = {0}, cum[RANS_SYMBOLS];
    if (symbols) normalise(counts, symbols, freq);
    for (int s = 0, c = 0; s < RANS_SYMBOLS; c += (int)freq[s], s++) cum[s] = (uint32_t)c;

    out[0] = RANS_VERSION;
    put_u16(out + 1, (uint32_t)block_rows);
    for (int s = 0; s < RANS_SYMBOLS; s++) put_u16(out + 3 + 2 * s, freq[s]);
    size_t blocks = block_count(n, block_rows);
    uint8_t *ends = out + RANS_HEADER;
    uint8_t *payload = ends + 4 * blocks;
    size_t written = 0;
    /* Each block is encoded backwards into the space after the payload so far
     * (its worst case fits), then reversed in place into decoding order. */
    for (size_t b = 0; b < blocks; b++) {
        size_t first = b * block_rows * row_bytes;
        size_t last = OBX_MIN((b + 1) * block_rows, n) * row_bytes;
        uint8_t *scratch = payload + written;
        size_t used = 0;
        uint32_t states[RANS_STATES];
        for (int j = 0; j < RANS_STATES; j++) states[j] = RANS_LOW;
        for (size_t i = last; i-- > first;) {
            uint32_t *x = &states[(i - first) % RANS_STATES];
            uint32_t f = freq[base3[i]];
            uint32_t x_max = ((RANS_LOW >> RANS_PROB_BITS) << 8) * f;
            while (*x >= x_max) {
                scratch[used++] = (uint8_t)*x;
                *x >>= 8;
            }
            *x = ((*x / f) << RANS_PROB_BITS) + (*x % f) + cum[base3[i]];
        }
        /* The states go last backwards, so they come first forwards: state 0
         * first, each little-endian. */
        for (int j = RANS_STATES - 1; j >= 0; j--)
            for (int i = 3; i >= 0; i--) scratch[used++] = (uint8_t)(states[j] >> (8 * i));
        for (size_t i = 0, j = used - 1; i < j; i++, j--) {
            uint8_t t = scratch[i];
            scratch[i] = scratch[j];
            scratch[j] = t;
        }
        /* Reversal put the state's bytes in little-endian order. */
        written += used;
        put_u32(ends + 4 * b, (uint32_t)written);
    }
    return (size_t)(payload - out) + written;
}

OBX_API int obx_rans_decode_base3(const uint8_t *stream, size_t len, size_t n, size_t row_bytes,
                                  uint8_t *base3_out, char *err, size_t err_len)
{
    if (len < RANS_HEADER) {
        obx_set_error(err, err_len, "rans stream of %zu bytes is shorter than its %d-byte header",
                      len, RANS_HEADER);
        return -1;
    }
    if (stream[0] != RANS_VERSION) {
        obx_set_error(err, err_len, "rans stream version %u is not %d", stream[0], RANS_VERSION);
        return -1;
    }
    size_t block_rows = get_u16(stream + 1);
    if (block_rows == 0) {
        obx_set_error(err, err_len, "rans stream has block_rows 0");
        return -1;
    }
    size_t symbols = n * row_bytes;
    uint32_t freq[RANS_SYMBOLS], cum[RANS_SYMBOLS];
    uint32_t total = 0;
    for (int s = 0; s < RANS_SYMBOLS; s++) {
        freq[s] = get_u16(stream + 3 + 2 * s);
        cum[s] = total;
        total += freq[s];
    }
    if (symbols != 0 && total != RANS_TOTAL) {
        obx_set_error(err, err_len, "rans frequencies sum to %u, not %d", total, RANS_TOTAL);
        return -1;
    }
    size_t blocks = block_count(n, block_rows);
    if ((len - RANS_HEADER) / 4 < blocks) {
        obx_set_error(err, err_len, "rans stream of %zu bytes cannot hold the offsets of %zu blocks",
                      len, blocks);
        return -1;
    }
    const uint8_t *ends = stream + RANS_HEADER;
    const uint8_t *payload = ends + 4 * blocks;
    size_t payload_len = len - RANS_HEADER - 4 * blocks;
    uint8_t *slot_symbol = NULL;
    if (symbols != 0) {
        slot_symbol = malloc(RANS_TOTAL);
        if (!slot_symbol) {
            obx_set_error(err, err_len, "out of memory decoding a rans stream");
            return -1;
        }
        for (int s = 0; s < RANS_SYMBOLS; s++) memset(slot_symbol + cum[s], s, freq[s]);
    }
    int status = 0;
    size_t start = 0;
    for (size_t b = 0; b < blocks && status == 0; b++) {
        size_t end = get_u32(ends + 4 * b);
        if (end < start + 4 * RANS_STATES || end > payload_len) {
            obx_set_error(err, err_len, "rans block %zu ends at %zu, outside [%zu, %zu]", b, end,
                          start + 4 * RANS_STATES, payload_len);
            status = -1;
            break;
        }
        const uint8_t *p = payload + start, *limit = payload + end;
        uint32_t states[RANS_STATES];
        for (int j = 0; j < RANS_STATES; j++, p += 4) {
            states[j] = get_u32(p);
            /* The encoder's states end in [2^23, 2^31); from there no step overflows. */
            if (states[j] < RANS_LOW || states[j] >= RANS_LOW << 8) {
                obx_set_error(err, err_len,
                              "rans block %zu: state %d starts at %u, outside [2^23, 2^31)", b, j,
                              states[j]);
                status = -1;
            }
        }
        if (status)
            break;
        size_t first = b * block_rows * row_bytes;
        size_t last = OBX_MIN((b + 1) * block_rows, n) * row_bytes;
        for (size_t i = first; i < last; i++) {
            uint32_t *x = &states[(i - first) % RANS_STATES];
            uint32_t slot = *x & (RANS_TOTAL - 1);
            uint8_t s = slot_symbol[slot];
            base3_out[i] = s;
            *x = freq[s] * (*x >> RANS_PROB_BITS) + slot - cum[s];
            while (*x < RANS_LOW) { /* at most two bytes */
                if (p == limit) {
                    obx_set_error(err, err_len, "rans block %zu runs out of bytes at row %zu", b,
                                  i / row_bytes);
                    status = -1;
                    break;
                }
                *x = (*x << 8) | *p++;
            }
            if (status) break;
        }
        int ended = p == limit;
        for (int j = 0; j < RANS_STATES; j++) ended &= states[j] == RANS_LOW;
        if (status == 0 && !ended) {
            obx_set_error(err, err_len,
                          "rans block %zu is corrupt: it does not end in the initial states "
                          "with its bytes used up", b);
            status = -1;
        }
        start = end;
    }
    if (status == 0 && start != payload_len) {
        obx_set_error(err, err_len, "rans stream has %zu bytes after its last block",
                      payload_len - start);
        status = -1;
    }
    free(slot_symbol);
    return status;
}
