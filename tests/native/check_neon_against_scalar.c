/* Runs the NEON paths against the scalar one through the public API on random
 * shapes and group sizes, a NaN row and a full-magnitude K = 65536 case (built
 * for AArch64 and run under qemu on other hosts). Exit status 0 when they
 * agree: bit for bit for act_quant = 1 and for the float GEMM path (one scale
 * group, M >= 8: the same fmaf chain on every ISA), closely otherwise.
 * Both NEON tables run: the plain one (obx_isa_force_baseline) and the one the
 * CPU selects, which has SDOT kernels where HWCAP_ASIMDDP says so; the first
 * line printed says which ("dotprod: 1" or "dotprod: 0"), so the caller can
 * check the run-time choice against the emulated CPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnxbit/bf16matmul.h"
#include "onnxbit/formats.h"
#include "onnxbit/isa.h"
#include "onnxbit/tmatmul.h"

static void compute(int isa, int baseline, const obx_tmm_weights *w, const float *a, size_t m,
                    int act, float *y) {
    char err[256];
    if (baseline) obx_isa_force_baseline(isa);
    else obx_isa_force(isa);
    if (obx_tmm_compute(w, a, m, NULL, act, y, NULL, NULL, err, sizeof err) != 0) {
        printf("compute failed: %s\n", err);
        exit(2);
    }
}

static int agree(float x, float y, int exact) {
    if (isnan(x) || isnan(y)) return isnan(x) && isnan(y);
    if (exact) return memcmp(&x, &y, sizeof x) == 0;
    return fabsf(x - y) <= 1e-4f * (1.0f + fabsf(x));
}

/* The bfloat16 matmul: NEON against scalar, bit for bit (both are one fused
 * multiply-add chain per output), on shapes with column tails, K blocks and
 * every tile height; the first case holds NaN, Inf and -0 weights. */
static void check_bf16(int *cases, int *bad) {
    for (int t = 0; t < 24; t++) {
        size_t m = 1 + (size_t)(rand() % 13), k = t == 1 ? 1100 : 1 + (size_t)(rand() % 600);
        size_t n = 1 + (size_t)(rand() % 300);
        uint16_t *w = malloc(k * n * sizeof(uint16_t));
        for (size_t i = 0; i < k * n; i++) {
            float v = (float)(rand() % 2001 - 1000) / 700.0f;
            uint32_t bits;
            memcpy(&bits, &v, sizeof bits);
            w[i] = (uint16_t)(bits >> 16);
        }
        if (t == 0) {
            w[0] = 0x7FC0; /* NaN */
            w[k * n - 1] = 0xFF80; /* -Inf */
            w[n / 2] = 0x8000; /* -0 */
        }
        float *a = malloc(m * k * sizeof(float));
        float *expected = malloc(m * n * sizeof(float)), *got = malloc(m * n * sizeof(float));
        for (size_t i = 0; i < m * k; i++) a[i] = (float)(rand() % 2001 - 1000) / 300.0f;
        char err[256];
        obx_bf16_weights *packed[2];
        float *out[2] = {expected, got};
        for (int i = 0; i < 2; i++) {
            obx_isa_force(i ? OBX_ISA_NEON : OBX_ISA_SCALAR);
            packed[i] = obx_bf16_prepack(w, k * n, (int64_t)k, (int64_t)n, err, sizeof err);
            if (!packed[i] || obx_bf16_compute(packed[i], a, m, NULL, out[i], NULL, NULL, err, sizeof err)) {
                printf("bf16 case %d failed: %s\n", t, err);
                exit(2);
            }
            obx_bf16_free(packed[i]);
        }
        for (size_t i = 0; i < m * n; i++)
            if (!agree(expected[i], got[i], 1)) {
                if (*bad < 10)
                    printf("bf16 case %d (m=%zu k=%zu n=%zu) element %zu: scalar %g, neon %g\n", t, m, k,
                           n, i, expected[i], got[i]);
                (*bad)++;
            }
        (*cases)++;
        free(w);
        free(a);
        free(expected);
        free(got);
    }
}

int main(void) {
    if (!obx_isa_supported(OBX_ISA_NEON)) {
        printf("NEON is not supported here\n");
        return 2;
    }
    printf("dotprod: %d\n", obx_cpu_has_neon_dotprod());
    const size_t group_sizes[] = {0, 7, 32, 33, 128, 100};
    int bad = 0, cases = 0;
    srand(7);
    for (int t = 0; t < 60; t++) {
        int extreme = t == 0; /* every weight +1, every activation equal */
        size_t m = extreme ? 3 : 1 + (size_t)(rand() % 30);
        size_t k = extreme ? 65536 : 1 + (size_t)(rand() % 700);
        size_t n = extreme ? 9 : 1 + (size_t)(rand() % 21);
        size_t gs = extreme ? 0 : group_sizes[rand() % 6];
        size_t rb = (k + 3) / 4, n_scales = gs ? n * ((k + gs - 1) / gs) : n;
        uint8_t *b = calloc(n * rb, 1);
        for (size_t r = 0; r < n; r++)
            for (size_t i = 0; i < k; i++)
                b[r * rb + i / 4] |= (uint8_t)((extreme ? 2 : rand() % 3) << (2 * (i % 4)));
        float *scales = malloc(n_scales * sizeof(float));
        for (size_t i = 0; i < n_scales; i++) scales[i] = 0.1f + (float)(rand() % 100) / 50.0f;
        char err[256];
        obx_tmm_weights *w = obx_tmm_prepack(OBX_FMT_2BIT, b, n * rb, k, n, scales, n_scales, gs, err, sizeof err);
        if (!w) {
            printf("prepack failed: %s\n", err);
            return 2;
        }
        float *a = malloc(m * k * sizeof(float));
        float *expected = malloc(m * n * sizeof(float)), *got = malloc(m * n * sizeof(float));
        for (size_t i = 0; i < m * k; i++) a[i] = extreme ? 0.5f : (float)(rand() % 2001 - 1000) / 300.0f;
        if (t == 5) a[3] = NAN;
        for (int act = 0; act < 2; act++) {
            compute(OBX_ISA_SCALAR, 0, w, a, m, act, expected);
            for (int baseline = 0; baseline < 2; baseline++) {
                compute(OBX_ISA_NEON, baseline, w, a, m, act, got);
                for (size_t i = 0; i < m * n; i++) {
                    if (!agree(expected[i], got[i], act || (gs == 0 && m >= 8))) {
                        if (bad < 10)
                            printf("case %d act_quant %d %s (m=%zu k=%zu n=%zu gs=%zu) element "
                                   "%zu: scalar %g, neon %g\n", t, act,
                                   baseline ? "baseline" : "selected", m, k, n, gs, i,
                                   expected[i], got[i]);
                        bad++;
                    }
                }
                cases++;
            }
        }
        obx_tmm_free(w);
        free(b);
        free(scales);
        free(a);
        free(expected);
        free(got);
    }
    check_bf16(&cases, &bad);
    printf("%d cases, %d mismatches\n", cases, bad);
    return bad != 0;
}
