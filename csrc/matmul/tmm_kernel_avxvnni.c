/* AVX-VNNI refinement of the AVX2 level (Alder Lake and later, Zen 5):
 * vpdpbusd multiplies the unsigned codes u in {0,1,2} by the signed
 * activations and adds groups of four straight into int32 lanes, so the int16
 * stage and its widening of the plain AVX2 kernel disappear. Layout and chunk
 * walk are those of tmm_kernel_avx2.c; the float path and the quantizer are
 * shared with it. */
#include <immintrin.h>

#include "obx_common.h"
#include "tmm_internal.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

static ALWAYS_INLINE uint32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return (uint32_t)_mm_cvtsi128_si32(s);
}

static ALWAYS_INLINE void i8_tile(const uint8_t *panel, const int8_t *const *q, size_t c0,
                                  size_t c1, int ROWS, int COLS, int col0, uint32_t *usum) {
    const __m256i mask = _mm256_set1_epi8(3);
    __m256i acc[4][8];
    for (int i = 0; i < ROWS; i++)
        for (int r = 0; r < COLS; r++) acc[i][r] = _mm256_setzero_si256();
    size_t c = c0;
    while (c < c1) {
        const uint8_t *block = panel + (c / 4) * TMM_NR * 32;
        size_t qoff = (c - c0) * TMM_CHUNK;
        if ((c % 4 == 0) && (c + 4 <= c1)) {
            for (int r = 0; r < COLS; r++) {
                /* As the AVX-512 kernel (tmm_internal.h, TMM_CODE_PREFETCH). */
                _mm_prefetch((const char *)(block + (col0 + r) * 32 + TMM_CODE_PREFETCH),
                             _MM_HINT_T0);
                __m256i bits = _mm256_load_si256((const __m256i *)(block + (col0 + r) * 32));
                for (int s = 0; s < 4; s++) {
                    __m256i u = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * s), mask);
                    for (int i = 0; i < ROWS; i++) {
                        __m256i qv = _mm256_load_si256((const __m256i *)(q[i] + qoff + s * 32));
                        acc[i][r] = _mm256_dpbusd_avx_epi32(acc[i][r], u, qv);
                    }
                }
            }
            c += 4;
        } else {
            __m128i shift = _mm_cvtsi32_si128(2 * (int)(c % 4));
            for (int r = 0; r < COLS; r++) {
                __m256i bits = _mm256_load_si256((const __m256i *)(block + (col0 + r) * 32));
                __m256i u = _mm256_and_si256(_mm256_srl_epi16(bits, shift), mask);
                for (int i = 0; i < ROWS; i++) {
                    __m256i qv = _mm256_load_si256((const __m256i *)(q[i] + qoff));
                    acc[i][r] = _mm256_dpbusd_avx_epi32(acc[i][r], u, qv);
                }
            }
            c += 1;
        }
    }
    for (int i = 0; i < ROWS; i++)
        for (int r = 0; r < COLS; r++) usum[i * TMM_NR + col0 + r] = hsum_epi32(acc[i][r]);
}

static void i8_kernel_avxvnni(const uint8_t *panel, size_t kblocks, size_t rows,
                              const int8_t *const *q, size_t chunk_begin, size_t chunk_end,
                              uint32_t *usum) {
    (void)kblocks;
    switch (rows) {
    case 1: i8_tile(panel, q, chunk_begin, chunk_end, 1, 8, 0, usum); break;
    case 2:
        for (int col0 = 0; col0 < TMM_NR; col0 += 4)
            i8_tile(panel, q, chunk_begin, chunk_end, 2, 4, col0, usum);
        break;
    case 3:
        for (int col0 = 0; col0 < TMM_NR; col0 += 2)
            i8_tile(panel, q, chunk_begin, chunk_end, 3, 2, col0, usum);
        break;
    default:
        for (int col0 = 0; col0 < TMM_NR; col0 += 2)
            i8_tile(panel, q, chunk_begin, chunk_end, 4, 2, col0, usum);
        break;
    }
}

const struct tmm_kernels tmm_kernels_avxvnni = {
    .i8 = i8_kernel_avxvnni,
    .f32 = tmm_f32_kernel_avx2,
    .quantize = tmm_quantize_row_avx2,
    /* The AVX2 grouped kernel: these CPUs run it, and it is the tested one. */
    .i8_groups = tmm_i8_groups_avx2,
    .f32_decode = tmm_f32_decode_avx2,
    .f32_dot = tmm_f32_dot_avx2,
    .f32_scaled = tmm_f32_scaled_avx2,
    .f32_decode_scaled = tmm_f32_decode_scaled_avx2,
    .f32_gemm_decode = tmm_f32_gemm_decode_avx2,
    .f32_gemm = tmm_f32_gemm_avx2,
    .f32_gemm_lanes = 8,
    .f32_gemm_width = 16,
};
