/* AVX-VNNI refinement of the AVX2 level (Alder Lake and later, Zen 5):
 * vpdpbusd multiplies the unsigned codes u in {0,1,2} by the signed
 * activations and adds groups of four straight into int32 lanes, so the int16
 * stage and its widening of the plain AVX2 kernel disappear. Layout and chunk
 * walk are those of tmm_kernel_avx2.c; the float path and the quantizer are
 * shared with it. */
#include <immintrin.h>
#include <string.h>

#include "obx_common.h"
#include "tmm_internal.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

static ALWAYS_INLINE uint32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return (uint32_t)_mm_cvtsi128_si32(s);
}

static ALWAYS_INLINE void i8_tile(const uint8_t *panel, const int8_t *const *q, size_t c0,
                                  size_t c1, int ROWS, int COLS, int col0, uint32_t *usum) {
    const __m256i mask = _mm256_set1_epi8(3);
    __m256i acc[4][8];
    for (int i = 0; i < ROWS; i++)
        for (int r = 0; r < COLS; r++) acc[i][r] = _mm256_setzero_si256();
    size_t c = c0;
    while (c < c1) {
        const uint8_t *block = panel + (c / 4) * TMM_NR * 32;
        size_t qoff = (c - c0) * TMM_CHUNK;
        if ((c % 4 == 0) && (c + 4 <= c1)) {
            for (int r = 0; r < COLS; r++) {
                /* As the AVX-512 kernel (tmm_internal.h, TMM_CODE_PREFETCH). */
                _mm_prefetch((const char *)(block + (col0 + r) * 32 + TMM_CODE_PREFETCH),
                             _MM_HINT_T0);
                __m256i bits = _mm256_load_si256((const __m256i *)(block + (col0 + r) * 32));
                for (int s = 0; s < 4; s++) {
                    __m256i u = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * s), mask);
                    for (int i = 0; i < ROWS; i++) {
                        __m256i qv = _mm256_load_si256((const __m256i *)(q[i] + qoff + s * 32));
                        acc[i][r] = _mm256_dpbusd_avx_epi32(acc[i][r], u, qv);
                    }
                }
            }
            c += 4;
        } else {
            __m128i shift = _mm_cvtsi32_si128(2 * (int)(c % 4));
            for (int r = 0; r < COLS; r++) {
                __m256i bits = _mm256_load_si256((const __m256i *)(block + (col0 + r) * 32));
                __m256i u = _mm256_and_si256(_mm256_srl_epi16(bits, shift), mask);
                for (int i = 0; i < ROWS; i++) {
                    __m256i qv = _mm256_load_si256((const __m256i *)(q[i] + qoff));
                    acc[i][r] = _mm256_dpbusd_avx_epi32(acc[i][r], u, qv);
                }
            }
            c += 1;
        }
    }
    for (int i = 0; i < ROWS; i++)
        for (int r = 0; r < COLS; r++) usum[i * TMM_NR + col0 + r] = hsum_epi32(acc[i][r]);
}

