/* AArch64 NEON with the dot-product extension (Armv8.2-A FEAT_DotProd:
 * Cortex-A55/A75 and later, Neoverse, Apple M1). The refinement of the NEON
 * level that AVX-VNNI is of AVX2: platform.c picks it at run time when
 * HWCAP_ASIMDDP says the CPU has SDOT, so the rest of the library stays
 * baseline Armv8-A. SDOT multiplies four int8 pairs and adds them straight
 * into an int32 lane, so the int16 stage and the pairwise widening of the
 * plain NEON kernel disappear. The codes u = w + 1 are 0, 1 or 2, valid as
 * signed bytes. Integer sums wrap modulo 2^32 as the contract allows, so the
 * result equals the scalar kernel's bit for bit. The float kernels and the
 * quantizer are those of the plain NEON table. */
#if defined(__aarch64__)
/* The target pragma instead of a per-file -march flag: any build that compiles
 * the file (CMake, the qemu tests' one-line cross build) gets SDOT for this
 * file only. */
#pragma GCC target("arch=armv8.2-a+dotprod")
#include <arm_neon.h>

#include "obx_common.h"
#include "tmm_internal.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* ROWS activation rows against COLS panel columns starting at col0: ROWS x
 * COLS accumulators (at most 8 of the 32 vector registers), each chunk of
 * codes loaded and unpacked once for all rows. */
static ALWAYS_INLINE void i8_tile(const uint8_t *panel, const int8_t *const *q, size_t c0,
                                  size_t c1, int ROWS, int COLS, int col0, uint32_t *usum) {
    const uint8x16_t mask = vdupq_n_u8(3);
    int32x4_t acc[4][8];
    for (int i = 0; i < ROWS; i++)
        for (int r = 0; r < COLS; r++) acc[i][r] = vdupq_n_s32(0);
    size_t c = c0;
    while (c < c1) {
        const uint8_t *block = panel + (c / 4) * TMM_NR * 32;
        const size_t qoff = (c - c0) * TMM_CHUNK;
        if (c % 4 == 0 && c + 4 <= c1) {
            /* A whole K-block: the four chunks are the four 2-bit fields of
             * the same bytes, unpacked with immediate shifts. */
            for (int r = 0; r < COLS; r++) {
                const uint8_t *codes = block + (col0 + r) * 32;
                uint8x16_t b0 = vld1q_u8(codes), b1 = vld1q_u8(codes + 16);
                int8x16_t u[8];
                u[0] = vreinterpretq_s8_u8(vandq_u8(b0, mask));
                u[1] = vreinterpretq_s8_u8(vandq_u8(b1, mask));
                u[2] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(b0, 2), mask));
                u[3] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(b1, 2), mask));
                u[4] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(b0, 4), mask));
                u[5] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(b1, 4), mask));
                u[6] = vreinterpretq_s8_u8(vshrq_n_u8(b0, 6));
                u[7] = vreinterpretq_s8_u8(vshrq_n_u8(b1, 6));
                for (int i = 0; i < ROWS; i++) {
                    const int8_t *qi = q[i] + qoff;
                    for (int v = 0; v < 8; v++)
                        acc[i][r] = vdotq_s32(acc[i][r], u[v], vld1q_s8(qi + 16 * v));
                }
            }
            c += 4;
        } else {
            /* One chunk at a K-group edge: a variable shift (negative: right). */
            const int8x16_t shift = vdupq_n_s8((int8_t)(-2 * (int)(c % 4)));
            for (int r = 0; r < COLS; r++) {
                const uint8_t *codes = block + (col0 + r) * 32;
                int8x16_t u0 = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(vld1q_u8(codes), shift), mask));
                int8x16_t u1 =
                    vreinterpretq_s8_u8(vandq_u8(vshlq_u8(vld1q_u8(codes + 16), shift), mask));
                for (int i = 0; i < ROWS; i++) {
                    acc[i][r] = vdotq_s32(acc[i][r], u0, vld1q_s8(q[i] + qoff));
                    acc[i][r] = vdotq_s32(acc[i][r], u1, vld1q_s8(q[i] + qoff + 16));
                }
            }
            c += 1;
        }
    }
    for (int i = 0; i < ROWS; i++)
        for (int r = 0; r < COLS; r++)
            usum[i * TMM_NR + col0 + r] = (uint32_t)vaddvq_s32(acc[i][r]);
}

static void i8_kernel_neon_dotprod(const uint8_t *panel, size_t kblocks, size_t rows,
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

const struct tmm_kernels tmm_kernels_neon_dotprod = {
    .i8 = i8_kernel_neon_dotprod,
    .f32 = tmm_f32_kernel_neon,
    .quantize = tmm_quantize_row_scalar,
    .f32_gemm_decode = tmm_f32_gemm_decode_neon,
    .f32_gemm = tmm_f32_gemm_neon,
    .f32_gemm_lanes = 4,
    .f32_gemm_width = 12,
};
#endif
