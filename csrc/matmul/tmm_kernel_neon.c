/* AArch64 NEON kernels (baseline Armv8-A, no dot-product extension needed;
 * tmm_kernel_neon_dotprod.c refines the integer kernel where SDOT exists).
 *
 * Integer path: per 16 codes, a variable shift and a mask give u in {0,1,2};
 * vmull_s8 + vmlal_high_s8 add two products into each int16 lane
 * (|u0 q0 + u1 q1| <= 2 * 2 * 128 = 512, no overflow) and vpadalq_s16 widens
 * pairs into int32 right away. Float path: u is widened to 32 bits and
 * converted, w = u - 1 is exactly -1, 0 or 1, so the multiply keeps IEEE
 * semantics (Inf * 0 = NaN). The quantizer is the scalar one. */
#if defined(__aarch64__)
#include <arm_neon.h>

#include "obx_common.h"
#include "tmm_internal.h"

static void i8_kernel_neon(const uint8_t *panel, size_t kblocks, size_t rows,
                           const int8_t *const *q, size_t chunk_begin, size_t chunk_end,
                           uint32_t *usum) {
    (void)kblocks;
    const uint8x16_t mask = vdupq_n_u8(3);
    for (size_t r = 0; r < TMM_NR; r++) {
        int32x4_t acc[TMM_MR];
        for (size_t i = 0; i < rows; i++) acc[i] = vdupq_n_s32(0);
        for (size_t c = chunk_begin; c < chunk_end; c++) {
            const uint8_t *codes = panel + ((c / 4) * TMM_NR + r) * 32;
            /* A negative count shifts right. */
            const int8x16_t shift = vdupq_n_s8((int8_t)(-2 * (int)(c % 4)));
            const size_t qoff = (c - chunk_begin) * TMM_CHUNK;
            for (size_t h = 0; h < 2; h++) {
                int8x16_t u = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(vld1q_u8(codes + 16 * h), shift), mask));
                for (size_t i = 0; i < rows; i++) {
                    int8x16_t qv = vld1q_s8(q[i] + qoff + 16 * h);
                    int16x8_t pairs = vmull_s8(vget_low_s8(u), vget_low_s8(qv));
                    pairs = vmlal_high_s8(pairs, u, qv);
                    acc[i] = vpadalq_s16(acc[i], pairs);
                }
            }
        }
        for (size_t i = 0; i < rows; i++)
            usum[i * TMM_NR + r] = (uint32_t)vaddvq_s32(acc[i]);
    }
}

void tmm_f32_kernel_neon(const uint8_t *panel, size_t kblocks, size_t rows,
                            const float *const *a, size_t chunk_begin, size_t chunk_end,
                            float *sums) {
    (void)kblocks;
    const uint8x16_t mask = vdupq_n_u8(3);
    const float32x4_t one = vdupq_n_f32(1.0f);
    for (size_t r = 0; r < TMM_NR; r++) {
        float32x4_t acc[TMM_MR];
        for (size_t i = 0; i < rows; i++) acc[i] = vdupq_n_f32(0.0f);
        for (size_t c = chunk_begin; c < chunk_end; c++) {
            const uint8_t *codes = panel + ((c / 4) * TMM_NR + r) * 32;
            const int8x16_t shift = vdupq_n_s8((int8_t)(-2 * (int)(c % 4)));
            const size_t aoff = (c - chunk_begin) * TMM_CHUNK;
            for (size_t h = 0; h < 2; h++) {
                uint8x16_t u = vandq_u8(vshlq_u8(vld1q_u8(codes + 16 * h), shift), mask);
                uint16x8_t lo = vmovl_u8(vget_low_u8(u)), hi = vmovl_high_u8(u);
                float32x4_t w[4];
                w[0] = vsubq_f32(vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo))), one);
                w[1] = vsubq_f32(vcvtq_f32_u32(vmovl_high_u16(lo)), one);
                w[2] = vsubq_f32(vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi))), one);
                w[3] = vsubq_f32(vcvtq_f32_u32(vmovl_high_u16(hi)), one);
                for (size_t i = 0; i < rows; i++) {
                    const float *ap = a[i] + aoff + 16 * h;
                    for (size_t v = 0; v < 4; v++)
                        acc[i] = vfmaq_f32(acc[i], vld1q_f32(ap + 4 * v), w[v]);
                }
            }
        }
        for (size_t i = 0; i < rows; i++) sums[i * TMM_NR + r] = vaddvq_f32(acc[i]);
    }
}