static void i8_kernel_avxvnni(const uint8_t *panel, size_t kblocks, size_t rows,
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

/* ---- integer GEMM (TMM_PATH_I8_GEMM, contract in tmm_internal.h) ------- */

/* The AVX-512 kernel's decoded layout and carried sums on 256-bit vectors: a
 * ymm holds four columns of a panel's 64 bytes, so a panel is two
 * accumulators, lane 2 r + h of the first holding column r's sum over
 * k = 8 t8 + 4 h .. + 3. Sixteen ymm registers hold two rows x two panels of
 * accumulators beside the weights and activations, so the kernel walks a
 * tile in such passes, each re-reading the 32 KiB decoded slab from L1.
 * (A plain AVX2 form, vpmaddubsw + vpmaddwd, measured no faster than the
 * lookup path on this layout, so that level keeps the lookup path.) */

/* Columns 4 h .. 4 h + 3 of a K-block (32 bytes each, byte 8 t + j holding
 * k = 32 s + 8 t + j in bits 2 s) as the four vectors "qword t of each
 * column", then field s of vector t is t8 = 4 s + t. */
static void i8_gemm_decode_avxvnni(const uint8_t *panel0, size_t kblocks, size_t b_begin,
                                   size_t b_end, size_t panels, uint8_t *wdec) {
    const __m256i mask = _mm256_set1_epi8(3);
    const size_t panel_bytes = kblocks * TMM_NR * 32, step = TMM_I8_GEMM_PANELS * 64;
    for (size_t v = 0; v < TMM_I8_GEMM_PANELS; v++) {
        uint8_t *out = wdec + v * 64;
        if (v >= panels) {
            for (size_t t8 = 0; t8 < (b_end - b_begin) * 16; t8++) {
                _mm256_store_si256((__m256i *)(out + t8 * step), _mm256_setzero_si256());
                _mm256_store_si256((__m256i *)(out + t8 * step + 32), _mm256_setzero_si256());
            }
            continue;
        }
        const uint8_t *panel = panel0 + v * panel_bytes;
        for (size_t b = 0; b < b_end - b_begin; b++) {
            const uint8_t *blk = panel + (b_begin + b) * TMM_NR * 32;
            for (int line = 0; line < 4; line++)
                _mm_prefetch((const char *)(blk + 64 * line + TMM_CODE_PREFETCH), _MM_HINT_T0);
            for (int h = 0; h < 2; h++) {
                const uint8_t *cols = blk + h * 4 * 32;
                __m256i c0 = _mm256_load_si256((const __m256i *)cols);
                __m256i c1 = _mm256_load_si256((const __m256i *)(cols + 32));
                __m256i c2 = _mm256_load_si256((const __m256i *)(cols + 64));
                __m256i c3 = _mm256_load_si256((const __m256i *)(cols + 96));
                /* 4 x 4 transpose of qwords: by_t[t] = qword t of c0, c1, c2, c3 */
                __m256i lo01 = _mm256_unpacklo_epi64(c0, c1), hi01 = _mm256_unpackhi_epi64(c0, c1);
                __m256i lo23 = _mm256_unpacklo_epi64(c2, c3), hi23 = _mm256_unpackhi_epi64(c2, c3);
                __m256i by_t[4] = {_mm256_permute2x128_si256(lo01, lo23, 0x20),
                                   _mm256_permute2x128_si256(hi01, hi23, 0x20),
                                   _mm256_permute2x128_si256(lo01, lo23, 0x31),
                                   _mm256_permute2x128_si256(hi01, hi23, 0x31)};
                for (int s = 0; s < 4; s++)
                    for (int t = 0; t < 4; t++) {
                        __m256i u = _mm256_and_si256(_mm256_srli_epi16(by_t[t], 2 * s), mask);
                        _mm256_store_si256((__m256i *)(out + (b * 16 + 4 * s + t) * step + 32 * h), u);
                    }
            }
        }
    }
}

/* Lane pairs of the two halves of a panel's accumulators -> its 8 column sums. */
static ALWAYS_INLINE void store_column_sums(uint32_t *dst, __m256i lo, __m256i hi) {
    __m256i pairs = _mm256_hadd_epi32(lo, hi); /* c0 c1 c4 c5 | c2 c3 c6 c7 */
    pairs = _mm256_permute4x64_epi64(pairs, _MM_SHUFFLE(3, 1, 2, 0));
    _mm256_storeu_si256((__m256i *)dst, pairs);
}

/* Rows row0 .. row0 + ROWS - 1 (ROWS 1 or 2) x panels v0, v0 + 1. */
static ALWAYS_INLINE void i8_gemm_pass(const uint8_t *wdec, size_t t8_count, const int8_t *const *q,
                                       size_t row0, size_t v0, int32_t *carry, int first, uint32_t *usum,
                                       int ROWS) {
    __m256i a00, a01, a02, a03, a10, a11, a12, a13; /* row, (panel, half) */
    int32_t *c0 = carry + (row0 * TMM_I8_GEMM_PANELS + v0) * 16;
    int32_t *c1 = c0 + TMM_I8_GEMM_PANELS * 16;
    if (first) {
        a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = _mm256_setzero_si256();
    } else {
        a00 = _mm256_load_si256((const __m256i *)c0);
        a01 = _mm256_load_si256((const __m256i *)(c0 + 8));
        a02 = _mm256_load_si256((const __m256i *)(c0 + 16));
        a03 = _mm256_load_si256((const __m256i *)(c0 + 24));
        a10 = a11 = a12 = a13 = _mm256_setzero_si256();
        if (ROWS == 2) {
            a10 = _mm256_load_si256((const __m256i *)c1);
            a11 = _mm256_load_si256((const __m256i *)(c1 + 8));
            a12 = _mm256_load_si256((const __m256i *)(c1 + 16));
            a13 = _mm256_load_si256((const __m256i *)(c1 + 24));
        }
    }
    const int8_t *q0 = q[row0], *q1 = ROWS == 2 ? q[row0 + 1] : q[row0];
    const uint8_t *wt = wdec + v0 * 64;
    for (size_t t = 0; t < t8_count; t++, wt += TMM_I8_GEMM_PANELS * 64) {
        int64_t eight0, eight1;
        memcpy(&eight0, q0 + 8 * t, sizeof eight0);
        __m256i x0 = _mm256_set1_epi64x(eight0), x1 = x0;
        if (ROWS == 2) {
            memcpy(&eight1, q1 + 8 * t, sizeof eight1);
            x1 = _mm256_set1_epi64x(eight1);
        }
        __m256i w = _mm256_load_si256((const __m256i *)wt);
        a00 = _mm256_dpbusd_avx_epi32(a00, w, x0);
        if (ROWS == 2) a10 = _mm256_dpbusd_avx_epi32(a10, w, x1);
        w = _mm256_load_si256((const __m256i *)(wt + 32));
        a01 = _mm256_dpbusd_avx_epi32(a01, w, x0);
        if (ROWS == 2) a11 = _mm256_dpbusd_avx_epi32(a11, w, x1);
        w = _mm256_load_si256((const __m256i *)(wt + 64));
        a02 = _mm256_dpbusd_avx_epi32(a02, w, x0);
        if (ROWS == 2) a12 = _mm256_dpbusd_avx_epi32(a12, w, x1);
        w = _mm256_load_si256((const __m256i *)(wt + 96));
        a03 = _mm256_dpbusd_avx_epi32(a03, w, x0);
        if (ROWS == 2) a13 = _mm256_dpbusd_avx_epi32(a13, w, x1);
    }
    if (usum) {
        uint32_t *d0 = usum + (row0 * TMM_I8_GEMM_PANELS + v0) * TMM_NR;
        store_column_sums(d0, a00, a01);
        store_column_sums(d0 + TMM_NR, a02, a03);
        if (ROWS == 2) {
            uint32_t *d1 = d0 + TMM_I8_GEMM_PANELS * TMM_NR;
            store_column_sums(d1, a10, a11);
            store_column_sums(d1 + TMM_NR, a12, a13);
        }
        return;
    }
    _mm256_store_si256((__m256i *)c0, a00);
    _mm256_store_si256((__m256i *)(c0 + 8), a01);
    _mm256_store_si256((__m256i *)(c0 + 16), a02);
    _mm256_store_si256((__m256i *)(c0 + 24), a03);
    if (ROWS == 2) {
        _mm256_store_si256((__m256i *)c1, a10);
        _mm256_store_si256((__m256i *)(c1 + 8), a11);
        _mm256_store_si256((__m256i *)(c1 + 16), a12);
        _mm256_store_si256((__m256i *)(c1 + 24), a13);
    }
}

static void i8_gemm_avxvnni(const uint8_t *wdec, size_t t8_count, size_t rows, const int8_t *const *q,
                            int32_t *carry, int first, uint32_t *usum) {
    for (size_t row0 = 0; row0 < rows; row0 += 2)
        for (size_t v0 = 0; v0 < TMM_I8_GEMM_PANELS; v0 += 2) {
            if (rows - row0 >= 2) i8_gemm_pass(wdec, t8_count, q, row0, v0, carry, first, usum, 2);
            else i8_gemm_pass(wdec, t8_count, q, row0, v0, carry, first, usum, 1);
        }
}

const struct tmm_kernels tmm_kernels_avxvnni = {
    .i8 = i8_kernel_avxvnni,
    .f32 = tmm_f32_kernel_avx2,
    .quantize = tmm_quantize_row_avx2,
    /* The AVX2 grouped kernel: these CPUs run it, and it is the tested one. */
    .i8_groups = tmm_i8_groups_avx2,
    .f32_decode = tmm_f32_decode_avx2,
    .f32_dot = tmm_f32_dot_avx2,
    .f32_scaled = tmm_f32_scaled_avx2,
    .f32_decode_scaled = tmm_f32_decode_scaled_avx2,
    .f32_gemm_decode = tmm_f32_gemm_decode_avx2,
    .f32_gemm = tmm_f32_gemm_avx2,
    .f32_gemm_lanes = 8,
    .f32_gemm_width = 16,
    .i8_gemm_decode = i8_gemm_decode_avxvnni,
    .i8_gemm = i8_gemm_avxvnni,
};
