/* Runs the AVX-512 and AVX-VNNI integer kernels (on emulated intrinsics) and
 * the AVX2 one against the scalar kernel on random panels, chunk ranges and
 * row counts, plus full-magnitude cases at K = 65536, and the float GEMM
 * kernels (decode and fused multiply-add tile) of the same tables against
 * the scalar ones bit for bit, and the AVX-512 and AVX-VNNI integer GEMMs
 * (decode and register-blocked tile) against the scalar integer kernel. Prints the count of mismatches; exit status 0
 * when there are none. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "matmul/tmm_internal.h"
#include "obx_common.h"
#include "onnxbit/formats.h"

extern const struct tmm_kernels emulated_tmm_kernels_avx512, emulated_tmm_kernels_avxvnni;

int main(void) {
    const struct tmm_kernels *tables[] = {&emulated_tmm_kernels_avx512,
                                          &emulated_tmm_kernels_avxvnni, &tmm_kernels_avx2};
    const char *names[] = {"avx512", "avxvnni", "avx2"};
    srand(3);
    int bad = 0, runs = 0;
    for (int t = 0; t < 200; t++) {
        int extreme = t < 4; /* every q = -128 or 127, every w = -1 or +1 */
        size_t k = extreme ? 65536 : 1 + (size_t)(rand() % 3000), n = TMM_NR, rb = (k + 3) / 4;
        uint8_t *b = malloc(n * rb);
        for (size_t i = 0; i < n * rb; i++) {
            uint8_t v = 0;
            for (int j = 0; j < 4; j++) v |= (uint8_t)((rand() % 3) << (2 * j));
            b[i] = extreme ? (t % 2 ? 0xAA : 0x00) : v;
        }
        float scale = 1.0f;
        char err[200];
        obx_tmm_shape shape;
        obx_tmm_weights *w = NULL;
        if (obx_tmm_shape_init(&shape, OBX_FMT_2BIT, (int64_t)k, (int64_t)n, 0, err, 200) == 0)
            w = tmm_prepack(&shape, &tmm_kernels_scalar, b, &scale, 1, err, 200);
        if (!w) { printf("prepack failed: %s\n", err); return 2; }
        size_t chunks = w->kblocks * 4, rows = 1 + (size_t)(rand() % 4);
        int8_t *q[4];
        for (size_t i = 0; i < rows; i++) {
            q[i] = aligned_alloc(64, chunks * 32);
            for (size_t j = 0; j < chunks * 32; j++)
                q[i][j] = extreme ? (int8_t)(t < 2 ? -128 : 127) : (int8_t)(rand() % 256 - 128);
        }
        size_t c0 = extreme ? 0 : (size_t)rand() % chunks;
        size_t c1 = extreme ? chunks : c0 + (size_t)rand() % (chunks - c0 + 1);
        const int8_t *qs[4];
        for (size_t i = 0; i < rows; i++) qs[i] = q[i] + c0 * 32;
        uint32_t expected[TMM_MR * TMM_NR], got[TMM_MR * TMM_NR];
        tmm_kernels_scalar.i8(w->packed, w->kblocks, rows, qs, c0, c1, expected);
        for (int v = 0; v < 3; v++) {
            memset(got, 0xee, sizeof got);
            tables[v]->i8(w->packed, w->kblocks, rows, qs, c0, c1, got);
            if (memcmp(expected, got, rows * TMM_NR * sizeof(uint32_t)) != 0) {
                if (bad < 5)
                    printf("%s differs from scalar: k=%zu rows=%zu chunks [%zu, %zu)\n", names[v], k,
                           rows, c0, c1);
                bad++;
            }
            runs++;
        }
        for (size_t i = 0; i < rows; i++) free(q[i]);
        obx_tmm_free(w);
        free(b);
    }
    /* Float GEMM: one K-block of random codes, every row-block width the table takes. */
    static uint8_t block[TMM_NR * 32];
    static float wdec_ref[TMM_NR * TMM_KBLOCK], wdec[TMM_NR * TMM_KBLOCK];
    static float at[TMM_KBLOCK * 48], acc_ref[TMM_NR * 48], acc[TMM_NR * 48];
    for (int t = 0; t < 20; t++) {
        for (size_t i = 0; i < sizeof block; i++) block[i] = (uint8_t)rand();
        for (size_t i = 0; i < TMM_NR * 32; i++) /* codes 0..2 only */
            for (int s = 0; s < 4; s++)
                if (((block[i] >> (2 * s)) & 3) == 3) block[i] ^= (uint8_t)(1 << (2 * s));
        tmm_kernels_scalar.f32_gemm_decode(block, wdec_ref);
        for (int v = 0; v < 3; v++) {
            const struct tmm_kernels *kern = tables[v];
            kern->f32_gemm_decode(block, wdec);
            if (memcmp(wdec, wdec_ref, sizeof wdec) != 0) {
                if (bad < 5) printf("%s float decode differs from scalar\n", names[v]);
                bad++;
            }
            for (size_t width = kern->f32_gemm_lanes; width <= kern->f32_gemm_width;
                 width += kern->f32_gemm_lanes) {
                for (size_t i = 0; i < TMM_KBLOCK * width; i++)
                    at[i] = ldexpf((float)(rand() - RAND_MAX / 2), rand() % 20 - 40);
                for (size_t i = 0; i < TMM_NR * width; i++)
                    acc_ref[i] = acc[i] = (float)(rand() % 1000) / 7.0f;
                tmm_kernels_scalar.f32_gemm(wdec_ref, at, width, acc_ref);
                kern->f32_gemm(wdec, at, width, acc);
                if (memcmp(acc, acc_ref, TMM_NR * width * sizeof(float)) != 0) {
                    if (bad < 5) printf("%s float gemm differs from scalar: width %zu\n", names[v], width);
                    bad++;
                }
                runs++;
            }
        }
    }
    /* Float GEMM pair form of the AVX-512 table against the scalar reference. */
    static uint8_t block1[TMM_NR * 32];
    static float wdec2_ref[2 * TMM_NR * TMM_KBLOCK], wdec2[2 * TMM_NR * TMM_KBLOCK];
    for (int t = 0; t < 10; t++) {
        const struct tmm_kernels *kern = &emulated_tmm_kernels_avx512;
        size_t lanes = kern->f32_gemm_lanes;
        for (size_t i = 0; i < sizeof block; i++) {
            block[i] = (uint8_t)(rand() % 3 | (rand() % 3) << 2 | (rand() % 3) << 4 | (rand() % 3) << 6);
            block1[i] = (uint8_t)(rand() % 3 | (rand() % 3) << 2 | (rand() % 3) << 4 | (rand() % 3) << 6);
        }
        const uint8_t *second = t % 2 ? block1 : NULL; /* NULL: the pair's second panel is missing */
        tmm_f32_gemm_pair_decode_scalar(block, second, wdec2_ref);
        kern->f32_gemm_pair_decode(block, second, wdec2);
        for (size_t i = 0; i < TMM_KBLOCK * lanes; i++)
            at[i] = ldexpf((float)(rand() - RAND_MAX / 2), rand() % 20 - 40);
        for (size_t i = 0; i < TMM_NR * lanes; i++) acc_ref[i] = acc[i] = (float)(rand() % 1000) / 7.0f;
        tmm_f32_gemm_pair_scalar(lanes, wdec2_ref, at, acc_ref);
        kern->f32_gemm_pair(wdec2, at, acc);
        if (memcmp(wdec2, wdec2_ref, sizeof wdec2) != 0 ||
            memcmp(acc, acc_ref, TMM_NR * lanes * sizeof(float)) != 0) {
            if (bad < 5) printf("avx512 float gemm pair form differs from scalar\n");
            bad++;
        }
        runs++;
    }
    /* Integer GEMM of the AVX-512 and AVX-VNNI tables in turn (the AVX2 one
     * has none): a tile of 1..4 panels (N off the tile), 1..6 rows, K off the
     * blocks, against the scalar kernel panel by panel over the same chunks. */
    for (int t = 0; t < 60; t++) {
        const int v = t % 2;
        const struct tmm_kernels *kern = tables[v];
        int extreme = t < 4;
        size_t k = extreme ? 4096 : 1 + (size_t)(rand() % 700);
        size_t n = 1 + (size_t)(rand() % (TMM_I8_GEMM_PANELS * TMM_NR)), rb = (k + 3) / 4;
        uint8_t *b = malloc(n * rb);
        for (size_t i = 0; i < n * rb; i++)
            b[i] = extreme ? (t >= 2 ? 0xAA : 0x00)
                           : (uint8_t)(rand() % 3 | (rand() % 3) << 2 | (rand() % 3) << 4 | (rand() % 3) << 6);
        float *scales = malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) scales[i] = 1.0f;
        char err[200];
        obx_tmm_shape shape;
        obx_tmm_weights *w = NULL;
        if (obx_tmm_shape_init(&shape, OBX_FMT_2BIT, (int64_t)k, (int64_t)n, 0, err, 200) == 0)
            w = tmm_prepack(&shape, &tmm_kernels_scalar, b, scales, n, err, 200);
        if (!w) { printf("prepack failed: %s\n", err); return 2; }
        size_t chunks = (k + 31) / 32, rows = 1 + (size_t)(rand() % TMM_I8_GEMM_ROWS);
        int8_t *q[TMM_I8_GEMM_ROWS];
        for (size_t i = 0; i < rows; i++) {
            q[i] = aligned_alloc(64, w->kblocks * TMM_KBLOCK);
            for (size_t j = 0; j < w->kblocks * TMM_KBLOCK; j++)
                q[i][j] = extreme ? -128 : (int8_t)(rand() % 256 - 128);
        }
        uint8_t *wdec = aligned_alloc(64, w->kblocks * 16 * TMM_I8_GEMM_PANELS * 64);
        static int32_t carry[TMM_I8_GEMM_CARRY] __attribute__((aligned(64)));
        uint32_t got[TMM_I8_GEMM_ROWS * TMM_I8_GEMM_PANELS * TMM_NR], expected[TMM_MR * TMM_NR];
        /* every K-block its own slab, the sums carried between them */
        for (size_t b0 = 0; b0 < w->kblocks; b0++) {
            size_t t8_count = OBX_MIN((size_t)16, chunks * 4 - b0 * 16);
            const int8_t *qs[TMM_I8_GEMM_ROWS];
            for (size_t i = 0; i < rows; i++) qs[i] = q[i] + b0 * TMM_KBLOCK;
            kern->i8_gemm_decode(w->packed, w->kblocks, b0, b0 + 1, w->n_panels, wdec);
            kern->i8_gemm(wdec, t8_count, rows, qs, carry, b0 == 0,
                          b0 + 1 == w->kblocks ? got : NULL);
        }
        for (size_t p = 0; p < w->n_panels; p++)
            for (size_t i = 0; i < rows; i++) {
                const int8_t *qi[1] = {q[i]};
                tmm_kernels_scalar.i8(tmm_panel(w, p), w->kblocks, 1, qi, 0, chunks, expected);
                if (memcmp(expected, got + (i * TMM_I8_GEMM_PANELS + p) * TMM_NR,
                           TMM_NR * sizeof(uint32_t)) != 0) {
                    if (bad < 5)
                        printf("%s integer gemm differs from scalar: k=%zu n=%zu rows=%zu\n", names[v], k, n,
                               rows);
                    bad++;
                }
            }
        runs++;
        for (size_t i = 0; i < rows; i++) free(q[i]);
        free(wdec);
        free(scales);
        obx_tmm_free(w);
        free(b);
    }
    printf("%d kernel runs, %d mismatches\n", runs, bad);
    return bad != 0;
}
