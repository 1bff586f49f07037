/* The "zeroruns" storage format: ternary weights as the lengths of the zero
 * runs between nonzero codes, for mostly-zero (pruned) tensors. Storage only:
 * sessions decode it to base3 rows (formats.h) before prepacking, so it
 * never slows inference.
 *
 * Layout: the N rows of K codes (W^T, as the row formats hold it) read as
 * one sequence of N * K codes, row after row.
 *   u8      version = 1
 *   varint  nonzeros: how many codes are not 0
 *   varint  per nonzero, in order: (zeros before it << 1) | (code is -1),
 *           the zeros counted since the previous nonzero (or the start)
 * Every code after the last nonzero is 0. A varint is unsigned LEB128 (7
 * bits a byte, least significant group first, high bit = more follows), at
 * most 9 bytes. The decoder rejects an unknown version, a varint that runs
 * past the end or is too long, a run that goes past N * K codes, and bytes
 * left after the last nonzero: a corrupt or truncated stream is an error,
 * never garbage or a read out of bounds.
 *
 * This header is parsed by cffi: keep declarations free of macros. */
#ifndef ONNXBIT_ZERO_RUNS_H
#define ONNXBIT_ZERO_RUNS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Decodes a stream of len bytes into n rows of k codes as base3 rows
 * (obx_packed_row_bytes(OBX_FMT_BASE3, k) bytes each) at base3_out; 0 on
 * success, -1 with a message in err for any malformed stream. */
int obx_zero_runs_decode_base3(const uint8_t *stream, size_t len, size_t n, size_t k,
                               uint8_t *base3_out, char *err, size_t err_len);
/* Largest stream obx_zero_runs_encode_base3 writes for n rows of k codes. */
size_t obx_zero_runs_max_bytes(size_t n, size_t k);
/* Encodes n base3 rows of k codes; returns the bytes written to out (which
 * holds at least obx_zero_runs_max_bytes), or 0 with a message in err for an
 * invalid base3 byte or shape. */
size_t obx_zero_runs_encode_base3(const uint8_t *base3, size_t n, size_t k, uint8_t *out,
                                  size_t out_cap, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
