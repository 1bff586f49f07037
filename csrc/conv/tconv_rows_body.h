/* The depthwise row kernels, compiled once per ISA file (tconv_rows_*.c) with
 * that file's flags: the includer defines TCONV_ROWS_TABLE, the table's name.
 * Plain C the compiler vectorizes; restrict pointers rule out aliasing. */
#include <string.h>

#include "conv/tconv_rows.h"

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

static void accumulate_f32(float *restrict dst, const float *restrict src, size_t stride, float w, size_t n) {
    if (stride == 1) {
        for (size_t i = 0; i < n; i++) dst[i] += src[i] * w;
    } else {
        for (size_t i = 0; i < n; i++) dst[i] += src[i * stride] * w;
    }
}

static void accumulate_i8(int32_t *restrict acc, const float *restrict src, size_t stride,
                          const float *restrict scale, int32_t code, size_t n) {
    const int32_t flip = code < 0 ? -1 : 0; /* q * code as (q ^ flip) - flip: no int32 multiply */
    if (stride == 1) {
        for (size_t i = 0; i < n; i++) acc[i] += (round_to_i8(src[i] * scale[i]) ^ flip) - flip;
    } else {
        for (size_t i = 0; i < n; i++) acc[i] += (round_to_i8(src[i * stride] * scale[i]) ^ flip) - flip;
    }
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
                      const uint8_t *restrict bad, float weight_scale, const float *bias, size_t n) {
    if (bias) {
        const float b = *bias;
        for (size_t i = 0; i < n; i++) out[i] = nan_where(((float)isum[i] * weight_scale) / scale[i] + b, bad[i]);
    } else {
        for (size_t i = 0; i < n; i++) out[i] = nan_where(((float)isum[i] * weight_scale) / scale[i], bad[i]);
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

const struct tconv_row_kernels TCONV_ROWS_TABLE = {accumulate_f32, accumulate_i8, absmax_bits, window_scales,
                                                   finish_i8, quantize_run};
