/* Helpers of the stream decoders (codec_streams_internal.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_streams_internal.h"
#include "onnxbit/codec.h"
#include "onnxbit/formats.h"
#include "obx_common.h"

int obx_stream_fail(char *err, size_t err_len, const char *fmt, ...)
{
    if (err && err_len) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(err, err_len, fmt, args);
        va_end(args);
    }
    return -1;
}

int obx_read_varint(const uint8_t *stream, size_t len, size_t *pos, uint64_t *value)
{
    uint64_t result = 0;
    for (int i = 0; i < OBX_VARINT_MAX_BYTES; i++) {
        if (*pos >= len)
            return -1;
        uint8_t byte = stream[(*pos)++];
        result |= (uint64_t)(byte & 0x7f) << (7 * i);
        if (!(byte & 0x80)) {
            *value = result;
            return 0;
        }
    }
    return -2;
}

int obx_stream_check_shape(size_t n, size_t k, const char *format, char *err, size_t err_len)
{
    if (k == 0 || n == 0)
        return obx_stream_fail(err, err_len, "%s stream: N=%zu and K=%zu must be > 0", format, n, k);
    if ((uint64_t)n * k / n != k || (uint64_t)n * k > SIZE_MAX / 2)
        return obx_stream_fail(err, err_len, "%s stream: N=%zu x K=%zu codes overflow", format, n, k);
    return 0;
}

const char *obx_varint_problem(int status)
{
    return status == -1 ? "is truncated" : "is longer than 9 bytes";
}

int obx_stream_read_count_header(const uint8_t *stream, size_t len, size_t n, size_t k, const char *format,
                                 int version, size_t *pos, uint64_t *nonzeros, char *err, size_t err_len)
{
    if (obx_stream_check_shape(n, k, format, err, err_len) != 0)
        return -1;
    if (len < 1)
        return obx_stream_fail(err, err_len, "%s stream is empty (needs a version byte)", format);
    if (stream[0] != version)
        return obx_stream_fail(err, err_len, "%s stream has version %u; this library reads version %d", format,
                               stream[0], version);
    *pos = 1;
    int status = obx_read_varint(stream, len, pos, nonzeros);
    if (status != 0)
        return obx_stream_fail(err, err_len, "%s stream: nonzero count %s", format, obx_varint_problem(status));
    const uint64_t total = (uint64_t)n * k;
    if (*nonzeros > total)
        return obx_stream_fail(err, err_len, "%s stream claims %llu nonzeros in %llu codes", format,
                               (unsigned long long)*nonzeros, (unsigned long long)total);
    return 0;
}

int obx_base3_rows_check(const uint8_t *base3, size_t n, size_t k, char *err, size_t err_len)
{
    const size_t row_bytes = (k + 4) / 5;
    uint64_t invalid = 0;
    size_t first_invalid = 0;
    for (size_t r = 0; r < n; r++) {
        const uint8_t *row = base3 + r * row_bytes;
        for (size_t j = 0; j < row_bytes; j++) {
            if (row[j] >= 243 && invalid++ == 0)
                first_invalid = r * k + 5 * j;
        }
    }
    if (!invalid)
        return 0;
    obx_set_error(err, err_len, "base3 rows hold %llu invalid bytes, the first at code %zu",
                  (unsigned long long)invalid, first_invalid);
    return -1;
}

int obx_stream_encode_check(const uint8_t *base3, size_t n, size_t k, size_t out_cap,
                            size_t (*max_bytes)(size_t n, size_t k), const char *format, const char *max_name,
                            char *err, size_t err_len)
{
    if (obx_stream_check_shape(n, k, format, err, err_len) != 0)
        return -1;
    if (out_cap < max_bytes(n, k)) {
        obx_set_error(err, err_len, "output buffer of %zu bytes is smaller than %s", out_cap, max_name);
        return -1;
    }
    return obx_base3_rows_check(base3, n, k, err, err_len);
}

int obx_code_chunks_open(obx_code_chunks *c, size_t n, size_t k, uint8_t *base3_out, const char *format,
                         char *err, size_t err_len)
{
    c->base3_out = base3_out;
    c->n = n;
    c->k = k;
    c->row_bytes = obx_packed_row_bytes(OBX_FMT_BASE3, k);
    c->rows_per_chunk = k >= OBX_CHUNK_TARGET_CODES ? 1 : OBX_CHUNK_TARGET_CODES / k;
    if (c->rows_per_chunk > n)
        c->rows_per_chunk = n;
    c->first_row = 0;
    c->chunk_codes = c->rows_per_chunk * k;
    c->codes = calloc(c->chunk_codes + OBX_CHUNK_SLACK, 1);
    if (!c->codes)
        return obx_stream_fail(err, err_len, "out of memory decoding a %s stream", format);
    return 0;
}

void obx_code_chunks_flush(obx_code_chunks *c)
{
    if (c->first_row >= c->n)
        return;
    size_t rows = c->chunk_codes / c->k, first_bad = 0;
    /* Codes are in {-1, 0, 1} by construction: the encoder finds nothing invalid. */
    obx_encode_i8(OBX_FMT_BASE3, c->codes, rows, c->k, c->base3_out + c->first_row * c->row_bytes, &first_bad);
    memset(c->codes, 0, c->chunk_codes + OBX_CHUNK_SLACK);
    c->first_row += rows;
    c->chunk_codes = OBX_MIN(c->rows_per_chunk, c->n - c->first_row) * c->k;
}

void obx_code_chunks_finish(obx_code_chunks *c)
{
    while (c->first_row < c->n)
        obx_code_chunks_flush(c);
    obx_code_chunks_close(c);
}

void obx_code_chunks_close(obx_code_chunks *c)
{
    free(c->codes);
    c->codes = NULL;
}

void obx_base3_runs_table(obx_base3_runs table[256])
{
    for (int b = 0; b < 256; b++) {
        obx_base3_runs *e = &table[b];
        memset(e, 0, sizeof *e);
        e->valid = b < 243;
        unsigned zeros = 0;
        for (int j = 0, rest = b; j < 5 && e->valid; j++, rest /= 3) {
            int d = rest % 3; /* code d - 1 */
            if (d == 1) {
                zeros++;
                continue;
            }
            e->entries |= (uint64_t)((zeros << 1) | (d == 0)) << (8 * e->count);
            e->gaps |= (uint64_t)zeros << (8 * e->count);
            e->negative |= (uint8_t)((d == 0) << e->count);
            e->count++;
            zeros = 0;
        }
        e->trail = (uint8_t)(e->valid ? zeros : 5);
        e->keep_run = e->count ? 0 : ~(uint64_t)0;
    }
}
