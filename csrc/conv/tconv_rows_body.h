/* The conv row kernels (tconv_rows.h), compiled once per ISA file (tconv_rows_*.c) with
 * that file's flags: the includer defines TCONV_ROWS_TABLE, the table's name.
 * Plain C the compiler vectorizes; restrict pointers rule out aliasing. */
#include <string.h>

#include "conv/tconv_rows.h"
#include "obx_common.h"

/* clamp(rintf(v), -128, 127) for the default rounding mode, without a
 * float-to-int conversion (inline, vectorizable, defined for any input):
 * adding 1.5 * 2^23 rounds v half to even into the low mantissa bits. Exact
 * for |v| < 2^22; larger values and NaN give some integer, which the clamp
 * bounds (a finite window never scales past 127.0f, and a non-finite one
 * outputs NaN whatever its sum). */
static inline int32_t round_to_i8(float v) {
    const float magic = 12582912.0f;
    float shifted = v + magic;
    uint32_t bits, magic_bits;
    memcpy(&bits, &shifted, sizeof bits);
    memcpy(&magic_bits, &magic, sizeof magic_bits);
    /* Unsigned: far-out and NaN inputs wrap (no signed overflow), then clamp. */
    int32_t q = (int32_t)(bits - magic_bits);
    q = q < 127 ? q : 127;
    return q > -128 ? q : -128;
}

static void accumulate_f32(float *restrict dst, const float *restrict src, const float *restrict w, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] += src[i] * w[i];
}

static void finish_f32(float *restrict out, const float *restrict scale, const float *restrict bias, size_t n) {
    if (bias) {
        for (size_t i = 0; i < n; i++) out[i] = out[i] * scale[i] + bias[i];
    } else {
        for (size_t i = 0; i < n; i++) out[i] = out[i] * scale[i];
    }
}

static void accumulate_i8(int32_t *restrict acc, const float *restrict src, const float *restrict scale,
                          const int8_t *restrict code, size_t n) {
    for (size_t i = 0; i < n; i++) acc[i] += round_to_i8(src[i] * scale[i]) * code[i];
}

/* For non-negative floats the IEEE bit patterns order as the values do, Inf
 * above every finite value and NaN above Inf: one integer max finds the
 * absmax and flags a non-finite window at once. */
static void absmax_bits(int32_t *restrict magnitude, const float *restrict src, size_t stride, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int32_t bits;
        memcpy(&bits, &src[i * stride], sizeof bits);
        bits &= 0x7fffffff;
        magnitude[i] = bits > magnitude[i] ? bits : magnitude[i];
    }
}

/* Selects on bit patterns rather than float compares, so the loops vectorize
 * (a float compare may trap, which keeps the compiler from if-converting it). */
static void window_scales(float *restrict scale_bits, uint8_t *restrict bad, size_t n) {
    const float floor_value = 1e-5f;
    int32_t floor_bits;
    memcpy(&floor_bits, &floor_value, sizeof floor_bits);
    for (size_t i = 0; i < n; i++) {
        int32_t bits;
        memcpy(&bits, &scale_bits[i], sizeof bits);
        int32_t non_finite = bits >= 0x7f800000;
        bits = non_finite ? floor_bits : bits;         /* any finite value will do */
        bits = bits > floor_bits ? bits : floor_bits; /* max(amax, 1e-5f): non-negative floats order as ints */
        float amax;
        memcpy(&amax, &bits, sizeof amax);
        bad[i] = (uint8_t)non_finite;
        scale_bits[i] = 127.0f * (1.0f / amax);
    }
}

/* A NaN where bad[i]: or-ing 0x7fc00000 into any float's bits makes a quiet NaN. */
static inline float nan_where(float y, uint8_t bad) {
    int32_t bits;
    memcpy(&bits, &y, sizeof bits);
    bits |= -(int32_t)bad & 0x7fc00000;
    memcpy(&y, &bits, sizeof y);
    return y;
}

static void finish_i8(float *restrict out, const int32_t *restrict isum, const float *restrict scale,
                      const uint8_t *restrict bad, const float *restrict weight_scale, const float *restrict bias,
                      size_t n) {
    if (bias) {
        for (size_t i = 0; i < n; i++)
            out[i] = nan_where(((float)isum[i] * weight_scale[i]) / scale[i] + bias[i], bad[i]);
    } else {
        for (size_t i = 0; i < n; i++) out[i] = nan_where(((float)isum[i] * weight_scale[i]) / scale[i], bad[i]);
    }
}

/* The integer sum is exact in any order, so the vectorized reduction gives
 * every ISA the scalar build's result. */
static int32_t quantize_run(int8_t *restrict q, const float *restrict src, float scale, size_t n) {
    int32_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t v = round_to_i8(src[i] * scale);
        q[i] = (int8_t)v;
        sum += v;
    }
    return sum;
}

/* An ISA file may bring its own transpose (TCONV_ROWS_TRANSPOSE). */
#ifndef TCONV_ROWS_TRANSPOSE
enum { SQUARE = 16 }; /* 16 floats: one cache line */

/* dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols,
 * in SQUARE squares: each reads and writes SQUARE whole cache lines. */
static void transpose_blocked(const float *src, size_t rows, size_t cols, size_t src_stride, float *dst,
                      size_t dst_stride) {
    for (size_t i0 = 0; i0 < rows; i0 += SQUARE) {
        const size_t ni = OBX_MIN((size_t)SQUARE, rows - i0);
        for (size_t j0 = 0; j0 < cols; j0 += SQUARE) {
            const size_t nj = OBX_MIN((size_t)SQUARE, cols - j0);
            const float *s = src + i0 * src_stride + j0;
            float *d = dst + j0 * dst_stride + i0;
            if (ni == SQUARE && nj == SQUARE) {
                for (size_t j = 0; j < SQUARE; j++)
                    for (size_t i = 0; i < SQUARE; i++) d[j * dst_stride + i] = s[i * src_stride + j];
            } else {
                for (size_t j = 0; j < nj; j++)
                    for (size_t i = 0; i < ni; i++) d[j * dst_stride + i] = s[i * src_stride + j];
            }
        }
    }
}
#define TCONV_ROWS_TRANSPOSE transpose_blocked
#endif

const struct tconv_row_kernels TCONV_ROWS_TABLE = {accumulate_f32, finish_f32,   accumulate_i8,
                                                   absmax_bits,    window_scales, finish_i8,
                                                   quantize_run,   TCONV_ROWS_TRANSPOSE};
