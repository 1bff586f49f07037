/* The "rans" storage format (rans.h), version 2: byte-wise rANS over base3
 * bytes with four interleaved 32-bit states and 16-bit frequencies derived
 * from two code counts (a parametric order-0 model: a base3 byte's
 * probability is the product of its five digits'), so the model costs a few
 * bytes instead of a 486-byte table. Scalar only: it runs once per tensor,
 * at conversion and at session creation. The pure-Python reference is
 * onnxbit/reference/rans.py; every integer step below is mirrored there. */
#include "onnxbit/rans.h"

#include <stdlib.h>
#include <string.h>

#include "codec_streams_internal.h"
#include "obx_common.h"
#include "onnxbit/formats.h"

enum {
    RANS_VERSION = 2,
    RANS_SYMBOLS = 243,
    RANS_PROB_BITS = 16,
    RANS_TOTAL = 1 << RANS_PROB_BITS,
    /* Symbol i of a block goes through state i % RANS_STATES: independent
     * dependency chains the CPU overlaps when decoding. */
    RANS_STATES = 4,
    DIGITS = 5,
    FRACTION_BITS = 31, /* digit and byte probabilities in fixed point */
    /* block_rows 0 asks for blocks of about this many base3 bytes: few
     * enough that their framing (16 state bytes and a length each) stays
     * near 0.03 % of the stream, enough to decode in parallel. */
    AUTO_BLOCK_BYTES = 1 << 16,
};
#define RANS_LOW (1u << 23) /* the state stays in [RANS_LOW, 256 * RANS_LOW) */

typedef struct {
    uint32_t freq[RANS_SYMBOLS], cum[RANS_SYMBOLS];
} rans_table;

static size_t block_rows_for(size_t block_rows, size_t row_bytes)
{
    return block_rows ? block_rows : OBX_DIV_UP(AUTO_BLOCK_BYTES, OBX_MAX(row_bytes, 1));
}

static size_t block_count(size_t n, size_t block_rows) { return n / block_rows + (n % block_rows != 0); }

OBX_API size_t obx_rans_max_bytes(size_t n, size_t k, size_t block_rows)
{
    size_t row_bytes = obx_packed_row_bytes(OBX_FMT_BASE3, k);
    size_t blocks = block_count(n, block_rows_for(block_rows, row_bytes));
    /* A symbol costs at most 16 bits (frequency >= 1): two bytes is an upper bound. */
    return 2 + 3 * OBX_VARINT_MAX_BYTES + blocks * (OBX_VARINT_MAX_BYTES + 4 * RANS_STATES) + 2 * n * row_bytes;
}

/* weights -> frequencies summing to RANS_TOTAL, every symbol of nonzero
 * weight >= 1: floor scaling, then the largest frequency (lowest symbol
 * first) absorbs the difference. */
