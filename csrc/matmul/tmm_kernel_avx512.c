/* AVX-512 level (AVX-512BW + VNNI): the integer kernel of tmm_kernel_avx2.c
 * widened to 512 bits. The layout stores the 32-byte code blocks of panel
 * columns 2p and 2p+1 next to each other, so one 64-byte load covers a column
 * pair; the 32 activations of a chunk are broadcast to both 256-bit halves
 * and vpdpbusd (unsigned codes x signed activations, four products into each
 * int32 lane) accumulates both columns at once. The low half of an
 * accumulator belongs to column 2p, the high half to column 2p+1. The float
 * kernels: one row at 512 bits, a register-blocked GEMM; the rest of the
 * float paths and the quantizer are the AVX2 ones. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "obx_common.h"
#include "tmm_internal.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))
#define COL_PAIRS (TMM_NR / 2)

/* The 8 column sums of one row from its four column-pair accumulators (low
 * 256 bits column 2p, high 256 bits column 2p + 1), reduced together: one
 * horizontal sum per column cost more than the products at K = 256 (a 1x1
 * conv's 256 -> 64). Integer adds, exact in any order. */
static ALWAYS_INLINE __m256i row_sums(const __m512i *a) {
    /* within each 128-bit lane L: [a0 L0+L2, a1 L0+L2, a0 L1+L3, a1 L1+L3] */
    __m512i s01 = _mm512_add_epi32(_mm512_unpacklo_epi32(a[0], a[1]), _mm512_unpackhi_epi32(a[0], a[1]));
    __m512i s23 = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2], a[3]), _mm512_unpackhi_epi32(a[2], a[3]));
    /* within each 128-bit lane: the lane's sum of a0, a1, a2, a3 */
    __m512i t = _mm512_add_epi32(_mm512_unpacklo_epi64(s01, s23), _mm512_unpackhi_epi64(s01, s23));
    /* lanes 0 + 1 (columns 2p), lanes 2 + 3 (columns 2p + 1) */
    __m512i lanes02 = _mm512_shuffle_i32x4(t, t, _MM_SHUFFLE(2, 0, 2, 0));
    __m512i lanes13 = _mm512_shuffle_i32x4(t, t, _MM_SHUFFLE(3, 1, 3, 1));
    __m256i sums = _mm512_castsi512_si256(_mm512_add_epi32(lanes02, lanes13)); /* c0 c2 c4 c6 c1 c3 c5 c7 */
    return _mm256_permutevar8x32_epi32(sums, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static ALWAYS_INLINE __m512i broadcast_chunk(const int8_t *q) {
    return _mm512_broadcast_i64x4(_mm256_load_si256((const __m256i *)q));
}

static ALWAYS_INLINE void i8_tile(const uint8_t *panel, const int8_t *const *q, size_t c0,
                                  size_t c1, int ROWS, uint32_t *usum) {
    const __m512i mask = _mm512_set1_epi8(3);
    __m512i acc[4][COL_PAIRS];
    for (int i = 0; i < ROWS; i++)
        for (int p = 0; p < COL_PAIRS; p++) acc[i][p] = _mm512_setzero_si512();
    size_t c = c0;
    while (c < c1) {
        const uint8_t *block = panel + (c / 4) * TMM_NR * 32;
        size_t qoff = (c - c0) * TMM_CHUNK;
        __m512i bits[COL_PAIRS];
        for (int p = 0; p < COL_PAIRS; p++) {
            _mm_prefetch((const char *)(block + p * 64 + TMM_CODE_PREFETCH), _MM_HINT_T0);
            bits[p] = _mm512_load_si512((const void *)(block + p * 64));
        }
        if ((c % 4 == 0) && (c + 4 <= c1)) {
            for (int s = 0; s < 4; s++) {
                __m512i qb[4];
                for (int i = 0; i < ROWS; i++) qb[i] = broadcast_chunk(q[i] + qoff + s * 32);
                for (int p = 0; p < COL_PAIRS; p++) {
                    __m512i u = _mm512_and_si512(_mm512_srli_epi16(bits[p], 2 * s), mask);
                    for (int i = 0; i < ROWS; i++)
                        acc[i][p] = _mm512_dpbusd_epi32(acc[i][p], u, qb[i]);
                }
            }
            c += 4;
        } else {
            __m128i shift = _mm_cvtsi32_si128(2 * (int)(c % 4));
            __m512i qb[4];
            for (int i = 0; i < ROWS; i++) qb[i] = broadcast_chunk(q[i] + qoff);
            for (int p = 0; p < COL_PAIRS; p++) {
                __m512i u = _mm512_and_si512(_mm512_srl_epi16(bits[p], shift), mask);
                for (int i = 0; i < ROWS; i++)
                    acc[i][p] = _mm512_dpbusd_epi32(acc[i][p], u, qb[i]);
            }
            c += 1;
        }
    }
    for (int i = 0; i < ROWS; i++) _mm256_storeu_si256((__m256i *)(usum + i * TMM_NR), row_sums(acc[i]));
}

static void i8_kernel_avx512(const uint8_t *panel, size_t kblocks, size_t rows,
                             const int8_t *const *q, size_t chunk_begin, size_t chunk_end,
                             uint32_t *usum) {
    (void)kblocks;
    switch (rows) {
    case 1: i8_tile(panel, q, chunk_begin, chunk_end, 1, usum); break;
    case 2: i8_tile(panel, q, chunk_begin, chunk_end, 2, usum); break;
    case 3: i8_tile(panel, q, chunk_begin, chunk_end, 3, usum); break;
    default: i8_tile(panel, q, chunk_begin, chunk_end, 4, usum); break;
    }
}

/* ---- float kernel, one row ----------------------------------------------- */

/* One activation row against the panel, 16 codes per instruction (the AVX2
 * kernel's method at twice the width): the codes u = w + 1 of the four chunks
 * of a K-block sit in four bit fields of the same bytes, so a field is masked
 * in place (4^s u) and converted; sum_k u a_k, scaled back by 4^-s (exact),
 * minus sum_k a_k gives sum_k w a_k. A non-finite row takes the AVX2 kernel,
 * whose multiplies give IEEE results (Inf * 0 = NaN). */
static float f32_row_column_avx512(const uint8_t *panel, const float *a, size_t c0, size_t c1,
                                   size_t col) {
    /* Four named accumulators (an array indexed by a run-time chunk number
     * would live on the stack). */
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    const __m512i field0 = _mm512_set1_epi32(3), field1 = _mm512_set1_epi32(3 << 2),
                  field2 = _mm512_set1_epi32(3 << 4), field3 = _mm512_set1_epi32(3 << 6);
    size_t c = c0;
    while (c < c1) {
        const uint8_t *codes = panel + ((c / 4) * TMM_NR + col) * 32;
        const float *ac = a + (c - c0) * TMM_CHUNK;
        if (c % 4 == 0 && c + 4 <= c1) {
            for (int h = 0; h < 2; h++) {
                __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + 16 * h)));
                acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(ac + 16 * h),
                                       _mm512_cvtepi32_ps(_mm512_and_si512(x, field0)), acc0);
                acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(ac + 32 + 16 * h),
                                       _mm512_cvtepi32_ps(_mm512_and_si512(x, field1)), acc1);
                acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(ac + 64 + 16 * h),
                                       _mm512_cvtepi32_ps(_mm512_and_si512(x, field2)), acc2);
                acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(ac + 96 + 16 * h),
                                       _mm512_cvtepi32_ps(_mm512_and_si512(x, field3)), acc3);
            }
            c += 4;
        } else {
            int s = (int)(c % 4);
            __m512i field = _mm512_set1_epi32(3 << (2 * s));
            __m512 part = _mm512_setzero_ps();
            for (int h = 0; h < 2; h++) {
                __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + 16 * h)));
                part = _mm512_fmadd_ps(_mm512_loadu_ps(ac + 16 * h),
                                       _mm512_cvtepi32_ps(_mm512_and_si512(x, field)), part);
            }
            if (s == 0) acc0 = _mm512_add_ps(acc0, part);
            else if (s == 1) acc1 = _mm512_add_ps(acc1, part);
            else if (s == 2) acc2 = _mm512_add_ps(acc2, part);
            else acc3 = _mm512_add_ps(acc3, part);
            c += 1;
        }
    }
    __m512 v = _mm512_add_ps(acc0, _mm512_mul_ps(acc1, _mm512_set1_ps(0.25f)));
    v = _mm512_add_ps(v, _mm512_mul_ps(acc2, _mm512_set1_ps(0.0625f)));
    v = _mm512_add_ps(v, _mm512_mul_ps(acc3, _mm512_set1_ps(0.015625f)));
    return _mm512_reduce_add_ps(v);
}

