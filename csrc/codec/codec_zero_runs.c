/* The "zeroruns" stream codec (layout: onnxbit/zero_runs.h). The numpy
 * encoder and decoder the C code must equal are onnxbit/reference/zero_runs.py.
 *
 * Both directions go through int8 codes a chunk of rows at a time, packed and
 * unpacked to base3 by the SIMD row codecs; what is left here is one store
 * (decode) or one byte written (encode) per nonzero, with fast paths for runs
 * of eight one-byte entries, which is every entry of a dense tensor. */
#include "onnxbit/zero_runs.h"

#include <stdlib.h>
#include <string.h>

#include "codec_streams_internal.h"
#include "obx_common.h"
#include "onnxbit/codec.h"
#include "onnxbit/formats.h"

enum { ZERO_RUNS_VERSION = 1, GROUP = 8 };

/* Per one-byte entry e (< 128): how far it moves the position, (e >> 1) + 1,
 * and the code it places, 1 - 2 * (e & 1). Tables, so that placing an entry
 * is four instructions (load e, add, load code, store): a wide advance adds
 * straight from memory. */
static const uint64_t entry_advance[128] = {
    1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14,
    14, 15, 15, 16, 16, 17, 17, 18, 18, 19, 19, 20, 20, 21, 21, 22, 22, 23, 23, 24, 24, 25, 25,
    26, 26, 27, 27, 28, 28, 29, 29, 30, 30, 31, 31, 32, 32, 33, 33, 34, 34, 35, 35, 36, 36, 37,
    37, 38, 38, 39, 39, 40, 40, 41, 41, 42, 42, 43, 43, 44, 44, 45, 45, 46, 46, 47, 47, 48, 48,
    49, 49, 50, 50, 51, 51, 52, 52, 53, 53, 54, 54, 55, 55, 56, 56, 57, 57, 58, 58, 59, 59, 60,
    60, 61, 61, 62, 62, 63, 63, 64, 64
};
static const int8_t entry_code[128] = {
    1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1,
    1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1,
    1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1,
    1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1,
    1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1
};

/* The fast path: groups of eight one-byte entries (high bits clear, every
 * entry of a dense tensor), placed without a branch per entry, for as long
 * as they stay inside the chunk; returns the entries placed (a multiple of
 * 8, at most `available`). Stores may land in the chunk's slack (at most
 * 8 x 64 codes past it) and are kept only when the whole group stayed
 * inside; the slow path then redoes the entries that crossed. */
static size_t place_one_byte_groups(int8_t *restrict codes, size_t *at_io, size_t chunk_codes,
                                    const uint8_t *restrict src, size_t available)
{
    size_t at = *at_io, done = 0;
    while (available - done >= GROUP) {
        uint64_t word;
        memcpy(&word, src + done, sizeof word);
        if (word & 0x8080808080808080ull)
            break;
        size_t p = at;
        for (int j = 0; j < GROUP; j++) {
            unsigned entry = src[done + j];
            p += entry_advance[entry];
            codes[p - 1] = entry_code[entry];
        }
        if (p > chunk_codes)
            break;
        at = p;
        done += GROUP;
    }
    *at_io = at;
    return done;
}

static int place_entries(obx_code_chunks *c, const uint8_t *stream, size_t len, size_t *pos_io,
                         uint64_t nonzeros, char *err, size_t err_len)
{
    const uint64_t total = (uint64_t)c->n * c->k;
    uint64_t chunk_start = 0; /* position of the current chunk's first code */
    size_t at = 0;            /* of the next code, in the chunk */
    size_t pos = *pos_io;
    for (uint64_t i = 0; i < nonzeros;) {
        size_t done = place_one_byte_groups(c->codes, &at, c->chunk_codes, stream + pos,
                                            (size_t)OBX_MIN(nonzeros - i, (uint64_t)(len - pos)));
        pos += done;
        i += done;
        if (i == nonzeros)
            break;
        uint64_t entry = 0;
        int status = obx_read_varint(stream, len, &pos, &entry);
        if (status != 0)
            return obx_stream_fail(err, err_len, "zeroruns stream: entry %llu of %llu %s at byte %zu",
                                   (unsigned long long)i, (unsigned long long)nonzeros,
                                   obx_varint_problem(status), pos);
        uint64_t position = chunk_start + at, zeros = entry >> 1;
        if (zeros >= total - position)
            return obx_stream_fail(err, err_len, "zeroruns stream: entry %llu runs past the %llu codes",
                                   (unsigned long long)i, (unsigned long long)total);
        position += zeros;
        while (position >= chunk_start + c->chunk_codes) {
            chunk_start += c->chunk_codes;
            obx_code_chunks_flush(c);
        }
        at = (size_t)(position - chunk_start);
        c->codes[at++] = (int8_t)(1 - 2 * (int)(entry & 1));
        i++;
    }
    *pos_io = pos;
    return 0;
}

