/* Portable kernels: the reference every SIMD path must agree with, and the
 * path used on CPUs without a SIMD kernel. */
#include <float.h>
#include <math.h>

#include "obx_common.h"
#include "tmm_internal.h"

int tmm_quantize_row_scalar(const float *a, size_t k, int8_t *q, float *s) {
    float amax = 0.0f;
    int finite = 1;
    for (size_t i = 0; i < k; i++) {
        float v = fabsf(a[i]);
        /* NaN fails both comparisons, Inf fails the first. */
        if (!(v <= FLT_MAX)) finite = 0;
        else if (v > amax) amax = v;
    }
    if (!finite) return 0;
    float scale = 127.0f * (1.0f / fmaxf(amax, 1e-5f)); /* tmatmul.h: as PyTorch rounds it */
    for (size_t i = 0; i < k; i++) {
        float r = rintf(a[i] * scale);
        if (r > 127.0f) r = 127.0f;
        if (r < -128.0f) r = -128.0f;
        q[i] = (int8_t)r;
    }
    *s = scale;
    return 1;
}

static void i8_kernel_scalar(const uint8_t *panel, size_t kblocks, size_t rows,
                             const int8_t *const *q, size_t chunk_begin, size_t chunk_end,
                             uint32_t *usum) {
    (void)kblocks;
    for (size_t i = 0; i < rows; i++) {
        for (size_t r = 0; r < TMM_NR; r++) {
            uint32_t acc = 0;
            for (size_t c = chunk_begin; c < chunk_end; c++) {
                const uint8_t *bytes = panel + ((c / 4) * TMM_NR + r) * 32;
                unsigned shift = 2 * (unsigned)(c % 4);
                const int8_t *qc = q[i] + (c - chunk_begin) * TMM_CHUNK;
                int32_t part = 0; /* |part| <= 32 * 2 * 128: no overflow */
                for (size_t j = 0; j < TMM_CHUNK; j++)
                    part += (int32_t)((bytes[j] >> shift) & 3u) * qc[j];
                acc += (uint32_t)part;
            }
            usum[i * TMM_NR + r] = acc;
        }
    }
}

static void f32_kernel_scalar(const uint8_t *panel, size_t kblocks, size_t rows,
                              const float *const *a, size_t chunk_begin, size_t chunk_end,
                              float *sums) {
    (void)kblocks;
    /* A real multiply by {-1, 0, 1}, so Inf * 0 gives NaN as in float matmul. */
    static const float code_value[4] = {-1.0f, 0.0f, 1.0f, 0.0f};
    for (size_t i = 0; i < rows; i++) {
        for (size_t r = 0; r < TMM_NR; r++) {
            float acc = 0.0f;
            for (size_t c = chunk_begin; c < chunk_end; c++) {
                const uint8_t *bytes = panel + ((c / 4) * TMM_NR + r) * 32;
                unsigned shift = 2 * (unsigned)(c % 4);
                const float *ac = a[i] + (c - chunk_begin) * TMM_CHUNK;
                for (size_t j = 0; j < TMM_CHUNK; j++)
                    acc += ac[j] * code_value[(bytes[j] >> shift) & 3u];
            }
            sums[i * TMM_NR + r] = acc;
        }
    }
}

static void f32_gemm_decode_scalar(const uint8_t *block, float *wdec) {
    static const float code_value[4] = {-1.0f, 0.0f, 1.0f, 0.0f};
    for (size_t r = 0; r < TMM_NR; r++)
        for (size_t t = 0; t < TMM_KBLOCK; t++)
            wdec[r * TMM_KBLOCK + t] =
                code_value[(block[r * 32 + t % 32] >> (2 * (t / 32))) & 3u];
}

/* The definition the SIMD GEMM kernels must equal bit for bit: one fused
 * multiply-add per weight, in k order. */
static void f32_gemm_scalar(const float *wdec, const float *at, size_t width, float *acc) {
    for (size_t r = 0; r < TMM_NR; r++)
        for (size_t i = 0; i < width; i++) {
            float sum = acc[r * width + i];
            for (size_t t = 0; t < TMM_KBLOCK; t++)
                sum = fmaf(at[t * width + i], wdec[r * TMM_KBLOCK + t], sum);
            acc[r * width + i] = sum;
        }
}

/* References of the pair form (tmm_internal.h), for the SIMD tables that have
 * it; the scalar table itself, one lane wide, never pairs panels. */
void tmm_f32_gemm_pair_decode_scalar(const uint8_t *block0, const uint8_t *block1, float *wdec2) {
    float w[TMM_NR * TMM_KBLOCK];
    for (int j = 0; j < 2; j++) {
        const uint8_t *block = j ? block1 : block0;
        if (block) f32_gemm_decode_scalar(block, w);
        for (size_t i = 0; i < TMM_NR * TMM_KBLOCK; i++) wdec2[2 * i + j] = block ? w[i] : 0.0f;
    }
}

void tmm_f32_gemm_pair_scalar(size_t lanes, const float *wdec2, const float *at2, float *acc2) {
    for (size_t r = 0; r < TMM_NR; r++)
        for (size_t l = 0; l < lanes; l++) {
            float sum = acc2[r * lanes + l];
            for (size_t t = 0; t < TMM_KBLOCK; t++)
                sum = fmaf(at2[t * lanes + l], wdec2[(r * TMM_KBLOCK + t) * 2 + l % 2], sum);
            acc2[r * lanes + l] = sum;
        }
}

const struct tmm_kernels tmm_kernels_scalar = {
    .i8 = i8_kernel_scalar,
    .f32 = f32_kernel_scalar,
    .quantize = tmm_quantize_row_scalar,
    .f32_gemm_decode = f32_gemm_decode_scalar,
    .f32_gemm = f32_gemm_scalar,
    .f32_gemm_lanes = 1,
    .f32_gemm_width = 8,
};
