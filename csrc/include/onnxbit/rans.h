/* The "rans" storage format: base3 rows (formats.h) entropy-coded with rANS,
 * for ternary tensors whose codes are skewed (pruned or sparsity-trained
 * weights: far more zeros than a third), and within 1.5 % of the order-0
 * entropy of the codes for any mix on 1M-weight tensors. Symbols are whole base3 bytes
 * (five weights each, 243 values); their probabilities come from a model of
 * two numbers, the counts of -1 and +1 codes, so it costs a few bytes even
 * for small tensors. Rows are grouped in blocks with independent streams,
 * so blocks decode in parallel too.
 *
 * Layout (varints are unsigned LEB128, at most 9 bytes; integers little-endian):
 *   u8     version = 2
 *   u8     tail: K mod 5, the codes in a row's last byte (0: five)
 *   varint block_rows (>= 1)
 *   varint minus, plus: how many of the N * K codes are -1 and +1
 *   varint length[blocks]   bytes of each block (blocks = ceil(N / block_rows))
 *   per block, the four 32-bit final encoder states (symbol i of the block
 *   goes through state i % 4: independent chains a CPU decodes in
 *   parallel), then the renormalised bytes in decoding order; the block's
 *   symbols are its rows' base3 bytes.
 * The model, in integers (onnxbit/reference/rans.py does the same): digit d
 * = code + 1 gets q_d = max(1, round(count_d * 2^31 / codes)), or 0 when
 * count_d is 0; a byte's weight is the product of its digits' q (each
 * product >> 31, at least 1 while no factor is 0), where a row's last byte
 * multiplies only its `tail` code digits and needs its padding digits to be
 * 0 (so it has its own table); weights scale to 16-bit frequencies summing
 * to 2^16 (floor, at least 1, the largest absorbing the rest).
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

/* Largest stream obx_rans_encode_base3 can write for n rows of k codes
 * (block_rows 0: blocks of about 64 KiB of base3 bytes). */
size_t obx_rans_max_bytes(size_t n, size_t k, size_t block_rows);
/* Encodes n base3 rows of k codes (bytes < 243, padding digits 0); returns
 * the bytes written to out, or 0 with a message in err. */
size_t obx_rans_encode_base3(const uint8_t *base3, size_t n, size_t k, size_t block_rows,
                             uint8_t *out, size_t out_cap, char *err, size_t err_len);
/* Decodes a stream of len bytes into n * row_bytes base3 bytes; 0 on
 * success, -1 with a message in err for any malformed or corrupt stream. */
int obx_rans_decode_base3(const uint8_t *stream, size_t len, size_t n, size_t row_bytes,
                          uint8_t *base3_out, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
