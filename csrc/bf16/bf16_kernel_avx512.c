/* AVX-512 tile kernel of the bfloat16 matmul: one 512-bit load is a panel
 * step, two float32 vectors of 16 columns (shift, mask). Each output is one
 * vfmadd chain in k order, as the scalar kernel's fmaf; enough independent
 * chains hide the FMA latency: 1 row x 4 panels, or 2..6 rows x 2 (24
 * accumulators, the most the 32 registers hold beside four weight vectors). */
#include <immintrin.h>

#include "bf16/bf16_internal.h"

static inline __attribute__((always_inline)) void
tile(const uint32_t *panel0, size_t panel_stride, size_t k, const float *a, size_t lda,
     float *out, const int rows, const int panels) {
    const __m512i high_mask = _mm512_set1_epi32((int)0xFFFF0000u);
    __m512 acc[8][8];
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < 2 * panels; v++)
            acc[r][v] = _mm512_loadu_ps(out + r * BF16_QUAD_COLS + v * 16);
    for (size_t i = 0; i < k; i++) {
        __m512 w[8];
        for (int p = 0; p < panels; p++) {
            __m512i x = _mm512_load_si512(panel0 + p * panel_stride + i * BF16_PANEL_WORDS);
            w[2 * p] = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
            w[2 * p + 1] = _mm512_castsi512_ps(_mm512_and_si512(x, high_mask));
        }
        for (int r = 0; r < rows; r++) {
            __m512 av = _mm512_set1_ps(a[r * lda + i]);
            for (int v = 0; v < 2 * panels; v++) acc[r][v] = _mm512_fmadd_ps(av, w[v], acc[r][v]);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < 2 * panels; v++)
            _mm512_storeu_ps(out + r * BF16_QUAD_COLS + v * 16, acc[r][v]);
}

/* The quad's 4 panels in groups the row count keeps enough chains for. */
#define PANEL_GROUPS(rows, panels)                                                               \
    for (int p = 0; p < BF16_QUAD_PANELS; p += panels)                                           \
        tile(quad + p * panel_stride, panel_stride, k, a, lda, out + p * BF16_PANEL_COLS, rows,   \
             panels)

static void quad_avx512(const uint32_t *quad, size_t panel_stride, size_t k, const float *a,
                        size_t lda, size_t rows, float *out) {
    switch (rows) {
    case 1: PANEL_GROUPS(1, 4); break;
    case 2: PANEL_GROUPS(2, 2); break;
    case 3: PANEL_GROUPS(3, 2); break;
    case 4: PANEL_GROUPS(4, 2); break;
    case 5: PANEL_GROUPS(5, 2); break;
    default: PANEL_GROUPS(6, 2); break;
    }
}

const struct bf16_kernels bf16_kernels_avx512 = {quad_avx512, 6};