static void f32_kernel_avx512(const uint8_t *panel, size_t kblocks, size_t rows,
                              const float *const *a, size_t chunk_begin, size_t chunk_end,
                              float *sums) {
    if (rows == 1) {
        /* Two independent sums per chunk: one chain would wait on the adder's latency. */
        __m512 asum0 = _mm512_setzero_ps(), asum1 = asum0;
        for (size_t i = 0; i < (chunk_end - chunk_begin) * TMM_CHUNK; i += TMM_CHUNK) {
            asum0 = _mm512_add_ps(asum0, _mm512_loadu_ps(a[0] + i));
            asum1 = _mm512_add_ps(asum1, _mm512_loadu_ps(a[0] + i + 16));
        }
        float total = _mm512_reduce_add_ps(_mm512_add_ps(asum0, asum1));
        int finite = isfinite(total);
        for (size_t col = 0; col < TMM_NR && finite; col++) {
            sums[col] = f32_row_column_avx512(panel, a[0], chunk_begin, chunk_end, col) - total;
            finite = isfinite(sums[col]);
        }
        if (finite) return;
    }
    tmm_f32_kernel_avx2(panel, kblocks, rows, a, chunk_begin, chunk_end, sums);
}

/* ---- float GEMM (TMM_PATH_F32_GEMM) --------------------------------------- */

