/* The reference tile kernel of the bfloat16 matmul: plain fmaf chains, one
 * per output, in k order; the SIMD kernels must give these bits. */
#include <math.h>

#include "bf16/bf16_internal.h"

static void quad_scalar(const uint32_t *quad, size_t panel_stride, size_t k, const float *a,
                        size_t lda, size_t rows, float *out) {
    for (size_t r = 0; r < rows; r++) {
        const float *row = a + r * lda;
        float *acc = out + r * BF16_QUAD_COLS;
        for (size_t p = 0; p < BF16_QUAD_PANELS; p++) {
            const uint32_t *panel = quad + p * panel_stride;
            float *lo = acc + p * BF16_PANEL_COLS, *hi = lo + BF16_PANEL_WORDS;
            for (size_t i = 0; i < k; i++) {
                const uint32_t *step = panel + i * BF16_PANEL_WORDS;
                for (size_t j = 0; j < BF16_PANEL_WORDS; j++) {
                    lo[j] = fmaf(row[i], bf16_low(step[j]), lo[j]);
                    hi[j] = fmaf(row[i], bf16_high(step[j]), hi[j]);
                }
            }
        }
    }
}

const struct bf16_kernels bf16_kernels_scalar = {quad_scalar, 1};
