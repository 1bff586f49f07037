/* The conv row kernels built for AVX2 (tconv_rows_body.h), with a transpose
 * in 8 x 8 register blocks: the compiler does not vectorize the plain one
 * (scalar loads and stores, measured 27% of a depthwise conv's time). */
#include <immintrin.h>

#include "conv/tconv_rows.h"
#include "obx_common.h"

/* r[i] (row i) -> r[j] (column j), in registers. */
static inline void transpose_8x8_registers(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);    /* a0 b0 a1 b1 | a4 b4 a5 b5 */
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]); /* a2 b2 a3 b3 | a6 b6 a7 b7 */
    }
    for (int h = 0; h < 2; h++) { /* rows 0-3, then rows 4-7 */
        const __m256 *v = t + 4 * h;
        u[4 * h + 0] = _mm256_shuffle_ps(v[0], v[2], 0x44); /* column 0 | 4 */
        u[4 * h + 1] = _mm256_shuffle_ps(v[0], v[2], 0xEE); /* column 1 | 5 */
        u[4 * h + 2] = _mm256_shuffle_ps(v[1], v[3], 0x44); /* column 2 | 6 */
        u[4 * h + 3] = _mm256_shuffle_ps(v[1], v[3], 0xEE); /* column 3 | 7 */
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        r[j + 4] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}

static inline void transpose_8x8(const float *src, size_t src_stride, float *dst, size_t dst_stride) {
    __m256 r[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * src_stride);
    transpose_8x8_registers(r);
    for (int j = 0; j < 8; j++) _mm256_storeu_ps(dst + j * dst_stride, r[j]);
}

void tconv_transpose_avx2(const float *src, size_t rows, size_t cols, size_t src_stride, float *dst,
                          size_t dst_stride) {
    const size_t rows8 = rows - rows % 8, cols8 = cols - cols % 8;
    for (size_t i = 0; i < rows8; i += 8) {
        for (size_t j = 0; j < cols8; j += 8) transpose_8x8(src + i * src_stride + j, src_stride, dst + j * dst_stride + i, dst_stride);
        for (size_t j = cols8; j < cols; j++)
            for (size_t k = i; k < i + 8; k++) dst[j * dst_stride + k] = src[k * src_stride + j];
    }
    for (size_t i = rows8; i < rows; i++)
        for (size_t j = 0; j < cols; j++) dst[j * dst_stride + i] = src[i * src_stride + j];
}

/* The first n (<= 8) lanes, for masked loads and stores. */
static inline __m256i first_lanes8(size_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* rint(x * s) * inverse (tconv_rows.h dequantize_pixels), 8 lanes. */
static inline __m256 dequantize8(__m256 x, __m256 s, __m256 inverse) {
    return _mm256_mul_ps(_mm256_round_ps(_mm256_mul_ps(x, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), inverse);
}

/* tconv_rows.h block_tile in 8 x 8 register blocks (8 pixels, 8 channels),
 * dequantized before the transpose, where a lane is a pixel, and each
 * pixel's 8 channels stored straight at its place in the tile: through a
 * square in L1 and a copy, the 512 @14x14 stride-2 float conv took 1.4x the
 * time of a transpose straight into an unpadded tile. */
static void block_tile_avx2(float *tile, const uint32_t *at, const float *x, size_t channels, size_t pixels,
                            size_t plane_stride, const float *scale, const float *inverse) {
    for (size_t p0 = 0; p0 < pixels; p0 += 8) {
        const size_t n = OBX_MIN((size_t)8, pixels - p0);
        const __m256i mask = first_lanes8(n);
        __m256 s = _mm256_setzero_ps(), inv = s;
        if (scale) s = _mm256_maskload_ps(scale + p0, mask), inv = _mm256_maskload_ps(inverse + p0, mask);
        for (size_t h = 0; h < 16; h += 8) {
            __m256 r[8];
            for (size_t i = 0; i < 8; i++) {
                if (h + i >= channels) { /* +0 past the channels, whatever the pixel's inverse */
                    r[i] = _mm256_setzero_ps();
                    continue;
                }
                r[i] = _mm256_maskload_ps(x + (h + i) * plane_stride + p0, mask);
                if (scale) r[i] = dequantize8(r[i], s, inv);
            }
            transpose_8x8_registers(r);
            for (size_t j = 0; j < n; j++) _mm256_storeu_ps(tile + at[p0 + j] + h, r[j]);
        }
    }
}

/* 16 columns from x (dequantized with scale) -> their 8 even and 8 odd ones. */
static inline __attribute__((always_inline)) void split16(const float *x, const float *scale, const float *inverse,
                                                          __m256i lo_lanes, __m256i hi_lanes, int masked,
                                                          __m256 *even, __m256 *odd) {
    __m256 lo = masked ? _mm256_maskload_ps(x, lo_lanes) : _mm256_loadu_ps(x);
    __m256 hi = masked ? _mm256_maskload_ps(x + 8, hi_lanes) : _mm256_loadu_ps(x + 8);
    if (scale) {
        lo = dequantize8(lo, masked ? _mm256_maskload_ps(scale, lo_lanes) : _mm256_loadu_ps(scale),
                         masked ? _mm256_maskload_ps(inverse, lo_lanes) : _mm256_loadu_ps(inverse));
        hi = dequantize8(hi, masked ? _mm256_maskload_ps(scale + 8, hi_lanes) : _mm256_loadu_ps(scale + 8),
                         masked ? _mm256_maskload_ps(inverse + 8, hi_lanes) : _mm256_loadu_ps(inverse + 8));
    }
    /* within each 128-bit lane: lo's even (odd) pair, then hi's; then the 64-bit pairs sorted */
    *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8));
    *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD)), 0xD8));
}

