/* AVX2 tile kernel of the bfloat16 matmul: a panel step is two 256-bit
 * loads, four float32 vectors of 8 columns (shift, mask): words 0-7 give
 * columns 0-7 and 16-23, words 8-15 columns 8-15 and 24-31. Each output is
 * one vfmadd chain in k order, as the scalar kernel's fmaf; 1 row x 2 panels
 * or 2..3 rows x 1 keep 8-12 chains in the 16 registers. */
#include <immintrin.h>

#include "bf16/bf16_internal.h"

static inline __attribute__((always_inline)) void
tile(const uint32_t *panel0, size_t panel_stride, size_t k, const float *a, size_t lda,
     float *out, const int rows, const int panels) {
    /* Vector v of panel p covers columns p * 32 + offset[v]. */
    static const int offset[4] = {0, 16, 8, 24};
    const __m256i high_mask = _mm256_set1_epi32((int)0xFFFF0000u);
    __m256 acc[3][8];
    for (int r = 0; r < rows; r++)
        for (int p = 0; p < panels; p++)
            for (int v = 0; v < 4; v++)
                acc[r][4 * p + v] = _mm256_loadu_ps(out + r * BF16_QUAD_COLS + p * 32 + offset[v]);
    for (size_t i = 0; i < k; i++) {
        __m256 w[8];
        for (int p = 0; p < panels; p++) {
            const uint32_t *step = panel0 + p * panel_stride + i * BF16_PANEL_WORDS;
            for (int h = 0; h < 2; h++) {
                __m256i x = _mm256_load_si256((const __m256i *)(step + 8 * h));
                w[4 * p + 2 * h] = _mm256_castsi256_ps(_mm256_slli_epi32(x, 16));
                w[4 * p + 2 * h + 1] = _mm256_castsi256_ps(_mm256_and_si256(x, high_mask));
            }
        }
        for (int r = 0; r < rows; r++) {
            __m256 av = _mm256_broadcast_ss(a + r * lda + i);
            for (int v = 0; v < 4 * panels; v++) acc[r][v] = _mm256_fmadd_ps(av, w[v], acc[r][v]);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int p = 0; p < panels; p++)
            for (int v = 0; v < 4; v++)
                _mm256_storeu_ps(out + r * BF16_QUAD_COLS + p * 32 + offset[v], acc[r][4 * p + v]);
}

#define PANEL_GROUPS(rows, panels)                                                               \
    for (int p = 0; p < BF16_QUAD_PANELS; p += panels)                                           \
        tile(quad + p * panel_stride, panel_stride, k, a, lda, out + p * BF16_PANEL_COLS, rows,   \
             panels)

static void quad_avx2(const uint32_t *quad, size_t panel_stride, size_t k, const float *a,
                      size_t lda, size_t rows, float *out) {
    switch (rows) {
    case 1: PANEL_GROUPS(1, 2); break;
    case 2: PANEL_GROUPS(2, 1); break;
    default: PANEL_GROUPS(3, 1); break;
    }
}

const struct bf16_kernels bf16_kernels_avx2 = {quad_avx2, 3};
