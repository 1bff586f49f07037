/* NEON tile kernel of the bfloat16 matmul: a panel step is four 128-bit
 * loads, eight float32 vectors of 4 columns (shift, mask): words 4h..4h+3
 * give columns 4h..4h+3 and 16+4h..19+4h. Each output is one vfmaq chain in
 * k order (fused, as the scalar kernel's fmaf); 1..2 rows x 1 panel keep 8-16
 * chains in the 32 registers. */
#include <arm_neon.h>

#include "bf16/bf16_internal.h"

static inline __attribute__((always_inline)) void
tile(const uint32_t *panel, size_t k, const float *a, size_t lda, float *out, const int rows) {
    const uint32x4_t high_mask = vdupq_n_u32(0xFFFF0000u);
    float32x4_t acc[2][8];
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < 4; h++) {
            acc[r][2 * h] = vld1q_f32(out + r * BF16_QUAD_COLS + 4 * h);
            acc[r][2 * h + 1] = vld1q_f32(out + r * BF16_QUAD_COLS + 16 + 4 * h);
        }
    for (size_t i = 0; i < k; i++) {
        float32x4_t w[8];
        for (int h = 0; h < 4; h++) {
            uint32x4_t x = vld1q_u32(panel + i * BF16_PANEL_WORDS + 4 * h);
            w[2 * h] = vreinterpretq_f32_u32(vshlq_n_u32(x, 16));
            w[2 * h + 1] = vreinterpretq_f32_u32(vandq_u32(x, high_mask));
        }
        for (int r = 0; r < rows; r++) {
            float32x4_t av = vdupq_n_f32(a[r * lda + i]);
            for (int v = 0; v < 8; v++) acc[r][v] = vfmaq_f32(acc[r][v], av, w[v]);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < 4; h++) {
            vst1q_f32(out + r * BF16_QUAD_COLS + 4 * h, acc[r][2 * h]);
            vst1q_f32(out + r * BF16_QUAD_COLS + 16 + 4 * h, acc[r][2 * h + 1]);
        }
}

static void quad_neon(const uint32_t *quad, size_t panel_stride, size_t k, const float *a,
                      size_t lda, size_t rows, float *out) {
    for (int p = 0; p < BF16_QUAD_PANELS; p++) {
        if (rows == 1)
            tile(quad + p * panel_stride, k, a, lda, out + p * BF16_PANEL_COLS, 1);
        else
            tile(quad + p * panel_stride, k, a, lda, out + p * BF16_PANEL_COLS, 2);
    }
}

const struct bf16_kernels bf16_kernels_neon = {quad_neon, 2};
