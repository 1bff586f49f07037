/* The "sparse" stream codec (layout: onnxbit/sparse.h). The numpy encoder and
 * decoder the C code must equal are onnxbit/reference/sparse.py.
 *
 * As in codec_zero_runs.c, codes go through an int8 chunk of rows that the
 * SIMD row codecs pack and unpack, with fast paths for groups of eight
 * one-byte gaps. */
#include "onnxbit/sparse.h"

#include <stdlib.h>
#include <string.h>

#include "codec_streams_internal.h"
#include "obx_common.h"
#include "onnxbit/formats.h"

enum { SPARSE_VERSION = 1, GROUP = 8 };

/* The sign bits of nonzeros placed .. placed + 7 (all < the nonzero count). */
static unsigned eight_signs(const uint8_t *signs, size_t sign_bytes, uint64_t placed)
{
    size_t byte = (size_t)(placed >> 3);
    unsigned bits = signs[byte];
    if (byte + 1 < sign_bytes)
        bits |= (unsigned)signs[byte + 1] << 8;
    return (bits >> (placed & 7)) & 0xFF;
}

/* gap + 1 for a one-byte gap: added straight from memory (see codec_zero_runs.c). */
static const uint64_t gap_advance[128] = {
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48,
    49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71,
    72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94,
    95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113,
    114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128
};

/* Eight sign bits -> the eight codes (+1 or -1) as the bytes of a word, the
 * first code in the low byte: 1 - 2 * bit in every byte, 0x01 or 0xFF. */
#define SIGN_BYTE(b, j) ((uint64_t)(((b) >> (j)) & 1 ? 0xFF : 0x01) << (8 * (j)))
#define SIGN_CODES(b)                                                                                  \
    (SIGN_BYTE(b, 0) | SIGN_BYTE(b, 1) | SIGN_BYTE(b, 2) | SIGN_BYTE(b, 3) | SIGN_BYTE(b, 4) |         \
     SIGN_BYTE(b, 5) | SIGN_BYTE(b, 6) | SIGN_BYTE(b, 7))
#define SIGN_CODES_4(b) SIGN_CODES(b), SIGN_CODES((b) + 1), SIGN_CODES((b) + 2), SIGN_CODES((b) + 3)
#define SIGN_CODES_16(b) SIGN_CODES_4(b), SIGN_CODES_4((b) + 4), SIGN_CODES_4((b) + 8), SIGN_CODES_4((b) + 12)
#define SIGN_CODES_64(b) SIGN_CODES_16(b), SIGN_CODES_16((b) + 16), SIGN_CODES_16((b) + 32), SIGN_CODES_16((b) + 48)
static const uint64_t codes_of_signs[256] = {SIGN_CODES_64(0), SIGN_CODES_64(64), SIGN_CODES_64(128),
                                             SIGN_CODES_64(192)};

/* The fast path: groups of eight one-byte gaps (high bits clear) placed
 * without a branch per gap while they stay inside the row; returns the gaps
 * placed (a multiple of 8, at most `available`). Stores may go up to 8 x 128
 * codes past the row (into the next rows or the chunk's slack); a group that
 * does is corrupt, and the slow path reports it. */
static size_t place_one_byte_groups(int8_t *restrict codes_row, size_t *col_io, size_t k,
                                    const uint8_t *restrict src, size_t available,
                                    const uint8_t *restrict signs, size_t sign_bytes, uint64_t placed)
{
    size_t col = *col_io, done = 0;
    while (available - done >= GROUP) {
        uint64_t word;
        memcpy(&word, src + done, sizeof word);
        if (word & 0x8080808080808080ull)
            break;
        uint64_t group_codes = codes_of_signs[eight_signs(signs, sign_bytes, placed + done)];
        size_t p = col;
        for (int j = 0; j < GROUP; j++) {
            p += gap_advance[src[done + j]];
            codes_row[p - 1] = (int8_t)(uint8_t)(group_codes >> (8 * j));
        }
        if (p > k)
            break;
        col = p;
        done += GROUP;
    }
    *col_io = col;
    return done;
}

static int sign_of(const uint8_t *signs, uint64_t placed)
{
    return (signs[placed >> 3] >> (placed & 7)) & 1;
}