static void f32_gemm_decode_avx512(const uint8_t *block, float *wdec) {
    const __m512 code_value = _mm512_setr_ps(-1.0f, 0.0f, 1.0f, 0.0f, 0, 0, 0, 0, 0, 0, 0, 0,
                                             0, 0, 0, 0);
    const __m512i three = _mm512_set1_epi32(3);
    for (size_t r = 0; r < TMM_NR; r++) {
        for (size_t half = 0; half < 2; half++) {
            /* bytes 16 half + j hold k = 32 s + 16 half + j, chunk s at bits 2 s */
            __m512i bytes = _mm512_cvtepu8_epi32(
                _mm_loadu_si128((const __m128i *)(block + r * 32 + half * 16)));
            for (int s = 0; s < 4; s++) {
                __m512i code = _mm512_and_si512(_mm512_srli_epi32(bytes, 2 * s), three);
                _mm512_storeu_ps(wdec + r * TMM_KBLOCK + 32 * s + 16 * half,
                                 _mm512_permutexvar_ps(code, code_value));
            }
        }
    }
}

/* VECS vectors of 16 rows by the panel's eight columns: 8 VECS accumulators
 * (24 of the 32 registers at three vectors), VECS activation loads and eight
 * weight broadcasts per k. */
static ALWAYS_INLINE void f32_gemm_tile(const float *wdec, const float *at, size_t width,
                                        float *acc, int VECS) {
    __m512 c[TMM_NR][3];
    for (int r = 0; r < TMM_NR; r++)
        for (int v = 0; v < VECS; v++) c[r][v] = _mm512_loadu_ps(acc + r * width + 16 * v);
    for (size_t t = 0; t < TMM_KBLOCK; t++) {
        __m512 a[3];
        for (int v = 0; v < VECS; v++) a[v] = _mm512_loadu_ps(at + t * width + 16 * v);
        for (int r = 0; r < TMM_NR; r++) {
            __m512 w = _mm512_set1_ps(wdec[r * TMM_KBLOCK + t]);
            for (int v = 0; v < VECS; v++) c[r][v] = _mm512_fmadd_ps(a[v], w, c[r][v]);
        }
    }
    for (int r = 0; r < TMM_NR; r++)
        for (int v = 0; v < VECS; v++) _mm512_storeu_ps(acc + r * width + 16 * v, c[r][v]);
}

