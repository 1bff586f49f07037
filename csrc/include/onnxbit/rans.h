/* The "rans" storage format: base3 rows (formats.h) entropy-coded with rANS,
 * for ternary tensors whose codes are skewed (pruned or sparsity-trained
 * weights: far more zeros than a third). Symbols are whole base3 bytes (five
 * weights each, 243 values), coded with one static frequency table per
 * tensor; rows are grouped in blocks with independent streams, so blocks
 * decode in parallel too.
 *
 * Layout (little-endian):
 *   u8  version = 1
 *   u16 block_rows (>= 1)
 *   u16 freq[243]           frequencies summing to 2^14 (0 = symbol absent)
 *   u32 end[blocks]         end offset of each block's stream in the payload
 *                           (blocks = ceil(N / block_rows), non-decreasing,
 *                           the last one the payload's length)
 *   payload: per block, the four 32-bit final encoder states (symbol i of
 *   the block goes through state i % 4: independent chains a CPU decodes
 *   in parallel), then the renormalised bytes in decoding order; the
 *   block's symbols are its rows' base3 bytes.
 * Every state must start in [2^23, 2^31), and decoding must end every block
 * with all four states back at the encoder's initial 2^23 and its bytes used
 * up exactly: corrupt streams are caught there, not turned into garbage.
 *
 * This header is parsed by cffi: keep declarations free of macros. */
#ifndef ONNXBIT_RANS_H
#define ONNXBIT_RANS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest stream obx_rans_encode_base3 can write for n rows of row_bytes. */
size_t obx_rans_max_bytes(size_t n, size_t row_bytes, size_t block_rows);
/* Encodes n rows of row_bytes base3 bytes (each < 243); returns the bytes
 * written to out, or 0 with a message in err. */
size_t obx_rans_encode_base3(const uint8_t *base3, size_t n, size_t row_bytes,
                             size_t block_rows, uint8_t *out, size_t out_cap, char *err,
                             size_t err_len);
/* Decodes a stream of len bytes into n * row_bytes base3 bytes; 0 on
 * success, -1 with a message in err for any malformed or corrupt stream. */
int obx_rans_decode_base3(const uint8_t *stream, size_t len, size_t n, size_t row_bytes,
                          uint8_t *base3_out, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