/* Places row `row`'s nonzeros in codes_row (k codes, zeros, with slack after). */
static int place_row(int8_t *codes_row, size_t row, size_t k, const uint8_t *stream, size_t len,
                     size_t *pos_io, const uint8_t *signs, size_t sign_bytes, uint64_t nonzeros,
                     uint64_t *placed_io, char *err, size_t err_len)
{
    size_t pos = *pos_io;
    uint64_t placed = *placed_io, count = 0;
    int status = obx_read_varint(stream, len, &pos, &count);
    if (status != 0)
        return obx_stream_fail(err, err_len, "sparse stream: the count of row %zu %s", row, obx_varint_problem(status));
    if (count > k || count > nonzeros - placed)
        return obx_stream_fail(err, err_len, "sparse stream: row %zu claims %llu nonzeros (K=%zu, "
                               "%llu left of %llu)", row, (unsigned long long)count, k,
                               (unsigned long long)(nonzeros - placed), (unsigned long long)nonzeros);
    size_t col = 0; /* the next column a nonzero may take */
    for (uint64_t i = 0; i < count;) {
        size_t done = place_one_byte_groups(codes_row, &col, k, stream + pos,
                                            (size_t)OBX_MIN(count - i, (uint64_t)(len - pos)), signs,
                                            sign_bytes, placed);
        pos += done;
        i += done;
        placed += done;
        if (i == count)
            break;
        uint64_t gap = 0;
        status = obx_read_varint(stream, len, &pos, &gap);
        if (status != 0)
            return obx_stream_fail(err, err_len, "sparse stream: position %llu of row %zu %s",
                                   (unsigned long long)i, row, obx_varint_problem(status));
        if (gap >= k - col)
            return obx_stream_fail(err, err_len, "sparse stream: position %llu of row %zu is past K=%zu",
                                   (unsigned long long)i, row, k);
        col += (size_t)gap;
        codes_row[col++] = (int8_t)(1 - 2 * sign_of(signs, placed));
        placed++;
        i++;
    }
    *pos_io = pos;
    *placed_io = placed;
    return 0;
}

OBX_API int obx_sparse_decode_base3(const uint8_t *stream, size_t len, size_t n, size_t k,
                                    uint8_t *base3_out, char *err, size_t err_len)
{
    size_t pos = 0;
    uint64_t nonzeros = 0;
    if (obx_stream_read_count_header(stream, len, n, k, "sparse", SPARSE_VERSION, &pos, &nonzeros, err,
                                     err_len) != 0)
        return -1;
    const size_t sign_bytes = (size_t)((nonzeros + 7) / 8);
    if (sign_bytes > len - pos)
        return obx_stream_fail(err, err_len, "sparse stream is truncated in its %zu sign bytes", sign_bytes);
    const uint8_t *signs = stream + pos;
    if (nonzeros % 8 && (signs[sign_bytes - 1] >> (nonzeros % 8)) != 0)
        return obx_stream_fail(err, err_len, "sparse stream has sign bits set past its %llu nonzeros",
                               (unsigned long long)nonzeros);
    pos += sign_bytes;
    obx_code_chunks chunks;
    if (obx_code_chunks_open(&chunks, n, k, base3_out, "sparse", err, err_len) != 0)
        return -1;
    uint64_t placed = 0;
    int status = 0;
    for (size_t row = 0; row < n && status == 0; row++) {
        if (row - chunks.first_row >= chunks.chunk_codes / k)
            obx_code_chunks_flush(&chunks);
        int8_t *codes_row = chunks.codes + (row - chunks.first_row) * k;
        status = place_row(codes_row, row, k, stream, len, &pos, signs, sign_bytes, nonzeros, &placed, err,
                           err_len);
    }
    if (status == 0 && placed != nonzeros)
        status = obx_stream_fail(err, err_len, "sparse stream: its rows hold %llu nonzeros, its header says %llu",
                                 (unsigned long long)placed, (unsigned long long)nonzeros);
    if (status == 0 && pos != len)
        status = obx_stream_fail(err, err_len, "sparse stream has %zu bytes after its last row", len - pos);
    if (status != 0) {
        obx_code_chunks_close(&chunks);
        return -1;
    }
    obx_code_chunks_finish(&chunks);
    return 0;
}

OBX_API size_t obx_sparse_max_bytes(size_t n, size_t k)
{
    /* Header, sign bits, a count per row, at most one byte a code for the
     * gaps (a gap of g zeros takes at most g + 1 bytes), and 8 for the
     * encoder's word stores. */
    return 1 + OBX_VARINT_MAX_BYTES + (n * k + 7) / 8 + n * OBX_VARINT_MAX_BYTES + n * k + 8;
}


typedef struct {
    uint8_t *out, *signs;
    size_t o;
    uint64_t run, placed;
} gap_writer;

