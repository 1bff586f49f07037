/* The "sparse" storage format: compressed sparse rows of a ternary tensor,
 * for mostly-zero (pruned) tensors: each row's nonzero positions as
 * delta-coded varints, their signs as one bit each. Storage only: sessions
 * decode it to base3 rows (formats.h) before prepacking.
 *
 * Layout, over the N rows of K codes (W^T, as the row formats hold it):
 *   u8      version = 1
 *   varint  nonzeros: codes that are not 0, in all rows
 *   u8      signs[ceil(nonzeros / 8)]: bit i % 8 (least significant first)
 *           of byte i / 8 is 1 when nonzero i (rows in order, columns
 *           ascending) is -1; the bits past the last nonzero are 0
 *   per row: varint count (its nonzeros), then count varints: the first
 *           nonzero's column, then each next column minus the previous
 *           one minus 1 (so a gap is the zeros between them)
 * Varints are unsigned LEB128, at most 9 bytes. Signs come first so one
 * pass over the rows places every code. The decoder rejects an unknown
 * version, truncated or overlong varints, a column past K, row counts that
 * do not add up to nonzeros, set padding bits and bytes after the last row:
 * a corrupt or truncated stream is an error, never garbage or a read out of
 * bounds. Versus "zeroruns": one byte per nonzero for gaps up to 127 zeros
 * (zeroruns: up to 63) plus a sign bit and a count per row, so it is the
 * smaller of the two at about 99 % zeros on long rows (measured: 64 x 2048
 * at 99 %); zeroruns is smaller on denser tensors and short rows.
 *
 * This header is parsed by cffi: keep declarations free of macros. */
#ifndef ONNXBIT_SPARSE_H
#define ONNXBIT_SPARSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Decodes a stream of len bytes into n rows of k codes as base3 rows
 * (obx_packed_row_bytes(OBX_FMT_BASE3, k) bytes each); 0 on success, -1 with
 * a message in err for any malformed stream. */
int obx_sparse_decode_base3(const uint8_t *stream, size_t len, size_t n, size_t k,
                            uint8_t *base3_out, char *err, size_t err_len);
/* Largest stream obx_sparse_encode_base3 writes for n rows of k codes. */
size_t obx_sparse_max_bytes(size_t n, size_t k);
/* Encodes n base3 rows of k codes; returns the bytes written to out (which
 * holds at least obx_sparse_max_bytes), or 0 with a message in err for an
 * invalid base3 byte or shape. */
size_t obx_sparse_encode_base3(const uint8_t *base3, size_t n, size_t k, uint8_t *out,
                               size_t out_cap, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