static void normalise(const uint64_t *weight, uint32_t *freq)
{
    uint64_t total = 0;
    for (int s = 0; s < RANS_SYMBOLS; s++) total += weight[s];
    int64_t sum = 0;
    for (int s = 0; s < RANS_SYMBOLS; s++) {
        freq[s] = weight[s] ? (uint32_t)(weight[s] * RANS_TOTAL / total) : 0;
        if (weight[s] && freq[s] == 0) freq[s] = 1;
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

/* The model: digit d (= code + 1) has probability count_d / codes, in fixed
 * point (at least 1 when it occurs); a byte whose first `digits` digits are
 * codes has the product of their probabilities (at least 1 while every
 * factor is nonzero) and needs its other digits to be 0, the padding. */
static void build_table(const uint64_t digit_fraction[3], int digits, rans_table *table)
{
    uint64_t weight[RANS_SYMBOLS];
    for (int s = 0; s < RANS_SYMBOLS; s++) {
        uint64_t v = (uint64_t)1 << FRACTION_BITS;
        for (int j = 0, rest = s; j < DIGITS; j++, rest /= 3) {
            int d = rest % 3;
            if (j >= digits)
                v = d == 0 ? v : 0;
            else if (v)
                v = digit_fraction[d] ? OBX_MAX(1, (v * digit_fraction[d]) >> FRACTION_BITS) : 0;
        }
        weight[s] = v;
    }
    normalise(weight, table->freq);
    for (uint32_t s = 0, c = 0; s < RANS_SYMBOLS; c += table->freq[s], s++) table->cum[s] = c;
}

static void build_tables(uint64_t minus, uint64_t plus, uint64_t codes, int tail_digits, rans_table *main,
                         rans_table *tail)
{
    const uint64_t counts[3] = {minus, codes - minus - plus, plus};
    uint64_t fraction[3];
    for (int d = 0; d < 3; d++) {
        unsigned __int128 scaled = ((unsigned __int128)counts[d] << FRACTION_BITS) + codes / 2;
        fraction[d] = counts[d] ? OBX_MAX(1, (uint64_t)(scaled / codes)) : 0;
    }
    build_table(fraction, DIGITS, main);
    build_table(fraction, tail_digits ? tail_digits : DIGITS, tail);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Codes -1 and +1 of one base3 byte's first `digits` digits; -1 when a
 * padding digit is not 0 or the byte is not base3. */
static int count_byte(uint8_t byte, int digits, uint64_t *minus, uint64_t *plus)
{
    if (byte >= RANS_SYMBOLS) return -1;
    for (int j = 0; j < DIGITS; j++, byte /= 3) {
        int d = byte % 3;
        if (j >= digits && d != 0) return -1;
        if (j < digits) {
            *minus += d == 0;
            *plus += d == 2;
        }
    }
    return 0;
}

OBX_API size_t obx_rans_encode_base3(const uint8_t *base3, size_t n, size_t k, size_t block_rows,
                                     uint8_t *out, size_t out_cap, char *err, size_t err_len)
{
    if (obx_stream_check_shape(n, k, "rans", err, err_len) != 0)
        return 0;
    if (out_cap < obx_rans_max_bytes(n, k, block_rows)) {
        obx_set_error(err, err_len, "output buffer of %zu bytes is smaller than obx_rans_max_bytes", out_cap);
        return 0;
    }
    const size_t row_bytes = obx_packed_row_bytes(OBX_FMT_BASE3, k);
    const int tail_digits = (int)(k % DIGITS);
    block_rows = block_rows_for(block_rows, row_bytes);
    /* -1 and +1 codes of every full byte, from a table. */
    uint8_t byte_minus[RANS_SYMBOLS], byte_plus[RANS_SYMBOLS];
    for (int s = 0; s < RANS_SYMBOLS; s++) {
        uint64_t m = 0, p = 0;
        count_byte((uint8_t)s, DIGITS, &m, &p);
        byte_minus[s] = (uint8_t)m;
        byte_plus[s] = (uint8_t)p;
    }
    uint64_t minus = 0, plus = 0;
    for (size_t r = 0; r < n; r++) {
        const uint8_t *row = base3 + r * row_bytes;
        unsigned invalid = 0;
        for (size_t j = 0; j + 1 < row_bytes; j++) {
            uint8_t byte = row[j];
            invalid |= byte >= RANS_SYMBOLS;
            byte = byte < RANS_SYMBOLS ? byte : 0;
            minus += byte_minus[byte];
            plus += byte_plus[byte];
        }
        for (size_t j = invalid ? 0 : row_bytes - 1; j < row_bytes; j++) {
            int digits = j + 1 == row_bytes && tail_digits ? tail_digits : DIGITS;
            if (j + 1 < row_bytes && row[j] < RANS_SYMBOLS)
                continue; /* counted above: looking for the invalid byte */
            if (count_byte(base3[r * row_bytes + j], digits, &minus, &plus) != 0) {
                obx_set_error(err, err_len, "byte %zu of row %zu is %u: not a base3 byte of %d codes "
                              "(< 243, padding digits 0)", j, r, base3[r * row_bytes + j], digits);
                return 0;
            }
        }
    }
    rans_table main, tail;
    build_tables(minus, plus, (uint64_t)n * k, tail_digits, &main, &tail);

    out[0] = RANS_VERSION;
    out[1] = (uint8_t)tail_digits;
    size_t header = 2;
    header += obx_write_varint(out + header, block_rows);
    header += obx_write_varint(out + header, minus);
    header += obx_write_varint(out + header, plus);
    const size_t blocks = block_count(n, block_rows);
    /* Blocks are encoded after room for every length, then moved down. */
    uint8_t *payload = out + header + blocks * OBX_VARINT_MAX_BYTES;
    size_t written = 0, lengths = header;
    for (size_t b = 0; b < blocks; b++) {
        const size_t first_row = b * block_rows, end_row = OBX_MIN(n, first_row + block_rows);
        uint8_t *scratch = payload + written;
        size_t used = 0;
        uint32_t states[RANS_STATES];
        for (int j = 0; j < RANS_STATES; j++) states[j] = RANS_LOW;
        /* Backwards, row by row: the decoder reads forwards. */
        for (size_t r = end_row; r-- > first_row;) {
            const uint8_t *row = base3 + r * row_bytes;
            for (size_t j = row_bytes; j-- > 0;) {
                const rans_table *table = j + 1 == row_bytes ? &tail : &main;
                uint32_t *x = &states[((r - first_row) * row_bytes + j) % RANS_STATES];
                uint32_t f = table->freq[row[j]];
                uint64_t x_max = (uint64_t)((RANS_LOW >> RANS_PROB_BITS) << 8) * f;
                /* Renormalise without a branch: 0, 1 or 2 low bytes out (x < 2^31
                 * <= x_max << 16), both written, kept as many as go out. */
                unsigned out_bytes = (unsigned)(*x >= x_max) + (unsigned)(*x >= x_max << 8);
                scratch[used] = (uint8_t)*x;
                scratch[used + 1] = (uint8_t)(*x >> 8);
                used += out_bytes;
                *x >>= 8 * out_bytes;
                *x = ((*x / f) << RANS_PROB_BITS) + (*x % f) + table->cum[row[j]];
            }
        }
        /* The states go last backwards, so they come first forwards: state 0
         * first, each little-endian once the block is reversed. */
        for (int j = RANS_STATES - 1; j >= 0; j--)
            for (int i = 3; i >= 0; i--) scratch[used++] = (uint8_t)(states[j] >> (8 * i));
        for (size_t i = 0, j = used - 1; i < j; i++, j--) {
            uint8_t t = scratch[i];
            scratch[i] = scratch[j];
            scratch[j] = t;
        }
        written += used;
        lengths += obx_write_varint(out + lengths, used);
    }
    memmove(out + lengths, payload, written);
    return lengths + written;
}

static int fail(char *err, size_t err_len, const char *message) { return obx_stream_fail(err, err_len, "%s", message); }

/* One decoding step of state *x: its symbol, the state advanced, with up to
 * two bytes read back in. The checked form stops at limit (-1); the fast one
 * may run only while at least two bytes a step are left. */
static inline int step_checked(uint32_t *x, const rans_table *table, const uint8_t *slot_symbol,
                               const uint8_t **p, const uint8_t *limit)
{
    uint32_t slot = *x & (RANS_TOTAL - 1);
    uint8_t s = slot_symbol[slot];
    *x = table->freq[s] * (*x >> RANS_PROB_BITS) + slot - table->cum[s];
    while (*x < RANS_LOW) { /* at most two bytes */
        if (*p == limit)
            return -1;
        *x = (*x << 8) | *(*p)++;
    }
    return s;
}

static inline uint8_t step_fast(uint32_t *x, const rans_table *table, const uint8_t *slot_symbol,
                                const uint8_t **p)
{
    uint32_t slot = *x & (RANS_TOTAL - 1);
    uint8_t s = slot_symbol[slot];
    uint32_t v = table->freq[s] * (*x >> RANS_PROB_BITS) + slot - table->cum[s];
    /* Branch-free renormalisation (whether bytes come in is data, not a
     * pattern): v >= 2^7 after a step, so it takes n = 0, 1 or 2 bytes. */
    uint32_t n = (uint32_t)(v < RANS_LOW) + (uint32_t)(v < (RANS_LOW >> 8));
    uint32_t next_two = (uint32_t)(*p)[0] << 8 | (*p)[1];
    v = (v << (8 * n)) | (next_two >> (16 - 8 * n));
    *p += n;
    *x = v;
    return s;
}

/* Decodes one block's rows. x0 always holds the state of the next symbol
 * (symbol i of the block uses state i % 4): a group of four steps x0..x3 in
 * turn, and a single step rotates the states by one. */
static int decode_block(const uint8_t *p, const uint8_t *limit, size_t b, size_t rows, size_t row_bytes,
                        const rans_table *main, const uint8_t *main_symbol, const rans_table *tail,
                        const uint8_t *tail_symbol, uint8_t *out, char *err, size_t err_len)
{
    uint32_t states[RANS_STATES];
    for (int j = 0; j < RANS_STATES; j++, p += 4) {
        states[j] = get_u32(p);
        /* The encoder's states end in [2^23, 2^31); from there no step overflows. */
        if (states[j] < RANS_LOW || states[j] >= RANS_LOW << 8)
            return obx_stream_fail(err, err_len, "rans block %zu: state %d starts at %u, outside [2^23, 2^31)",
                                   b, j, states[j]);
    }
    uint32_t x0 = states[0], x1 = states[1], x2 = states[2], x3 = states[3], t;
    for (size_t r = 0; r < rows; r++, out += row_bytes) {
        size_t j = 0;
        for (; j + 4 < row_bytes && limit - p >= 8; j += 4) {
            out[j] = step_fast(&x0, main, main_symbol, &p);
            out[j + 1] = step_fast(&x1, main, main_symbol, &p);
            out[j + 2] = step_fast(&x2, main, main_symbol, &p);
            out[j + 3] = step_fast(&x3, main, main_symbol, &p);
        }
        for (; j < row_bytes; j++) {
            const int last = j + 1 == row_bytes;
            int s = step_checked(&x0, last ? tail : main, last ? tail_symbol : main_symbol, &p, limit);
            if (s < 0)
                return obx_stream_fail(err, err_len, "rans block %zu runs out of bytes at row %zu", b, r);
            out[j] = (uint8_t)s;
            t = x0, x0 = x1, x1 = x2, x2 = x3, x3 = t;
        }
    }
    if (p != limit || x0 != RANS_LOW || x1 != RANS_LOW || x2 != RANS_LOW || x3 != RANS_LOW)
        return obx_stream_fail(err, err_len, "rans block %zu is corrupt: it does not end in the initial states "
                               "with its bytes used up", b);
    return 0;
}

OBX_API int obx_rans_decode_base3(const uint8_t *stream, size_t len, size_t n, size_t row_bytes,
                                  uint8_t *base3_out, char *err, size_t err_len)
{
    if (n == 0 || row_bytes == 0)
        return obx_stream_fail(err, err_len, "rans stream: N=%zu and row bytes %zu must be > 0", n, row_bytes);
    if (len < 2)
        return obx_stream_fail(err, err_len, "rans stream of %zu bytes is shorter than its 2-byte header", len);
    if (stream[0] != RANS_VERSION)
        return obx_stream_fail(err, err_len, "rans stream version %u is not %d", stream[0], RANS_VERSION);
    const int tail_digits = stream[1];
    if (tail_digits >= DIGITS)
        return obx_stream_fail(err, err_len, "rans stream says %d codes in a row's last byte, not 0..4", tail_digits);
    const size_t k = DIGITS * (row_bytes - 1) + (size_t)(tail_digits ? tail_digits : DIGITS);
    if (obx_stream_check_shape(n, k, "rans", err, err_len) != 0)
        return -1;
    const uint64_t codes = (uint64_t)n * k;
    size_t pos = 2;
    uint64_t fields[3]; /* block_rows, minus, plus */
    static const char *const field_names[3] = {"block_rows", "count of -1 codes", "count of +1 codes"};
    for (int f = 0; f < 3; f++) {
        int status = obx_read_varint(stream, len, &pos, &fields[f]);
        if (status != 0)
            return obx_stream_fail(err, err_len, "rans stream: its %s %s", field_names[f], obx_varint_problem(status));
    }
    const uint64_t block_rows = fields[0], minus = fields[1], plus = fields[2];
    if (block_rows == 0)
        return fail(err, err_len, "rans stream has block_rows 0");
    if (minus > codes || plus > codes - minus)
        return obx_stream_fail(err, err_len, "rans stream counts %llu codes -1 and %llu +1 in %llu codes",
                               (unsigned long long)minus, (unsigned long long)plus, (unsigned long long)codes);
    const size_t blocks = (size_t)(n / block_rows + (n % block_rows != 0));
    /* Block lengths, checked against the bytes there are before any decoding. */
    size_t lengths_at = pos;
    uint64_t payload = 0;
    for (size_t b = 0; b < blocks; b++) {
        uint64_t length = 0;
        int status = obx_read_varint(stream, len, &pos, &length);
        if (status != 0)
            return obx_stream_fail(err, err_len, "rans stream: the length of block %zu %s", b, obx_varint_problem(status));
        if (length < 4 * RANS_STATES || length > len)
            return obx_stream_fail(err, err_len, "rans block %zu has %llu bytes, outside [%d, %zu]", b,
                                   (unsigned long long)length, 4 * RANS_STATES, len);
        payload += length;
    }
    if (payload > len - pos)
        return obx_stream_fail(err, err_len, "rans stream is truncated: its blocks need %llu bytes, %zu are left",
                               (unsigned long long)payload, len - pos);
    if (payload < len - pos)
        return obx_stream_fail(err, err_len, "rans stream has %llu bytes after its last block",
                               (unsigned long long)(len - pos - payload));
    rans_table main, tail;
    build_tables(minus, plus, codes, tail_digits, &main, &tail);
    uint8_t *slot_symbol = malloc(2 * (size_t)RANS_TOTAL);
    if (!slot_symbol)
        return fail(err, err_len, "out of memory decoding a rans stream");
    for (int s = 0; s < RANS_SYMBOLS; s++) {
        memset(slot_symbol + main.cum[s], s, main.freq[s]);
        memset(slot_symbol + RANS_TOTAL + tail.cum[s], s, tail.freq[s]);
    }
    const rans_table *tail_table = tail_digits ? &tail : &main;
    const uint8_t *tail_symbol = slot_symbol + (tail_digits ? RANS_TOTAL : 0);
    int status = 0;
    const uint8_t *block = stream + pos;
    for (size_t b = 0; b < blocks && status == 0; b++) {
        uint64_t length = 0;
        obx_read_varint(stream, len, &lengths_at, &length); /* read and checked above */
        size_t first_row = (size_t)(b * block_rows), rows = (size_t)OBX_MIN(block_rows, n - first_row);
        status = decode_block(block, block + length, b, rows, row_bytes, &main, slot_symbol, tail_table,
                              tail_symbol, base3_out + first_row * row_bytes, err, err_len);
        block += length;
    }
    free(slot_symbol);
    return status;
}