static void set_signs(gap_writer *w, unsigned negative, unsigned count)
{
    /* Up to five bits at bit `placed`: into one or two bytes of the sign array. */
    unsigned shifted = negative << (w->placed & 7);
    w->signs[w->placed >> 3] |= (uint8_t)shifted;
    if (shifted >> 8)
        w->signs[(w->placed >> 3) + 1] |= (uint8_t)(shifted >> 8);
    w->placed += count;
}

/* The codes of one base3 byte's first `digits` digits, one at a time. */
static void append_digits(gap_writer *w, uint8_t byte, int digits)
{
    for (int j = 0; j < digits; j++, byte /= 3) {
        int d = byte % 3;
        if (d == 1) {
            w->run++;
            continue;
        }
        w->o += obx_write_varint(w->out + w->o, w->run);
        set_signs(w, d == 0, 1);
        w->run = 0;
    }
}

/* Appends the gaps of m full base3 bytes: while the run is under 124 each
 * gap is one byte, the table's gaps word stored whole, and the signs go in
 * with two ORs, no branch (see codec_zero_runs.c). Locals, not w's fields:
 * byte stores may alias those. */
static void append_bytes(gap_writer *w, const uint8_t *restrict bytes, size_t m, const obx_base3_runs *restrict table)
{
    uint8_t *out = w->out, *signs = w->signs; /* the same buffer: no restrict */
    size_t o = w->o;
    uint64_t run = w->run, placed = w->placed;
    for (size_t j = 0; j < m; j++) {
        const obx_base3_runs *e = &table[bytes[j]];
        if (run < 124) {
            uint64_t word = e->gaps + run;
            memcpy(out + o, &word, sizeof word);
            o += e->count;
            /* Bits past the sign array are only ever 0 ORed into bytes already written. */
            unsigned shifted = (unsigned)e->negative << (placed & 7);
            signs[placed >> 3] |= (uint8_t)shifted;
            signs[(placed >> 3) + 1] |= (uint8_t)(shifted >> 8);
            placed += e->count;
            run = (run & e->keep_run) + e->trail;
        } else if (e->count == 0) {
            run += obx_skip_zero_byte_groups(bytes, m, &j) + 5;
        } else {
            w->o = o, w->run = run, w->placed = placed;
            append_digits(w, bytes[j], 5);
            o = w->o, run = w->run, placed = w->placed;
        }
    }
    w->o = o, w->run = run, w->placed = placed;
}

static size_t row_nonzeros(const uint8_t *row, size_t full_bytes, int tail_digits, const obx_base3_runs *table)
{
    size_t count = 0;
    for (size_t j = 0; j < full_bytes; j++)
        count += table[row[j]].count;
    if (tail_digits == 0) /* no last, partial byte: row[full_bytes] is the next row */
        return count;
    for (int j = 0, rest = row[full_bytes]; j < tail_digits; j++, rest /= 3)
        count += rest % 3 != 1;
    return count;
}

OBX_API size_t obx_sparse_encode_base3(const uint8_t *base3, size_t n, size_t k, uint8_t *out,
                                       size_t out_cap, char *err, size_t err_len)
{
    if (obx_stream_encode_check(base3, n, k, out_cap, obx_sparse_max_bytes, "sparse", "obx_sparse_max_bytes",
                                err, err_len) != 0)
        return 0;
    obx_base3_runs table[256];
    obx_base3_runs_table(table);
    const size_t row_bytes = obx_packed_row_bytes(OBX_FMT_BASE3, k);
    const size_t full_bytes = k / 5;
    const int tail_digits = (int)(k % 5);
    /* Pass one: the nonzero count, which comes first. */
    uint64_t nonzeros = 0;
    for (size_t r = 0; r < n; r++)
        nonzeros += row_nonzeros(base3 + r * row_bytes, full_bytes, tail_digits, table);
    out[0] = SPARSE_VERSION;
    size_t o = 1 + obx_write_varint(out + 1, nonzeros);
    const size_t sign_bytes = (size_t)((nonzeros + 7) / 8);
    gap_writer w = {out, out + o, o + sign_bytes, 0, 0};
    memset(w.signs, 0, sign_bytes);
    /* Pass two: per row its count, then its gaps and their signs. */
    for (size_t r = 0; r < n; r++) {
        const uint8_t *row = base3 + r * row_bytes;
        w.o += obx_write_varint(out + w.o, row_nonzeros(row, full_bytes, tail_digits, table));
        w.run = 0;
        append_bytes(&w, row, full_bytes, table);
        if (tail_digits)
            append_digits(&w, row[full_bytes], tail_digits);
    }
    return w.o;
}