static void f32_gemm_avx512(const float *wdec, const float *at, size_t width, float *acc) {
    switch (width / 16) {
    case 1: f32_gemm_tile(wdec, at, width, acc, 1); break;
    case 2: f32_gemm_tile(wdec, at, width, acc, 2); break;
    default: f32_gemm_tile(wdec, at, width, acc, 3); break;
    }
}

/* Pair form: eight rows of two panels per vector, so M = 8 uses every lane.
 * The two panels' decoded weights are interleaved so that one 64-bit
 * broadcast (a load-port operation) gives each lane its column's weight. */
static void f32_gemm_pair_decode_avx512(const uint8_t *block0, const uint8_t *block1,
                                        float *wdec2) {
    static const int32_t interleave_low[16] __attribute__((aligned(64))) = {
        0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
    static const int32_t interleave_high[16] __attribute__((aligned(64))) = {
        8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i low = _mm512_load_si512((const void *)interleave_low);
    const __m512i high = _mm512_load_si512((const void *)interleave_high);
    float w0[TMM_NR * TMM_KBLOCK] __attribute__((aligned(64)));
    float w1[TMM_NR * TMM_KBLOCK] __attribute__((aligned(64)));
    f32_gemm_decode_avx512(block0, w0);
    if (block1) f32_gemm_decode_avx512(block1, w1);
    else memset(w1, 0, sizeof w1);
    for (size_t i = 0; i < TMM_NR * TMM_KBLOCK; i += 16) {
        __m512 a = _mm512_loadu_ps(w0 + i), b = _mm512_loadu_ps(w1 + i);
        _mm512_storeu_ps(wdec2 + 2 * i, _mm512_permutex2var_ps(a, low, b));
        _mm512_storeu_ps(wdec2 + 2 * i + 16, _mm512_permutex2var_ps(a, high, b));
    }
}

static void f32_gemm_pair_avx512(const float *wdec2, const float *at2, float *acc2) {
    __m512 c[TMM_NR];
    for (int r = 0; r < TMM_NR; r++) c[r] = _mm512_loadu_ps(acc2 + r * 16);
    for (size_t t = 0; t < TMM_KBLOCK; t++) {
        __m512 a = _mm512_loadu_ps(at2 + t * 16);
        for (int r = 0; r < TMM_NR; r++) {
            double pair;
            memcpy(&pair, wdec2 + (r * TMM_KBLOCK + t) * 2, sizeof pair);
            c[r] = _mm512_fmadd_ps(a, _mm512_castpd_ps(_mm512_set1_pd(pair)), c[r]);
        }
    }
    for (int r = 0; r < TMM_NR; r++) _mm512_storeu_ps(acc2 + r * 16, c[r]);
}

const struct tmm_kernels tmm_kernels_avx512 = {
    .i8 = i8_kernel_avx512,
    .f32 = f32_kernel_avx512,
    .quantize = tmm_quantize_row_avx2,
    /* The AVX2 grouped kernel: these CPUs run it, and it is the tested one. */
    .i8_groups = tmm_i8_groups_avx2,
    .f32_decode = tmm_f32_decode_avx2,
    .f32_dot = tmm_f32_dot_avx2,
    .f32_scaled = tmm_f32_scaled_avx2,
    .f32_decode_scaled = tmm_f32_decode_scaled_avx2,
    .f32_gemm_decode = f32_gemm_decode_avx512,
    .f32_gemm = f32_gemm_avx512,
    .f32_gemm_lanes = 16,
    .f32_gemm_width = 48,
    .f32_gemm_pair_decode = f32_gemm_pair_decode_avx512,
    .f32_gemm_pair = f32_gemm_pair_avx512,
};
