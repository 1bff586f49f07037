/* The stream storage formats: variable-length encodings of a whole ternary
 * tensor that sessions decode to base3 rows (formats.h) once, when they are
 * created, before prepacking; so a stream format changes file size, never
 * inference speed. Their layouts are in their own headers:
 *   OBX_STREAM_RANS       "rans":     rans.h, base3 bytes entropy-coded
 *   OBX_STREAM_ZERO_RUNS  "zeroruns": zero_runs.h, zero-run lengths + signs
 *   OBX_STREAM_SPARSE     "sparse":   sparse.h, per-row positions + sign bits
 *
 * This header is parsed by cffi: keep declarations free of macros. */
#ifndef ONNXBIT_STREAMS_H
#define ONNXBIT_STREAMS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { OBX_STREAM_RANS = 0, OBX_STREAM_ZERO_RUNS = 1, OBX_STREAM_SPARSE = 2, OBX_STREAM_COUNT = 3 };

/* "rans", "zeroruns", "sparse"; NULL for an unknown id. */
const char *obx_stream_name(int stream);
/* The id whose name is exactly the len bytes at name, or -1. */
int obx_stream_from_name(const char *name, size_t len);
/* Decodes a stream of len bytes holding n rows of k codes into
 * n * obx_packed_row_bytes(OBX_FMT_BASE3, k) base3 bytes; 0 on success, -1
 * with a message in err for a malformed, truncated or corrupt stream. */
int obx_stream_decode_base3(int stream, const uint8_t *data, size_t len, size_t n, size_t k,
                            uint8_t *base3_out, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