/* ---- float GEMM (TMM_PATH_F32_GEMM) --------------------------------------- */

void tmm_f32_gemm_decode_neon(const uint8_t *block, float *wdec) {
    const uint8x16_t mask = vdupq_n_u8(3);
    const float32x4_t one = vdupq_n_f32(1.0f);
    for (size_t r = 0; r < TMM_NR; r++)
        for (int s = 0; s < 4; s++) {
            const int8x16_t shift = vdupq_n_s8((int8_t)(-2 * s));
            for (size_t h = 0; h < 2; h++) {
                uint8x16_t u = vandq_u8(vshlq_u8(vld1q_u8(block + r * 32 + 16 * h), shift), mask);
                uint16x8_t lo = vmovl_u8(vget_low_u8(u)), hi = vmovl_high_u8(u);
                float *out = wdec + r * TMM_KBLOCK + 32 * s + 16 * h;
                vst1q_f32(out, vsubq_f32(vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo))), one));
                vst1q_f32(out + 4, vsubq_f32(vcvtq_f32_u32(vmovl_high_u16(lo)), one));
                vst1q_f32(out + 8, vsubq_f32(vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi))), one));
                vst1q_f32(out + 12, vsubq_f32(vcvtq_f32_u32(vmovl_high_u16(hi)), one));
            }
        }
}

/* VECS vectors of four rows by the panel's eight columns: 8 VECS of the 32
 * registers accumulate; vfmaq_n_f32 is one fused multiply-add per lane. */
static inline __attribute__((always_inline)) void f32_gemm_tile(const float *wdec, const float *at,
                                                                size_t width, float *acc, int VECS) {
    float32x4_t c[TMM_NR][3];
    for (int r = 0; r < TMM_NR; r++)
        for (int v = 0; v < VECS; v++) c[r][v] = vld1q_f32(acc + r * width + 4 * v);
    for (size_t t = 0; t < TMM_KBLOCK; t++) {
        float32x4_t a[3];
        for (int v = 0; v < VECS; v++) a[v] = vld1q_f32(at + t * width + 4 * v);
        for (int r = 0; r < TMM_NR; r++) {
            float w = wdec[r * TMM_KBLOCK + t];
            for (int v = 0; v < VECS; v++) c[r][v] = vfmaq_n_f32(c[r][v], a[v], w);
        }
    }
    for (int r = 0; r < TMM_NR; r++)
        for (int v = 0; v < VECS; v++) vst1q_f32(acc + r * width + 4 * v, c[r][v]);
}

void tmm_f32_gemm_neon(const float *wdec, const float *at, size_t width, float *acc) {
    switch (width / 4) {
    case 1: f32_gemm_tile(wdec, at, width, acc, 1); break;
    case 2: f32_gemm_tile(wdec, at, width, acc, 2); break;
    default: f32_gemm_tile(wdec, at, width, acc, 3); break;
    }
}

const struct tmm_kernels tmm_kernels_neon = {
    .i8 = i8_kernel_neon,
    .f32 = tmm_f32_kernel_neon,
    .quantize = tmm_quantize_row_scalar,
    .f32_gemm_decode = tmm_f32_gemm_decode_neon,
    .f32_gemm = tmm_f32_gemm_neon,
    .f32_gemm_lanes = 4,
    .f32_gemm_width = 12,
};
#endif
