/* Ternary weight codecs: packing into and out of the formats of formats.h.
 *
 * A 2-D tensor is packed row by row; each row starts on a byte boundary and
 * the tail of its last byte is padding (code 0 / digit 0), ignored on decode.
 *
 * Invalid data is reported, never decoded into silent garbage: decoders return
 * the number of invalid codes (2bit: 2-bit fields equal to 3 inside the row;
 * base3: bytes >= 243) and store the element offset of the first one in
 * *first_bad (row-major over the whole tensor; base3 names the first element of
 * the bad byte). Elements decoded from an invalid code get the value 0.
 * Encoders return the number of inputs outside {-1,0,1} the same way and pack
 * each of them as the value 0.
 *
 * This header is parsed by cffi: keep declarations free of macros. */
#ifndef ONNXBIT_CODEC_H
#define ONNXBIT_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "onnxbit/formats.h"

#ifdef __cplusplus
extern "C" {
#endif

/* rows x k int8 values in {-1,0,1} -> rows * obx_packed_row_bytes(fmt, k) bytes. */
int64_t obx_encode_i8(int fmt, const int8_t *w, size_t rows, size_t k, uint8_t *out,
                      size_t *first_bad);
/* Packed rows -> rows x k int8 values in {-1,0,1}. */
int64_t obx_decode_i8(int fmt, const uint8_t *packed, size_t rows, size_t k, int8_t *out,
                      size_t *first_bad);
/* Packed rows -> rows x k float32 values w * scale[r] (n_scales is 1 or rows). */
int64_t obx_decode_f32(int fmt, const uint8_t *packed, size_t rows, size_t k,
                       const float *scales, size_t n_scales, float *out, size_t *first_bad);

/* Fused BitNet-style quantize + pack of float weights, one pass over the input:
 * q = clip(round_half_even(w * inv_scale[r]), -1, 1), packed in fmt
 * (n_inv_scales is 1 or rows). Returns the number of non-finite inputs
 * (first one in *first_bad); they are packed as the value 0. */
int64_t obx_ternarize_pack_f32(int fmt, const float *w, size_t rows, size_t k,
                               const float *inv_scales, size_t n_inv_scales, uint8_t *out,
                               size_t *first_bad);
/* Sum of |w| over each row, accumulated in double (for absmean scales);
 * out has `rows` entries. */
void obx_abs_sum_rows_f32(const float *w, size_t rows, size_t k, double *out);

/* Column path for weights stored [k, n] row-major (ONNX MatMul W, reduction
 * axis first), packed as the rows of W^T without a transposed copy.
 * out receives n rows of obx_packed_row_bytes(fmt, k) bytes; row j holds
 * column j: q = clip(round_half_even(w[i, j] * inv_scales[j]), -1, 1)
 * (n_inv_scales is 1 or n), the same float32 arithmetic and bytes as
 * obx_ternarize_pack_f32 on the transposed copy. Returns the number of
 * non-finite inputs, packed as the value 0; *first_bad gets the smallest
 * row-major index i * n + j among them (an index into w, not into W^T).
 * -1 for bad arguments or when its 160 KB work buffer cannot be allocated. */
int64_t obx_ternarize_pack_cols_f32(int fmt, const float *w, size_t k, size_t n,
                                    const float *inv_scales, size_t n_inv_scales, uint8_t *out,
                                    size_t *first_bad);
/* Sum of |w| over each column of a [k, n] row-major matrix, in double and in
 * the order of obx_abs_sum_rows_f32 (bit-identical to it on W^T); out has
 * `n` entries. */
void obx_abs_sum_cols_f32(const float *w, size_t k, size_t n, double *out);

#ifdef __cplusplus
}
#endif
#endif
