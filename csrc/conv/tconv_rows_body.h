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
    int32_t bits, magic_bits;
    memcpy(&bits, &shifted, sizeof bits);
    memcpy(&magic_bits, &magic, sizeof magic_bits);
    int32_t q = bits - magic_bits;
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

const struct tconv_row_kernels TCONV_ROWS_TABLE = {accumulate_f32, accumulate_i8, absmax_bits};
