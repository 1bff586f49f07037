/* What the stream decoders (zero_runs.h, sparse.h) share: LEB128 varints,
 * error messages, and the chunks of int8 codes they decode into. */
#ifndef ONNXBIT_CODEC_STREAMS_INTERNAL_H
#define ONNXBIT_CODEC_STREAMS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The fast paths move bytes of codes and entries as little-endian words. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the stream codecs assume a little-endian CPU"
#endif

enum { OBX_VARINT_MAX_BYTES = 9 };

/* Formats err, returns -1. */
int obx_stream_fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* One LEB128 varint at stream[*pos], advancing *pos: 0, -1 when it runs past
 * len, -2 when it is longer than OBX_VARINT_MAX_BYTES (9 bytes hold 63 bits,
 * so no value read overflows). */
int obx_read_varint(const uint8_t *stream, size_t len, size_t *pos, uint64_t *value);
/* -1 with a message naming `format` unless n and k are > 0 and n * k fits. */
int obx_stream_check_shape(size_t n, size_t k, const char *format, char *err, size_t err_len);
/* The stream encoders' long runs of zero codes: while the eight base3 bytes
 * after byte *j (of m) are all 121 (five zero codes each), step *j over
 * them; returns the zero codes stepped over (40 a group). */
static inline uint64_t obx_skip_zero_byte_groups(const uint8_t *bytes, size_t m, size_t *j)
{
    const uint64_t zero_bytes = 0x7979797979797979ull;
    uint64_t eight, zeros = 0;
    while (*j + 9 <= m && (memcpy(&eight, bytes + *j + 1, sizeof eight), eight == zero_bytes)) {
        zeros += 40;
        *j += 8;
    }
    return zeros;
}

/* What went wrong with a varint, from obx_read_varint's status, for messages. */
const char *obx_varint_problem(int status);
/* The header the zeroruns and sparse streams share: the shape check, a
 * version byte equal to `version`, then the varint count of nonzero codes
 * (at most n * k). Sets *pos past it; -1 with a message naming `format`. */
int obx_stream_read_count_header(const uint8_t *stream, size_t len, size_t n, size_t k, const char *format,
                                 int version, size_t *pos, uint64_t *nonzeros, char *err, size_t err_len);
/* -1 with the count and first position of bytes >= 243 (not base3) in n
 * rows of k codes, as the stream encoders refuse them. */
int obx_base3_rows_check(const uint8_t *base3, size_t n, size_t k, char *err, size_t err_len);
/* What the zeroruns and sparse encoders check before writing, in this order:
 * the shape, out_cap against max_bytes(n, k) (named max_name in the
 * message), then the base3 rows. 0, or -1 with a message. */
int obx_stream_encode_check(const uint8_t *base3, size_t n, size_t k, size_t out_cap,
                            size_t (*max_bytes)(size_t n, size_t k), const char *format, const char *max_name,
                            char *err, size_t err_len);

/* Stream decoders place codes in an int8 buffer of a few whole rows (a
 * chunk) and pack each finished chunk to base3 with the SIMD row encoder:
 * placing an int8 is one store, where setting a base3 digit needs a
 * division and a read-modify-write. `codes` has OBX_CHUNK_SLACK bytes past
 * the chunk, so a fast path may store a group of codes before checking they
 * stayed inside it. */
enum { OBX_CHUNK_TARGET_CODES = 16384, OBX_CHUNK_SLACK = 2048 };
typedef struct {
    uint8_t *base3_out;
    size_t n, k, row_bytes;
    size_t rows_per_chunk;
    size_t first_row;    /* of the current chunk */
    size_t chunk_codes;  /* codes in the current chunk (its rows times k) */
    int8_t *codes;       /* the current chunk, zeros where nothing was placed */
} obx_code_chunks;

/* Allocates the chunk buffer for n rows of k codes; -1 with a message when out of memory. */
int obx_code_chunks_open(obx_code_chunks *c, size_t n, size_t k, uint8_t *base3_out, const char *format,
                         char *err, size_t err_len);
/* Packs the current chunk to its base3 rows and starts the next one (zeros); 0 past the last row. */
void obx_code_chunks_flush(obx_code_chunks *c);
/* Flushes every chunk left (all-zero rows after the last code) and frees the buffer. */
void obx_code_chunks_finish(obx_code_chunks *c);
void obx_code_chunks_close(obx_code_chunks *c);

/* What one base3 byte holds for the run-length encoders, so they handle five
 * codes with one table load instead of five digits: its nonzero codes in
 * order as zeroruns entries ((zeros before it in the byte << 1) | code is
 * -1, one byte each in `entries`, the first in the low byte) and as sparse
 * gaps (`gaps`), their signs (`negative`, bit i for nonzero i), how many
 * there are, and the zeros after the last one (`trail`; 5 when none, and
 * then keep_run is all ones: the run goes on). Bytes >= 243 are invalid and
 * look like five zeros. */
typedef struct {
    uint64_t entries, gaps, keep_run;
    uint8_t count, trail, negative, valid;
} obx_base3_runs;
void obx_base3_runs_table(obx_base3_runs table[256]);

/* Writes value as LEB128 at out, returns its length. */
static inline size_t obx_write_varint(uint8_t *out, uint64_t value)
{
    size_t i = 0;
    while (value >= 0x80) {
        out[i++] = (uint8_t)(value | 0x80);
        value >>= 7;
    }
    out[i++] = (uint8_t)value;
    return i;
}

#endif