/* tconv_rows.h stage_phases as the AVX-512 file's stage_wide_rows does it,
 * 16 columns a step: plain loads and stores for whole steps, one masked step
 * a row with masks worked out once. The generic form (a chunk dequantized to
 * a buffer, then split) took 54% of a 96 x 56x56 stride-2 act_quant 3 call. */
static inline __attribute__((always_inline)) void stage_rows_avx2(float *dst, const float *src,
                                                                  const struct tconv_phase_layout *l,
                                                                  const float *scale, const float *inverse) {
    const struct tconv_phase_steps p = tconv_phase_steps(l, 8);
    const size_t steps = p.steps, tail_c = p.tail_c, tail_k = p.tail_k;
    const __m256i lo_lanes = first_lanes8(OBX_MIN(p.left, (size_t)8));
    const __m256i hi_lanes = first_lanes8(p.left > 8 ? OBX_MIN(p.left - 8, (size_t)8) : 0);
    const __m256i even_mask = first_lanes8(l->n_even - tail_k), odd_mask = first_lanes8(l->n_odd - tail_k);
    for (size_t r = 0; r < l->rows; r++) {
        float *row = tconv_phase_row(dst, l, r), *even = row + l->even_at, *odd = row + l->odd_at;
        const size_t at = r * l->in_w;
        __m256 e, o;
        for (size_t i = 0; i < steps; i++) {
            const size_t x0 = at + 16 * i;
            split16(src + x0, scale ? scale + x0 : NULL, scale ? inverse + x0 : NULL, lo_lanes, hi_lanes, 0, &e, &o);
            _mm256_storeu_ps(even + 8 * i, e);
            _mm256_storeu_ps(odd + 8 * i, o);
        }
        if (!p.tail) continue;
        const size_t x0 = at + tail_c;
        split16(src + x0, scale ? scale + x0 : NULL, scale ? inverse + x0 : NULL, lo_lanes, hi_lanes, 1, &e, &o);
        _mm256_maskstore_ps(even + tail_k, even_mask, e);
        _mm256_maskstore_ps(odd + tail_k, odd_mask, o);
    }
}

static void stage_phases_avx2(float *dst, const float *src, const struct tconv_phase_layout *layout,
                              const float *scale, const float *inverse) {
    const struct tconv_phase_layout l = *layout; /* in registers: the stores could alias it */
    if (scale) stage_rows_avx2(dst, src, &l, scale, inverse);
    else stage_rows_avx2(dst, src, &l, NULL, NULL);
}

/* 256-bit vectors (tconv_rows_body.h tconv_vn). */
#define TCONV_NATIVE_FLOATS 8
#define TCONV_STORE_FIRST(dst, v, n) _mm256_maskstore_ps((dst), first_lanes8(n), (__m256)(v))
#define TCONV_ROWS_TABLE tconv_rows_avx2
#define TCONV_ROWS_TRANSPOSE tconv_transpose_avx2
#define TCONV_ROWS_BLOCK_TILE block_tile_avx2
#define TCONV_ROWS_STAGE_PHASES stage_phases_avx2
#include "conv/tconv_rows_body.h"
