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

/* A K-block's column pairs, with the codes ahead requested into L1 and L2
 * (tmm_internal.h, TMM_CODE_PREFETCH). */
static ALWAYS_INLINE void load_block(const uint8_t *block, __m512i *bits) {
    for (int p = 0; p < COL_PAIRS; p++) {
        _mm_prefetch((const char *)(block + p * 64 + TMM_CODE_PREFETCH), _MM_HINT_T0);
        _mm_prefetch((const char *)(block + p * 64 + TMM_CODE_PREFETCH_L2), _MM_HINT_T1);
        bits[p] = _mm512_load_si512((const void *)(block + p * 64));
    }
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
        load_block(block, bits);
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

/* One row (token generation, the weight stream from DRAM): each 2-bit field
 * is masked in place instead of shifted down, so field s reads as u 4^s into
 * its own accumulators, divided by 4^s at the end (an exact arithmetic
 * shift: every term is a multiple of 4^s): a third fewer vector operations
 * per code byte. With the L2 prefetch (load_block), a cold 4096 x 4096 call went
 * from 0.385 to 0.350 ms (medians of 8 alternating runs over 1.2 GB of
 * weight copies; the prefetch alone gave 0.365). Exact while
 * no accumulator can overflow: a lane adds at most 4 x 2 x 64 x 128 per
 * K-block, under 2^31 for fewer than ROW_FIELDS_MAX_CHUNKS chunks. */
#define ROW_FIELDS_MAX_CHUNKS ((size_t)1 << 16)

static ALWAYS_INLINE void i8_row_fields(const uint8_t *panel, const int8_t *q, size_t c0, size_t c1,
                                        uint32_t *usum) {
    const __m512i mask = _mm512_set1_epi8(3);
    __m512i acc[4][COL_PAIRS];
    for (int s = 0; s < 4; s++)
        for (int p = 0; p < COL_PAIRS; p++) acc[s][p] = _mm512_setzero_si512();
    size_t c = c0;
    while (c < c1) {
        const uint8_t *block = panel + (c / 4) * TMM_NR * 32;
        const int8_t *qc = q + (c - c0) * TMM_CHUNK;
        __m512i bits[COL_PAIRS];
        load_block(block, bits);
        if ((c % 4 == 0) && (c + 4 <= c1)) {
            for (int s = 0; s < 4; s++) {
                const __m512i field = _mm512_set1_epi8((char)(3 << (2 * s)));
                __m512i qb = broadcast_chunk(qc + s * 32);
                for (int p = 0; p < COL_PAIRS; p++)
                    acc[s][p] = _mm512_dpbusd_epi32(acc[s][p], _mm512_and_si512(bits[p], field), qb);
            }
            c += 4;
        } else {
            __m128i shift = _mm_cvtsi32_si128(2 * (int)(c % 4));
            __m512i qb = broadcast_chunk(qc);
            for (int p = 0; p < COL_PAIRS; p++) {
                __m512i u = _mm512_and_si512(_mm512_srl_epi16(bits[p], shift), mask);
                acc[0][p] = _mm512_dpbusd_epi32(acc[0][p], u, qb);
            }
            c += 1;
        }
    }
    for (int p = 0; p < COL_PAIRS; p++)
        acc[0][p] = _mm512_add_epi32(_mm512_add_epi32(acc[0][p], _mm512_srai_epi32(acc[1][p], 2)),
                                     _mm512_add_epi32(_mm512_srai_epi32(acc[2][p], 4),
                                                      _mm512_srai_epi32(acc[3][p], 6)));
    _mm256_storeu_si256((__m256i *)usum, row_sums(acc[0]));
}

static void i8_kernel_avx512(const uint8_t *panel, size_t kblocks, size_t rows,
                             const int8_t *const *q, size_t chunk_begin, size_t chunk_end,
                             uint32_t *usum) {
    (void)kblocks;
    switch (rows) {
    case 1:
        if (chunk_end - chunk_begin < ROW_FIELDS_MAX_CHUNKS) i8_row_fields(panel, q[0], chunk_begin, chunk_end, usum);
        else i8_tile(panel, q, chunk_begin, chunk_end, 1, usum);
        break;
    case 2: i8_tile(panel, q, chunk_begin, chunk_end, 2, usum); break;
    case 3: i8_tile(panel, q, chunk_begin, chunk_end, 3, usum); break;
    default: i8_tile(panel, q, chunk_begin, chunk_end, 4, usum); break;
    }
}

/* ---- integer GEMM (TMM_PATH_I8_GEMM) -------------------------------------- */

/* A panel's K-block is 8 columns x 32 bytes, byte 8 t + j of a column holding
 * k = 32 s + 8 t + j in bits 2 s. Two qword permutes per pair of stages turn
 * the four 64-byte loads into four vectors "qword t of every column"; each
 * then gives, per bit field s, the vector of t8 = 4 s + t. */
static void i8_gemm_decode_avx512(const uint8_t *panel0, size_t kblocks, size_t b_begin,
                                  size_t b_end, size_t panels, uint8_t *wdec) {
    const __m512i mask = _mm512_set1_epi8(3);
    const __m512i pick_t01 = _mm512_setr_epi64(0, 4, 8, 12, 1, 5, 9, 13);
    const __m512i pick_t23 = _mm512_setr_epi64(2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i low_halves = _mm512_setr_epi64(0, 1, 2, 3, 8, 9, 10, 11);
    const __m512i high_halves = _mm512_setr_epi64(4, 5, 6, 7, 12, 13, 14, 15);
    const size_t panel_bytes = kblocks * TMM_NR * 32;
    for (size_t v = 0; v < TMM_I8_GEMM_PANELS; v++) {
        uint8_t *out = wdec + v * 64;
        const size_t step = TMM_I8_GEMM_PANELS * 64; /* bytes from one t8 to the next */
        if (v >= panels) {
            for (size_t t8 = 0; t8 < (b_end - b_begin) * 16; t8++)
                _mm512_store_si512((void *)(out + t8 * step), _mm512_setzero_si512());
            continue;
        }
        const uint8_t *panel = panel0 + v * panel_bytes;
        for (size_t b = 0; b < b_end - b_begin; b++) {
            const uint8_t *blk = panel + (b_begin + b) * TMM_NR * 32;
            /* The codes come from DRAM when the weights are cold: read ahead
             * as the multiply kernel does. */
            for (int line = 0; line < 4; line++)
                _mm_prefetch((const char *)(blk + 64 * line + TMM_CODE_PREFETCH), _MM_HINT_T0);
            __m512i z0 = _mm512_load_si512((const void *)blk);
            __m512i z1 = _mm512_load_si512((const void *)(blk + 64));
            __m512i z2 = _mm512_load_si512((const void *)(blk + 128));
            __m512i z3 = _mm512_load_si512((const void *)(blk + 192));
            /* columns 0-3 (4-7), qwords t = 0, 1 and t = 2, 3 */
            __m512i a01 = _mm512_permutex2var_epi64(z0, pick_t01, z1);
            __m512i a23 = _mm512_permutex2var_epi64(z0, pick_t23, z1);
            __m512i b01 = _mm512_permutex2var_epi64(z2, pick_t01, z3);
            __m512i b23 = _mm512_permutex2var_epi64(z2, pick_t23, z3);
            __m512i by_t[4] = {_mm512_permutex2var_epi64(a01, low_halves, b01),
                               _mm512_permutex2var_epi64(a01, high_halves, b01),
                               _mm512_permutex2var_epi64(a23, low_halves, b23),
                               _mm512_permutex2var_epi64(a23, high_halves, b23)};
            for (int s = 0; s < 4; s++)
                for (int t = 0; t < 4; t++) {
                    __m512i u = _mm512_and_si512(_mm512_srli_epi16(by_t[t], 2 * s), mask);
                    _mm512_store_si512((void *)(out + (b * 16 + 4 * s + t) * step), u);
                }
        }
    }
}

/* vpdpbusd in place through asm: GCC 12 copied the intrinsic's accumulators
 * between registers and the stack on every step (2.3x slower at M = 128). */
static ALWAYS_INLINE void dpbusd_in_place(__m512i *acc, __m512i u8, __m512i s8) {
#ifdef ONNXBIT_TEST_EMULATED_X86_INTRINSICS_H /* tests/native: intrinsics stand-ins, no asm */
    *acc = _mm512_dpbusd_epi32(*acc, u8, s8);
#else
    __asm__("vpdpbusd %2, %1, %0" : "+v"(*acc) : "v"(u8), "v"(s8));
#endif
}

/* ROWS (<= 6) rows x 4 panels: up to 24 accumulators, named (GCC shuffled an
 * array of them through the stack); the rows past ROWS compile away. Lane
 * 2 r + h of panel v's accumulator holds column r's sum over
 * k = 8 t8 + 4 h .. + 3 (one broadcast qword of activations feeds both
 * halves); the halves are added once, after the loop. */
#define GEMM_ROW_STEP(i)                                                       \
    if (i < ROWS) {                                                            \
        int64_t eight;                                                         \
        memcpy(&eight, q[i] + 8 * t, sizeof eight);                            \
        __m512i a = _mm512_set1_epi64(eight);                                  \
        dpbusd_in_place(&c##i##0, w0, a);                                      \
        dpbusd_in_place(&c##i##1, w1, a);                                      \
        dpbusd_in_place(&c##i##2, w2, a);                                      \
        dpbusd_in_place(&c##i##3, w3, a);                                      \
    }
#define GEMM_ROW_LOAD(i)                                                       \
    if (i < ROWS && !first) {                                                  \
        const int32_t *src = carry + i * TMM_I8_GEMM_PANELS * 16;              \
        c##i##0 = _mm512_load_si512((const void *)src);                        \
        c##i##1 = _mm512_load_si512((const void *)(src + 16));                 \
        c##i##2 = _mm512_load_si512((const void *)(src + 32));                 \
        c##i##3 = _mm512_load_si512((const void *)(src + 48));                 \
    }
#define GEMM_ROW_STORE(i)                                                      \
    if (i < ROWS && usum) {                                                    \
        uint32_t *dst = usum + i * TMM_I8_GEMM_PANELS * TMM_NR;                \
        add_halves(dst, c##i##0);                                              \
        add_halves(dst + TMM_NR, c##i##1);                                     \
        add_halves(dst + 2 * TMM_NR, c##i##2);                                 \
        add_halves(dst + 3 * TMM_NR, c##i##3);                                 \
    } else if (i < ROWS) {                                                     \
        int32_t *dst = carry + i * TMM_I8_GEMM_PANELS * 16;                    \
        _mm512_store_si512((void *)dst, c##i##0);                              \
        _mm512_store_si512((void *)(dst + 16), c##i##1);                       \
        _mm512_store_si512((void *)(dst + 32), c##i##2);                       \
        _mm512_store_si512((void *)(dst + 48), c##i##3);                       \
    }

static ALWAYS_INLINE void add_halves(uint32_t *dst, __m512i acc) {
    __m512i pairs = _mm512_add_epi32(acc, _mm512_srli_epi64(acc, 32));
    _mm256_storeu_si256((__m256i *)dst, _mm512_cvtepi64_epi32(pairs));
}

static ALWAYS_INLINE void i8_gemm_tile(const uint8_t *wdec, size_t t8_count,
                                       const int8_t *const *q, int32_t *carry, int first,
                                       uint32_t *usum, int ROWS) {
    const __m512i z = _mm512_setzero_si512();
    __m512i c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
    __m512i c20 = z, c21 = z, c22 = z, c23 = z, c30 = z, c31 = z, c32 = z, c33 = z;
    __m512i c40 = z, c41 = z, c42 = z, c43 = z, c50 = z, c51 = z, c52 = z, c53 = z;
    GEMM_ROW_LOAD(0)
    GEMM_ROW_LOAD(1)
    GEMM_ROW_LOAD(2)
    GEMM_ROW_LOAD(3)
    GEMM_ROW_LOAD(4)
    GEMM_ROW_LOAD(5)
    for (size_t t = 0; t < t8_count; t++) {
        const uint8_t *wt = wdec + t * TMM_I8_GEMM_PANELS * 64;
        __m512i w0 = _mm512_load_si512((const void *)wt);
        __m512i w1 = _mm512_load_si512((const void *)(wt + 64));
        __m512i w2 = _mm512_load_si512((const void *)(wt + 128));
        __m512i w3 = _mm512_load_si512((const void *)(wt + 192));
        GEMM_ROW_STEP(0)
        GEMM_ROW_STEP(1)
        GEMM_ROW_STEP(2)
        GEMM_ROW_STEP(3)
        GEMM_ROW_STEP(4)
        GEMM_ROW_STEP(5)
    }
    GEMM_ROW_STORE(0)
    GEMM_ROW_STORE(1)
    GEMM_ROW_STORE(2)
    GEMM_ROW_STORE(3)
    GEMM_ROW_STORE(4)
    GEMM_ROW_STORE(5)
}

static void i8_gemm_avx512(const uint8_t *wdec, size_t t8_count, size_t rows,
                           const int8_t *const *q, int32_t *carry, int first, uint32_t *usum) {
    switch (rows) {
    case 1: i8_gemm_tile(wdec, t8_count, q, carry, first, usum, 1); break;
    case 2: i8_gemm_tile(wdec, t8_count, q, carry, first, usum, 2); break;
    case 3: i8_gemm_tile(wdec, t8_count, q, carry, first, usum, 3); break;
    case 4: i8_gemm_tile(wdec, t8_count, q, carry, first, usum, 4); break;
    case 5: i8_gemm_tile(wdec, t8_count, q, carry, first, usum, 5); break;
    default: i8_gemm_tile(wdec, t8_count, q, carry, first, usum, 6); break;
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
    .i8_gemm_decode = i8_gemm_decode_avx512,
    .i8_gemm = i8_gemm_avx512,
};
