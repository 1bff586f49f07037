/* AVX2 tile gather for the column path: 8x8 float blocks transposed in
 * registers (unpack, shuffle, lane permute); edges are copied one by one. */
#include <immintrin.h>

#include "codec_columns.h"

/* Rows i0..i0+7 of columns c0..c0+7 -> eight 8-float runs of the tile. */
static inline void transpose_8x8(const float *src, size_t stride, float *dst) {
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + stride);
    __m256 r2 = _mm256_loadu_ps(src + 2 * stride), r3 = _mm256_loadu_ps(src + 3 * stride);
    __m256 r4 = _mm256_loadu_ps(src + 4 * stride), r5 = _mm256_loadu_ps(src + 5 * stride);
    __m256 r6 = _mm256_loadu_ps(src + 6 * stride), r7 = _mm256_loadu_ps(src + 7 * stride);
    /* pairs of rows interleaved: columns {0,1,4,5} and {2,3,6,7} */
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    /* four rows of one column in each 128-bit lane: column c | column c + 4 */
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_store_ps(dst + 0 * OBX_COLS_CHUNK, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_store_ps(dst + 1 * OBX_COLS_CHUNK, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_store_ps(dst + 2 * OBX_COLS_CHUNK, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_store_ps(dst + 3 * OBX_COLS_CHUNK, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_store_ps(dst + 4 * OBX_COLS_CHUNK, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_store_ps(dst + 5 * OBX_COLS_CHUNK, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_store_ps(dst + 6 * OBX_COLS_CHUNK, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_store_ps(dst + 7 * OBX_COLS_CHUNK, _mm256_permute2f128_ps(u3, u7, 0x31));
}

void obx_cols_gather_avx2(const float *w, size_t stride, size_t rows, size_t cols, float *tile) {
    size_t rows8 = rows - rows % 8, cols8 = cols - cols % 8;
    /* both halves of a 16-float row before moving on: the line is still in L1 */
    for (size_t i0 = 0; i0 < rows8; i0 += 8)
        for (size_t c0 = 0; c0 < cols8; c0 += 8)
            transpose_8x8(w + i0 * stride + c0, stride, tile + c0 * OBX_COLS_CHUNK + i0);
    for (size_t i = rows8; i < rows; i++)
        for (size_t c = 0; c < cols8; c++) tile[c * OBX_COLS_CHUNK + i] = w[i * stride + c];
    for (size_t c = cols8; c < cols; c++)
        for (size_t i = 0; i < rows; i++) tile[c * OBX_COLS_CHUNK + i] = w[i * stride + c];
}