OBX_API int obx_zero_runs_decode_base3(const uint8_t *stream, size_t len, size_t n, size_t k,
                                       uint8_t *base3_out, char *err, size_t err_len)
{
    size_t pos = 0;
    uint64_t nonzeros = 0;
    if (obx_stream_read_count_header(stream, len, n, k, "zeroruns", ZERO_RUNS_VERSION, &pos, &nonzeros, err,
                                     err_len) != 0)
        return -1;
    obx_code_chunks chunks;
    if (obx_code_chunks_open(&chunks, n, k, base3_out, "zeroruns", err, err_len) != 0)
        return -1;
    int status = place_entries(&chunks, stream, len, &pos, nonzeros, err, err_len);
    if (status == 0 && pos != len)
        status = obx_stream_fail(err, err_len, "zeroruns stream has %zu bytes after its last nonzero", len - pos);
    if (status != 0) {
        obx_code_chunks_close(&chunks);
        return -1;
    }
    obx_code_chunks_finish(&chunks);
    return 0;
}

OBX_API size_t obx_zero_runs_max_bytes(size_t n, size_t k)
{
    /* An entry after z zeros takes at most z + 1 bytes (a varint of L bytes
     * needs 2z + 1 >= 128^(L-1)), so the entries fit in one byte a code;
     * plus 8 for the encoder's word stores. */
    return 1 + OBX_VARINT_MAX_BYTES + n * k + 8;
}

typedef struct {
    uint8_t *out;
    size_t o;
    uint64_t run, count;
} entry_writer;

/* The codes of one base3 byte's first `digits` digits, one at a time. */
static void append_digits(entry_writer *w, uint8_t byte, int digits)
{
    for (int j = 0; j < digits; j++, byte /= 3) {
        int d = byte % 3;
        if (d == 1) {
            w->run++;
            continue;
        }
        w->o += obx_write_varint(w->out + w->o, (w->run << 1) | (uint64_t)(d == 0));
        w->run = 0;
        w->count++;
    }
}

/* Appends the entries of m full base3 bytes (five codes each). While the
 * run is under 60 every entry of a byte is one byte: the table's entries
 * word, the run added to its first, stored whole (the stream advances by
 * the byte's nonzeros). */
static void append_bytes(entry_writer *restrict w, const uint8_t *restrict bytes, size_t m,
                         const obx_base3_runs *restrict table)
{
    uint8_t *restrict out = w->out;
    size_t o = w->o;
    uint64_t run = w->run, count = w->count;
    for (size_t j = 0; j < m; j++) {
        const obx_base3_runs *e = &table[bytes[j]];
        if (run < 60) {
            uint64_t word = e->entries + (run << 1);
            memcpy(out + o, &word, sizeof word);
            o += e->count;
            count += e->count;
            run = (run & e->keep_run) + e->trail;
        } else if (e->count == 0) {
            /* A long run goes on: eight zero bytes (121 = five zero codes) at a time. */
            run += obx_skip_zero_byte_groups(bytes, m, &j) + 5;
        } else {
            w->o = o, w->run = run, w->count = count;
            append_digits(w, bytes[j], 5);
            o = w->o, run = w->run, count = w->count;
        }
    }
    w->o = o, w->run = run, w->count = count;
}

OBX_API size_t obx_zero_runs_encode_base3(const uint8_t *base3, size_t n, size_t k, uint8_t *out,
                                          size_t out_cap, char *err, size_t err_len)
{
    if (obx_stream_encode_check(base3, n, k, out_cap, obx_zero_runs_max_bytes, "zeroruns",
                                "obx_zero_runs_max_bytes", err, err_len) != 0)
        return 0;
    obx_base3_runs table[256];
    obx_base3_runs_table(table);
    const size_t row_bytes = obx_packed_row_bytes(OBX_FMT_BASE3, k);
    const size_t full_bytes = k / 5;
    const int tail_digits = (int)(k % 5);
    /* Entries go after room for the largest header, then move down to it. */
    const size_t entries_at = 1 + OBX_VARINT_MAX_BYTES;
    entry_writer w = {out, entries_at, 0, 0};
    for (size_t r = 0; r < n; r++) {
        const uint8_t *row = base3 + r * row_bytes;
        append_bytes(&w, row, full_bytes, table);
        if (tail_digits)
            append_digits(&w, row[full_bytes], tail_digits);
    }
    out[0] = ZERO_RUNS_VERSION;
    size_t header = 1 + obx_write_varint(out + 1, w.count);
    memmove(out + header, out + entries_at, w.o - entries_at);
    return header + w.o - entries_at;
}
