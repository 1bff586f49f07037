/* The conv row kernels (tconv_rows.h), compiled once per ISA file (tconv_rows_*.c) with
 * that file's flags: the includer defines TCONV_ROWS_TABLE, the table's name.
 * Plain C the compiler vectorizes; restrict pointers rule out aliasing. */
#include <math.h>
#include <string.h>

#include "conv/tconv_rows.h"
#include "onnxbit/tconv.h"
#include "obx_common.h"

/* Unaligned float vectors (GCC/Clang vector extensions): one register of
 * the file's ISA (or two or four narrower ones), which the compiler's own
 * vectorizer did not manage for the block below (scalar multiplies, 0.17x
 * fp32 Conv). */
typedef float tconv_v16 __attribute__((vector_size(64), aligned(4), may_alias));
typedef float tconv_v8 __attribute__((vector_size(32), aligned(4), may_alias));
typedef float tconv_v4 __attribute__((vector_size(16), aligned(4), may_alias));
typedef float tconv_f16 __attribute__((vector_size(64)));
typedef int32_t tconv_i16 __attribute__((vector_size(64)));
typedef uint32_t tconv_u16 __attribute__((vector_size(64)));
typedef int32_t tconv_i16u __attribute__((vector_size(64), aligned(4), may_alias));

/* The ISA's own vector, TCONV_NATIVE_FLOATS floats (an ISA file sets it):
 * GCC splits a wider one through the stack wherever it meets a scalar, and
 * on AVX2 the 64-byte plane taps ran 9x slower than 32-byte ones. */
#ifndef TCONV_NATIVE_FLOATS
#define TCONV_NATIVE_FLOATS 16
#endif
typedef float tconv_vn __attribute__((vector_size(4 * TCONV_NATIVE_FLOATS), aligned(4), may_alias));
typedef float tconv_fn __attribute__((vector_size(4 * TCONV_NATIVE_FLOATS)));

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
    q = q > -128 ? q : -128;
    /* A negative sum means v < -1.5 * 2^23, whose wrapped difference is
     * positive: -128 (a static act_scale can scale that far). */
    const int32_t negative = (int32_t)bits >> 31;
    return (q & ~negative) | (-128 & negative);
}

static void accumulate_i8(int32_t *restrict acc, const float *restrict src, const float *restrict scale,
                          const int32_t *restrict code, size_t n) {
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

/* absmax_bits over a few planes at a time: each pixel's running maximum stays
 * in a register across them instead of a load and a store per plane. */
static void absmax_planes(int32_t *restrict magnitude, const float *restrict src, size_t plane_stride,
                          size_t planes, size_t n) {
    enum { PLANES_AT_ONCE = 8 };
    size_t c = 0;
    for (; c + PLANES_AT_ONCE <= planes; c += PLANES_AT_ONCE) {
        const float *s = src + c * plane_stride;
        for (size_t i = 0; i < n; i++) {
            int32_t m = magnitude[i];
            for (size_t k = 0; k < PLANES_AT_ONCE; k++) {
                int32_t bits;
                memcpy(&bits, &s[k * plane_stride + i], sizeof bits);
                bits &= 0x7fffffff;
                m = bits > m ? bits : m;
            }
            magnitude[i] = m;
        }
    }
    for (; c < planes; c++) absmax_bits(magnitude, src + c * plane_stride, 1, n);
}

/* The same ordering as a reduction: a max is exact in any order. */
static int32_t absmax_run(const float *restrict src, size_t n) {
    int32_t magnitude = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t bits;
        memcpy(&bits, &src[i], sizeof bits);
        bits &= 0x7fffffff;
        magnitude = bits > magnitude ? bits : magnitude;
    }
    return magnitude;
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

/* A select on bits, so the loop vectorizes (the scalar one divided a pixel
 * at a time: 8 us of a 96 @112x112 act_quant 3 call). */
static void pixel_inverses(float *restrict inverse, const float *restrict scale, const uint8_t *restrict bad,
                           size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float r = 1.0f / scale[i];
        int32_t bits;
        memcpy(&bits, &r, sizeof bits);
        bits = bad[i] ? 0x7fc00000 : bits;
        memcpy(&inverse[i], &bits, sizeof bits);
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

/* 16 values of quantize_run into q, their codes added to *total:
 * round_to_i8 lane by lane, by the float magic-number add (the sum's
 * integer part lands in the low mantissa bits). */
static inline void quantize16(int8_t *restrict q, const float *restrict src, float scale, tconv_i16 *total) {
    typedef int8_t i8x16 __attribute__((vector_size(16), aligned(1), may_alias));
    const float magic = 12582912.0f;
    int32_t magic_bits;
    memcpy(&magic_bits, &magic, sizeof magic_bits);
    const tconv_f16 shifted = *(const tconv_v16 *)src * scale + magic;
    const tconv_i16 bits = (tconv_i16)shifted;
    tconv_i16 v = (tconv_i16)((tconv_u16)bits - (uint32_t)magic_bits);
    v = (v & (v < 127)) | (127 & ~(v < 127));
    v = (v & (v > -128)) | (-128 & ~(v > -128));
    const tconv_i16 negative = bits >> 31;
    v = (v & ~negative) | (-128 & negative);
    *(i8x16 *)q = __builtin_convertvector(v, i8x16);
    *total += v;
}

/* The integer sum is exact in any order, so the vectorized reduction gives
 * every ISA the scalar build's result. */
#ifndef TCONV_ROWS_QUANTIZE_RUN
#define TCONV_ROWS_QUANTIZE_RUN quantize_run
static int32_t quantize_run(int8_t *restrict q, const float *restrict src, float scale, size_t n) {
    int32_t sum = 0;
    /* The compiler vectorizes this loop 64 values a step, with a scalar tail
     * of up to 63 (a third of the time at 144 channels): the rest goes in
     * blocks of 16 in vector types, round_to_i8 lane by lane. */
    const size_t bulk = n - n % 64;
    for (size_t k = 0; k < bulk; k++) {
        int32_t v = round_to_i8(src[k] * scale);
        q[k] = (int8_t)v;
        sum += v;
    }
    size_t i = bulk;
    tconv_i16 total = {0};
    for (; i + 16 <= n; i += 16) quantize16(q + i, src + i, scale, &total);
    for (int j = 0; j < 16; j++) sum += total[j];
    for (; i < n; i++) {
        int32_t v = round_to_i8(src[i] * scale);
        q[i] = (int8_t)v;
        sum += v;
    }
    return sum;
}
#endif


/* An im2col row of int8 codes from its taps' runs of n values each, tap t
 * from src + pixel[t] * pixel_stride, 0 where pixel[t] < 0 (padding); the
 * codes' sum returned. The same codes as quantize_run on each run; runs of
 * 16, 32 or 48 values (stride-2 convs on few channels) go in blocks of 16
 * with one horizontal sum a row, where a quantize_run call a run had taken a
 * third of a 16->32 3x3 stride-2 conv (its per-call set-up and reduction
 * outweighing one or two vectors of work). */
#ifndef TCONV_ROWS_QUANTIZE_TAPS
#define TCONV_ROWS_QUANTIZE_TAPS quantize_taps
static int32_t quantize_taps(int8_t *restrict q, const float *restrict src, const ptrdiff_t *pixel, size_t taps,
                             size_t pixel_stride, size_t n, float scale) {
    int32_t sum = 0;
    if (n % 16 != 0 || n >= 64) {
        for (size_t t = 0; t < taps; t++, q += n) {
            if (pixel[t] < 0) memset(q, 0, n);
            else sum += TCONV_ROWS_QUANTIZE_RUN(q, src + (size_t)pixel[t] * pixel_stride, scale, n);
        }
        return sum;
    }
    tconv_i16 total = {0};
    for (size_t t = 0; t < taps; t++, q += n) {
        if (pixel[t] < 0) {
            memset(q, 0, n);
            continue;
        }
        const float *run = src + (size_t)pixel[t] * pixel_stride;
        for (size_t i = 0; i < n; i += 16) quantize16(q + i, run + i, scale, &total);
    }
    for (int j = 0; j < 16; j++) sum += total[j];
    return sum;
}
#endif

/* acc + x * w for one depthwise tap of a native vector of outputs (TAPN, w
 * a float; TAPNV, wv a vector) or of 16 (TAP16V), w a code in {-1, 0, 1}
 * (the scale comes after the sum): x * w is exact, so a fused multiply-add
 * rounds exactly as the multiply and then the add do (0 * Inf is NaN in
 * both). An ISA file with a 16-lane FMA defines these (AVX-512: one
 * instruction where the plain form takes two; one thread against fp32 Conv,
 * 5x5 depthwise 120@28x28 0.72x -> 0.79x, 104@3x96 0.66x -> 0.70x). */
#ifndef TCONV_TAPN
#define TCONV_TAPN(acc, x, w) ((acc) + (x) * (w))
#define TCONV_TAPNV(acc, x, wv) ((acc) + (x) * (wv))
#define TCONV_TAP16V(acc, x, wv) ((acc) + (x) * (wv))
#endif

/* Outputs [ow0, ow0 + lanes of VT) of a stride-1 depthwise row whose every
 * tap is inside: accumulated in one vector over the taps, in tap order (no
 * contraction: -ffp-contract=off), the scalar edge path's arithmetic. */
#define DEPTHWISE_BLOCK(VT)                                                          \
    do {                                                                             \
        VT acc = {0};                                                                \
        for (size_t t = 0; t < taps; t++) {                                          \
            if (!src[t]) continue;                                                   \
            acc += *(const VT *)(src[t] + column[t] + (ptrdiff_t)ow0) * w[t];        \
        }                                                                            \
        acc = bias ? acc * scale + *bias : acc * scale;                              \
        *(VT *)(out + ow0) = acc;                                                    \
        ow0 += sizeof(VT) / sizeof(float);                                           \
    } while (0)

/* The even and the odd lanes of two native vectors a:b (lanes 0, 2, .. and
 * 1, 3, .. of their 2 TCONV_NATIVE_FLOATS floats). */
typedef int32_t tconv_in __attribute__((vector_size(4 * TCONV_NATIVE_FLOATS)));
#if TCONV_NATIVE_FLOATS == 16
#define EVEN_INDEX 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define ODD_INDEX 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#elif TCONV_NATIVE_FLOATS == 8
#define EVEN_INDEX 0, 2, 4, 6, 8, 10, 12, 14
#define ODD_INDEX 1, 3, 5, 7, 9, 11, 13, 15
#else
#define EVEN_INDEX 0, 2, 4, 6
#define ODD_INDEX 1, 3, 5, 7
#endif
#if defined(__clang__)
#define EVEN_NATIVE(a, b) __builtin_shufflevector(a, b, EVEN_INDEX)
#define ODD_NATIVE(a, b) __builtin_shufflevector(a, b, ODD_INDEX)
#else
#define EVEN_NATIVE(a, b) __builtin_shuffle(a, b, (tconv_in){EVEN_INDEX})
#define ODD_NATIVE(a, b) __builtin_shuffle(a, b, (tconv_in){ODD_INDEX})
#endif

/* DEPTHWISE_BLOCK for stride 2, a native vector of outputs: two loads,
 * their even lanes. */
#define DEPTHWISE_BLOCK_STRIDE2()                                                    \
    do {                                                                             \
        tconv_fn acc = {0};                                                          \
        for (size_t t = 0; t < taps; t++) {                                          \
            if (!src[t]) continue;                                                   \
            const float *in = src[t] + column[t] + 2 * (ptrdiff_t)ow0;               \
            tconv_fn lo = *(const tconv_vn *)in, hi_n = *(const tconv_vn *)(in + TCONV_NATIVE_FLOATS); \
            acc += EVEN_NATIVE(lo, hi_n) * w[t];                                     \
        }                                                                            \
        acc = bias ? acc * scale + *bias : acc * scale;                              \
        *(tconv_vn *)(out + ow0) = acc;                                              \
        ow0 += TCONV_NATIVE_FLOATS;                                                  \
    } while (0)

static inline float finish_value(float acc, float scale, const float *bias) {
    return bias ? acc * scale + *bias : acc * scale;
}

/* One output, checking each tap's column (the row's edges). */
static inline float depthwise_edge(size_t ow, const float *const *src, const ptrdiff_t *column, const float *w,
                                   size_t taps, size_t stride, size_t in_w) {
    float acc = 0.0f;
    for (size_t t = 0; t < taps; t++) {
        ptrdiff_t iw = (ptrdiff_t)(ow * stride) + column[t];
        if (src[t] && iw >= 0 && iw < (ptrdiff_t)in_w) acc += src[t][iw] * w[t];
    }
    return acc;
}

static void depthwise_row_f32(float *restrict out, size_t out_w, const float *const *src, const ptrdiff_t *column,
                              const float *w, size_t taps, size_t stride, size_t in_w, float scale,
                              const float *bias) {
    /* [lo, hi): the outputs every tap reads inside the row */
    ptrdiff_t min_column = 0, max_column = 0;
    for (size_t t = 0; t < taps; t++) {
        if (t == 0 || column[t] < min_column) min_column = column[t];
        if (t == 0 || column[t] > max_column) max_column = column[t];
    }
    const ptrdiff_t s = (ptrdiff_t)stride;
    size_t lo = min_column >= 0 ? 0 : (size_t)((-min_column + s - 1) / s);
    ptrdiff_t last = (ptrdiff_t)in_w - 1 - max_column; /* ow * stride <= last */
    size_t hi = last < 0 ? 0 : OBX_MIN(out_w, (size_t)(last / s + 1));
    if (lo > hi) lo = hi;
    for (size_t ow = 0; ow < lo; ow++)
        out[ow] = finish_value(depthwise_edge(ow, src, column, w, taps, stride, in_w), scale, bias);
    size_t ow0 = lo;
    /* native vectors (tconv_vn), then narrower ones */
    enum { N = TCONV_NATIVE_FLOATS };
    if (stride == 1) {
        while (ow0 + N <= hi) DEPTHWISE_BLOCK(tconv_vn);
        if (N > 8 && ow0 + 8 <= hi) DEPTHWISE_BLOCK(tconv_v8);
        if (N > 4 && ow0 + 4 <= hi) DEPTHWISE_BLOCK(tconv_v4);
    } else if (stride == 2) {
        /* N outputs read 2N inputs; the block's last load ends at input
         * 2 (ow0 + N - 1) + column + 1, one past the last input an output
         * reads: stop a block early so it stays inside the row. */
        while (ow0 + N <= hi && (ptrdiff_t)(2 * (ow0 + N - 1)) + max_column + 2 <= (ptrdiff_t)in_w)
            DEPTHWISE_BLOCK_STRIDE2();
    }
    for (size_t ow = ow0; ow < out_w; ow++)
        out[ow] = finish_value(depthwise_edge(ow, src, column, w, taps, stride, in_w), scale, bias);
}

/* The first n (< a native vector) floats of v at dst. An ISA file with
 * masked stores brings its own (TCONV_STORE_FIRST). */
#ifndef TCONV_STORE_FIRST
#define TCONV_STORE_FIRST(dst, v, n)                 \
    do {                                             \
        const tconv_fn first_ = (v);                 \
        memcpy((dst), &first_, (n) * sizeof(float)); \
    } while (0)
#endif

/* ITEMS native vectors of outputs, item (r, v) being vector v of row r, from
 * (r, v) on (both moved past them), each a register over every tap (one
 * item's taps are a chain of dependent adds; a 14-wide row is too short for
 * per-row vectors, so items run on across row ends). */
#define ROWS_BLOCK(ITEMS)                                                                                      \
    do {                                                                                                       \
        const float *src[ITEMS];                                                                               \
        float *dst[ITEMS];                                                                                     \
        size_t left[ITEMS];                                                                                    \
        tconv_fn a[ITEMS];                                                                                     \
        for (int k = 0; k < (ITEMS); k++) {                                                                    \
            src[k] = x + r * x_stride + v * N;                                                                 \
            dst[k] = out + r * out_stride + v * N;                                                             \
            left[k] = cols - v * N;                                                                            \
            a[k] = (tconv_fn){0};                                                                              \
            if (++v == per_row) v = 0, r++;                                                                    \
        }                                                                                                      \
        for (size_t t = 0; t < taps; t++)                                                                      \
            for (int k = 0; k < (ITEMS); k++)                                                                  \
                a[k] = TCONV_TAPN(a[k], *(const tconv_vn *)(src[k] + offset[t]), w[t]);                       \
        for (int k = 0; k < (ITEMS); k++) {                                                                    \
            const tconv_fn y = bias ? a[k] * scale + *bias : a[k] * scale;                                      \
            if (left[k] >= N) *(tconv_vn *)dst[k] = y;                                                         \
            else TCONV_STORE_FIRST(dst[k], y, left[k]);                                                        \
        }                                                                                                      \
    } while (0)

/* Eight items at once: eight chains keep two FMA ports at a latency of four
 * busy. Rows go straight to the output (the flat planes' copy out of a grid
 * as wide as the padded rows took a quarter of a 144 @56x56 call). */
static void depthwise_rows_f32(float *restrict out, size_t out_stride, const float *x, size_t x_stride, size_t rows,
                               size_t cols, const size_t *offset, const float *w, size_t taps, float scale,
                               const float *bias) {
    enum { N = TCONV_NATIVE_FLOATS, ROWS_VECTORS = 8 };
    const size_t per_row = OBX_DIV_UP(cols, N), items = rows * per_row;
    size_t i = 0, r = 0, v = 0;
    for (; i + ROWS_VECTORS <= items; i += ROWS_VECTORS) ROWS_BLOCK(ROWS_VECTORS);
    for (; i + 4 <= items; i += 4) ROWS_BLOCK(4);
    for (; i < items; i++) ROWS_BLOCK(1);
}
#undef ROWS_BLOCK


/* The 16-lane channel-block kernels below run a native vector (tconv_vn)
 * of lanes at a time, lane chunk h of the block (one chunk on AVX-512, two
 * on AVX2, four on 128-bit ISAs); each lane's sum is the same whatever the
 * width. */
#define LANE_CHUNKS(h) for (size_t h = 0; h < 16; h += TCONV_NATIVE_FLOATS)

/* depthwise_block_plane_f32: eight (or four) outputs at once, over row
 * ends too (a 7x7 output plane had four outputs a row in a block and three
 * alone, each a chain of taps' latencies); each output's tile pixel is
 * worked out once for all lane chunks, and each tap is one load at a fixed
 * displacement from it (no index table: a table kernel's index loads
 * outnumbered its FMAs). */
/* at[0 .. count) for the outputs from (*r, *c) on, which advance past them */
static inline void block_outputs_at(size_t *at, size_t count, size_t *r, size_t *c, size_t cols, size_t row_pitch,
                                    size_t stride) {
    for (size_t i = 0; i < count; i++) {
        at[i] = *r * row_pitch + *c * stride;
        if (++*c == cols) *c = 0, ++*r;
    }
}

/* `count` (a constant: the sums stay in registers) outputs at tile pixels at[i]. */
static inline __attribute__((always_inline)) void block_outputs(float *restrict out, const float *x,
                                                                const size_t *at, const size_t count,
                                                                const size_t *delta, const float *w, size_t taps,
                                                                const float *scale, const float *bias) {
    LANE_CHUNKS(h) {
        tconv_fn a[8];
        for (size_t i = 0; i < count; i++) a[i] = (tconv_fn){0};
        for (size_t t = 0; t < taps; t++) {
            const tconv_fn wt = *(const tconv_vn *)(w + t * 16 + h);
            const size_t d = delta[t];
            for (size_t i = 0; i < count; i++) a[i] = TCONV_TAPNV(a[i], *(const tconv_vn *)(x + (at[i] + d) * 16 + h), wt);
        }
        const tconv_fn s = *(const tconv_vn *)(scale + h);
        for (size_t i = 0; i < count; i++)
            *(tconv_vn *)(out + i * 16 + h) = bias ? a[i] * s + *(const tconv_vn *)(bias + h) : a[i] * s;
    }
}

/* eight accumulators and a weight and a load: 10 of 16 registers on AVX2 */
static inline __attribute__((always_inline)) void block_plane(float *restrict out, const float *x, size_t rows,
                                                              size_t cols, size_t row_pitch, const size_t *delta,
                                                              const float *w, size_t taps, const float *scale,
                                                              const float *bias, const size_t stride) {
    const size_t n = rows * cols;
    size_t k = 0, r = 0, c = 0, at[8];
    for (; k + 8 <= n; k += 8) {
        block_outputs_at(at, 8, &r, &c, cols, row_pitch, stride);
        block_outputs(out + k * 16, x, at, 8, delta, w, taps, scale, bias);
    }
    if (k + 4 <= n) {
        block_outputs_at(at, 4, &r, &c, cols, row_pitch, stride);
        block_outputs(out + k * 16, x, at, 4, delta, w, taps, scale, bias);
        k += 4;
    }
    for (; k < n; k++) {
        block_outputs_at(at, 1, &r, &c, cols, row_pitch, stride);
        block_outputs(out + k * 16, x, at, 1, delta, w, taps, scale, bias);
    }
}

static void depthwise_block_plane_f32(float *restrict out, const float *x, size_t rows, size_t cols,
                                      size_t row_pitch, size_t stride, const size_t *delta, const float *w,
                                      size_t taps, const float *scale, const float *bias) {
    if (stride == 1) block_plane(out, x, rows, cols, row_pitch, delta, w, taps, scale, bias, 1);
    else if (stride == 2) block_plane(out, x, rows, cols, row_pitch, delta, w, taps, scale, bias, 2);
    else block_plane(out, x, rows, cols, row_pitch, delta, w, taps, scale, bias, stride);
}
#undef LANE_CHUNKS

/* Channels [c, c + lanes of VT) of one depthwise output pixel, in one
 * vector over the taps (the scalar tail's arithmetic, in the same order). */
#define DEPTHWISE_PIXEL_BLOCK(VT)                                                    \
    do {                                                                             \
        VT acc = {0};                                                                \
        for (size_t t = 0; t < taps; t++)                                            \
            acc += *(const VT *)(src[t] + c) * *(const VT *)(weights + tap[t] * m + c); \
        acc *= *(const VT *)(scale + c);                                             \
        if (bias) acc += *(const VT *)(bias + c);                                    \
        *(VT *)(out + c) = acc;                                                      \
        c += sizeof(VT) / sizeof(float);                                             \
    } while (0)

static void depthwise_pixel_f32(float *restrict out, const float *const *src, const float *weights,
                                const size_t *tap, size_t taps, size_t m, const float *scale, const float *bias) {
    size_t c = 0;
    while (c + 16 <= m) DEPTHWISE_PIXEL_BLOCK(tconv_v16);
    if (c + 8 <= m) DEPTHWISE_PIXEL_BLOCK(tconv_v8);
    if (c + 4 <= m) DEPTHWISE_PIXEL_BLOCK(tconv_v4);
    for (; c < m; c++) {
        float acc = 0.0f;
        for (size_t t = 0; t < taps; t++) acc += src[t][c] * weights[tap[t] * m + c];
        acc *= scale[c];
        out[c] = bias ? acc + bias[c] : acc;
    }
}



/* a > b ? a : b on int32 lanes (C vector extensions have no ?: in C); a
 * macro, since a function taking 64-byte vectors has an ISA-dependent ABI. */
#define MAX_I16(a, b) (((a) & ((a) > (b))) | ((b) & ~((a) > (b))))

/* max on int32 lanes, and a float clamp; an ISA file may bring single
 * instructions (the generic forms compile to compares and blends). */
#ifndef TCONV_MAX_I16
#define TCONV_MAX_I16(a, b) MAX_I16(a, b)
#define TCONV_CLAMP16(a, lo, hi)                                                                  \
    ({                                                                                            \
        const tconv_f16 clamped_ = (a), low_ = (tconv_f16){0} + (lo), high_ = (tconv_f16){0} + (hi); \
        const tconv_i16 below_ = clamped_ < low_, above_ = clamped_ > high_;                      \
        (tconv_f16)(((tconv_i16)clamped_ & ~(below_ | above_)) | ((tconv_i16)low_ & below_) |      \
                    ((tconv_i16)high_ & above_));                                                 \
    })
#endif

/* rint(v) of 16 lanes as int32, half to even; an ISA file may bring a
 * rounding conversion (here: add and take away 1.5 * 2^23 and read the low
 * bits, exact for |v| < 2^22: callers clamp first where v can be larger). */
#ifndef TCONV_ROUND_I16
#define TCONV_ROUND_I16(v)                                                                          \
    ({                                                                                              \
        const float magic_ = 12582912.0f;                                                           \
        int32_t magic_bits_;                                                                        \
        memcpy(&magic_bits_, &magic_, sizeof magic_bits_);                                          \
        (tconv_i16)((tconv_u16)((v) + magic_) - (uint32_t)magic_bits_);                             \
    })
#endif

/* A window's scale from the bit pattern of its absmax, 16 lanes, as
 * window_scales computes it: bad where the window holds Inf or NaN (any
 * finite scale will do there: the output is NaN), the absmax floored at
 * 1e-5, s = 127 * (1 / absmax); static_scale > 0 (act_quant 2) replaces s. */
#define WINDOW_SCALE16(amax, static_scale, s, bad)                                                  \
    do {                                                                                            \
        const float floor_value_ = 1e-5f;                                                           \
        int32_t floor_bits_;                                                                        \
        memcpy(&floor_bits_, &floor_value_, sizeof floor_bits_);                                    \
        bad = (amax) >= 0x7f800000;                                                                 \
        const tconv_i16 floored_ =                                                                  \
            TCONV_MAX_I16(((amax) & ~(bad)) | (floor_bits_ & (bad)), floor_bits_ + (tconv_i16){0}); \
        s = (static_scale) > 0.0f ? (static_scale) + (tconv_f16){0} : 127.0f * (1.0f / (tconv_f16)floored_); \
    } while (0)

/* 16 outputs from their exact integer sums (as floats), as finish_i8
 * computes them: (sum * weight_scale) / s (+ bias when has_bias), NaN where
 * bad (bias is evaluated only with has_bias). */
#define WINDOW_OUTPUT16(dst, sum, weight_scale, s, bad, has_bias, bias)                             \
    do {                                                                                            \
        tconv_f16 y_ = ((sum) * (weight_scale)) / (s);                                              \
        if (has_bias) y_ += (bias);                                                                 \
        *(tconv_v16 *)(dst) = (tconv_v16)((tconv_i16)y_ | ((bad) & 0x7fc00000));                    \
    } while (0)

static void depthwise_pixel_i8(float *restrict out, const float *const *src, const int32_t *codes, const size_t *tap,
                               size_t taps, size_t m, float static_scale, const float *weight_scale,
                               const float *bias) {
    const float magic = 12582912.0f;
    int32_t magic_bits;
    memcpy(&magic_bits, &magic, sizeof magic_bits);
    size_t c = 0;
    for (; c + 16 <= m; c += 16) {
        tconv_i16 amax = {0}, bad;
        tconv_f16 s;
        for (size_t t = 0; t < taps; t++)
            amax = TCONV_MAX_I16(amax, (tconv_i16)(tconv_f16)(*(const tconv_v16 *)(src[t] + c)) & 0x7fffffff);
        WINDOW_SCALE16(amax, static_scale, s, bad);
        tconv_i16 isum = {0};
        for (size_t t = 0; t < taps; t++) {
            tconv_f16 shifted = (tconv_f16)(*(const tconv_v16 *)(src[t] + c)) * s + magic;
            tconv_i16 q = (tconv_i16)((tconv_u16)shifted - (uint32_t)magic_bits); /* round_to_i8's wrap */
            q = -MAX_I16(-MAX_I16(q, -128 + (tconv_i16){0}), -127 + (tconv_i16){0}); /* clamp to [-128, 127] */
            const tconv_i16 negative = (tconv_i16)shifted >> 31;                  /* round_to_i8's far negatives */
            q = (q & ~negative) | (-128 & negative);
            isum += q * *(const tconv_i16u *)(codes + tap[t] * m + c);
        }
        WINDOW_OUTPUT16(out + c, __builtin_convertvector(isum, tconv_f16),
                        (tconv_f16)(*(const tconv_v16 *)(weight_scale + c)), s, bad, bias != NULL,
                        (tconv_f16)(*(const tconv_v16 *)(bias + c)));
    }
    for (; c < m; c++) { /* the row kernels' scalar arithmetic, one channel */
        int32_t bits = 0, isum = 0;
        for (size_t t = 0; t < taps; t++) absmax_bits(&bits, src[t] + c, 1, 1);
        float s;
        uint8_t bad;
        memcpy(&s, &bits, sizeof s);
        window_scales(&s, &bad, 1);
        if (static_scale > 0.0f) s = static_scale;
        for (size_t t = 0; t < taps; t++) accumulate_i8(&isum, src[t] + c, &s, codes + tap[t] * m + c, 1);
        finish_i8(out + c, &isum, &s, &bad, weight_scale + c, bias ? bias + c : NULL, 1);
    }
}

#define ABS_BITS16(p) ((tconv_i16)(tconv_f16)(*(const tconv_v16 *)(p)) & 0x7fffffff)
#define QUANTIZED16(p, s, clamp)                                                                  \
    ({                                                                                            \
        tconv_f16 scaled_ = (tconv_f16)(*(const tconv_v16 *)(p)) * (s);                           \
        TCONV_ROUND_I16((clamp) ? TCONV_CLAMP16(scaled_, -128.0f, 127.0f) : scaled_);             \
    })

/* depthwise_plane_i8 over taps (a constant where inlined so: the absmax pass
 * then unrolls). clamp: static scales can take q past the int8 range (rint
 * and the clamp commute, the bounds being integers), window scales cannot
 * (|x * s| <= 127 (1 + 2^-24)^3 < 127.5). The codes are one channel's, the
 * same for every lane: the sum adds the q of taps coded +1, takes away those
 * of taps coded -1 (exact int32) and skips the 0s. */
static inline __attribute__((always_inline)) void plane_i8(float *restrict out, const float *x, size_t n,
                                                           const size_t *offset, const float *w, size_t taps,
                                                           float static_scale, float weight_scale, const float *bias,
                                                           int clamp) {
    size_t signed_offset[taps + 1], n_plus = 0, n_minus = 0; /* +1 taps from the front, -1 taps from the back */
    for (size_t t = 0; t < taps; t++) {
        if (w[t] > 0.0f) signed_offset[n_plus++] = offset[t];
        else if (w[t] < 0.0f) signed_offset[taps - ++n_minus] = offset[t];
    }
    const size_t *plus = signed_offset, *minus = signed_offset + taps - n_minus;
    size_t p = 0;
#define BLOCK_SCALE(at, s, bad)                                                                      \
    do {                                                                                             \
        tconv_i16 m0 = {0}, m1 = {0};                                                                \
        size_t t = 0;                                                                                \
        for (; t + 2 <= taps; t += 2) {                                                              \
            m0 = TCONV_MAX_I16(m0, ABS_BITS16(at + offset[t]));                                      \
            m1 = TCONV_MAX_I16(m1, ABS_BITS16(at + offset[t + 1]));                                  \
        }                                                                                            \
        if (t < taps) m0 = TCONV_MAX_I16(m0, ABS_BITS16(at + offset[t]));                            \
        const tconv_i16 amax = TCONV_MAX_I16(m0, m1);                                                \
        WINDOW_SCALE16(amax, static_scale, s, bad);                                                  \
    } while (0)
/* The sums are unsigned: in a window holding NaN or Inf (bad, output NaN) the
 * codes are garbage and signed sums could overflow, which C leaves undefined. */
#define BLOCK_OUT(s, bad, sum_plus, sum_minus, dst)                                                  \
    WINDOW_OUTPUT16(dst, __builtin_convertvector((tconv_i16)(sum_plus - sum_minus), tconv_f16), weight_scale, \
                    s, bad, bias != NULL, *bias)
    for (; p + 32 <= n; p += 32) { /* two blocks at once: each is a chain of dependent steps */
        const float *at0 = x + p, *at1 = x + p + 16;
        tconv_f16 s0, s1;
        tconv_i16 bad0, bad1;
        BLOCK_SCALE(at0, s0, bad0);
        BLOCK_SCALE(at1, s1, bad1);
        tconv_u16 plus0 = {0}, minus0 = {0}, plus1 = {0}, minus1 = {0};
        for (size_t i = 0; i < n_plus; i++) {
            plus0 += (tconv_u16)QUANTIZED16(at0 + plus[i], s0, clamp);
            plus1 += (tconv_u16)QUANTIZED16(at1 + plus[i], s1, clamp);
        }
        for (size_t i = 0; i < n_minus; i++) {
            minus0 += (tconv_u16)QUANTIZED16(at0 + minus[i], s0, clamp);
            minus1 += (tconv_u16)QUANTIZED16(at1 + minus[i], s1, clamp);
        }
        BLOCK_OUT(s0, bad0, plus0, minus0, out + p);
        BLOCK_OUT(s1, bad1, plus1, minus1, out + p + 16);
    }
    if (p < n) {
        const float *at0 = x + p;
        tconv_f16 s0;
        tconv_i16 bad0;
        tconv_u16 plus0 = {0}, minus0 = {0};
        BLOCK_SCALE(at0, s0, bad0);
        for (size_t i = 0; i < n_plus; i++) plus0 += (tconv_u16)QUANTIZED16(at0 + plus[i], s0, clamp);
        for (size_t i = 0; i < n_minus; i++) minus0 += (tconv_u16)QUANTIZED16(at0 + minus[i], s0, clamp);
        BLOCK_OUT(s0, bad0, plus0, minus0, out + p);
    }
#undef BLOCK_SCALE
#undef BLOCK_OUT
}
#undef ABS_BITS16
#undef QUANTIZED16

/* act_quant 1 (static_scale 0) or 2 on a flat plane, an output a lane at
 * constant tap shifts, the arithmetic of depthwise_pixel_i8 per output;
 * 3x3 kernels have their own copy. */
static void depthwise_plane_i8(float *restrict out, const float *x, size_t n, const size_t *offset, const float *w,
                               size_t taps, float static_scale, float weight_scale, const float *bias) {
    const int clamp = static_scale > 0.0f;
    if (taps == 9 && !clamp) plane_i8(out, x, n, offset, w, 9, static_scale, weight_scale, bias, 0);
    else if (clamp) plane_i8(out, x, n, offset, w, taps, static_scale, weight_scale, bias, 1);
    else plane_i8(out, x, n, offset, w, taps, static_scale, weight_scale, bias, 0);
}

/* act_quant 1 (static_scale 0) or 2 on a 16-channel block, tile pixel
 * index[p * taps + t] for output p's tap t (x[index[p * taps + t] * 16 + l]), per lane the
 * arithmetic of depthwise_pixel_i8 over output pixel p's taps (the pixel of
 * zeros a padding tap reads neither raises the absmax nor adds); codes
 * w[t * 16 + l] as floats, 16 weight scales and biases. The codes differ
 * from lane to lane: q * w is an exact product of small integers, summed
 * exactly in float. Two pixels at once. */
#define BLOCK_I8_LOAD(i, t) ((tconv_f16)(*(const tconv_v16 *)(x + (size_t)at[(i) * taps + (t)] * 16)))
#define BLOCK_I8_SCALE(i, s, bad)                                                                    \
    do {                                                                                             \
        tconv_i16 amax = {0};                                                                        \
        for (size_t t = 0; t < taps; t++) amax = TCONV_MAX_I16(amax, (tconv_i16)BLOCK_I8_LOAD(i, t) & 0x7fffffff); \
        WINDOW_SCALE16(amax, static_scale, s, bad);                                                  \
    } while (0)
#define BLOCK_I8_TAP(acc, i, s, t)                                                                   \
    do {                                                                                             \
        tconv_f16 scaled_ = BLOCK_I8_LOAD(i, t) * (s);                                               \
        if (clamp) scaled_ = TCONV_CLAMP16(scaled_, -128.0f, 127.0f);                                \
        acc = TCONV_TAP16V(acc, __builtin_convertvector(TCONV_ROUND_I16(scaled_), tconv_f16),        \
                           (tconv_f16)(*(const tconv_v16 *)(w + (t) * 16)));                         \
    } while (0)
#define BLOCK_I8_OUT(acc, s, bad, i) WINDOW_OUTPUT16(out + (p + (i)) * 16, acc, ws, s, bad, bias != NULL, b)

static void depthwise_block_i8(float *restrict out, const float *x, size_t n, const uint32_t *index, const float *w,
                               size_t taps, float static_scale, const float *weight_scale, const float *bias) {
    const int clamp = static_scale > 0.0f;
    const tconv_f16 ws = *(const tconv_v16 *)weight_scale;
    tconv_f16 b = {0};
    if (bias) b = *(const tconv_v16 *)bias;
    size_t p = 0;
    for (; p + 2 <= n; p += 2) {
        const uint32_t *at = index + p * taps;
        tconv_f16 s0, s1, a0 = {0}, a1 = {0};
        tconv_i16 bad0, bad1;
        BLOCK_I8_SCALE(0, s0, bad0);
        BLOCK_I8_SCALE(1, s1, bad1);
        for (size_t t = 0; t < taps; t++) {
            BLOCK_I8_TAP(a0, 0, s0, t);
            BLOCK_I8_TAP(a1, 1, s1, t);
        }
        BLOCK_I8_OUT(a0, s0, bad0, 0);
        BLOCK_I8_OUT(a1, s1, bad1, 1);
    }
    if (p < n) {
        const uint32_t *at = index + p * taps;
        tconv_f16 s0, a0 = {0};
        tconv_i16 bad0;
        BLOCK_I8_SCALE(0, s0, bad0);
        for (size_t t = 0; t < taps; t++) BLOCK_I8_TAP(a0, 0, s0, t);
        BLOCK_I8_OUT(a0, s0, bad0, 0);
    }
}
#undef BLOCK_I8_LOAD
#undef BLOCK_I8_SCALE
#undef BLOCK_I8_TAP
#undef BLOCK_I8_OUT
#undef WINDOW_SCALE16
#undef WINDOW_OUTPUT16

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

static void masked_copy(float *restrict out, const float *restrict src, const int32_t *restrict mask, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int32_t bits;
        memcpy(&bits, &src[i], sizeof bits);
        bits &= mask[i];
        memcpy(&out[i], &bits, sizeof bits);
    }
}

/* rintf: one rounding instruction where the ISA has one (tconv_rows.h says
 * why no clamp is needed). */
static inline float dequantized(float x, float s, float inverse) { return rintf(x * s) * inverse; }

/* An ISA file may bring its own (TCONV_ROWS_DEQUANTIZE_PIXELS). */
#ifndef TCONV_ROWS_DEQUANTIZE_PIXELS
static void dequantize_pixels(float *restrict out, const float *restrict src, const float *restrict scale,
                              const float *restrict inverse, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = dequantized(src[i], scale[i], inverse[i]);
}
#define TCONV_ROWS_DEQUANTIZE_PIXELS dequantize_pixels
#endif

/* An ISA file may bring its own (TCONV_ROWS_STAGE_PHASES): here each row is
 * deinterleaved, dequantized first a chunk of CHUNK columns at a time. */
#ifndef TCONV_ROWS_STAGE_PHASES
static void deinterleave(float *restrict even, size_t n_even, float *restrict odd, size_t n_odd,
                         const float *src) {
    enum { N = TCONV_NATIVE_FLOATS };
    size_t k = 0;
    /* a block reads src[2k .. 2k + 2N - 1]: inside, since k + N - 1 < n_odd means 2k + 2N - 1 < 2 n_odd */
    for (; k + N <= n_even && k + N <= n_odd; k += N) {
        tconv_fn lo = *(const tconv_vn *)(src + 2 * k), hi = *(const tconv_vn *)(src + 2 * k + N);
        *(tconv_vn *)(even + k) = EVEN_NATIVE(lo, hi);
        *(tconv_vn *)(odd + k) = ODD_NATIVE(lo, hi);
    }
    for (size_t j = k; j < n_even; j++) even[j] = src[2 * j];
    for (size_t j = k; j < n_odd; j++) odd[j] = src[2 * j + 1];
}

static void stage_phases(float *restrict dst, const float *restrict src, const struct tconv_phase_layout *l,
                         const float *scale, const float *inverse) {
    enum { CHUNK = 64 }; /* even: its even columns are the row's */
    for (size_t r = 0; r < l->rows; r++) {
        float *row = tconv_phase_row(dst, l, r);
        const float *x = src + r * l->in_w;
        if (!scale) {
            deinterleave(row + l->even_at, l->n_even, row + l->odd_at, l->n_odd, x);
            continue;
        }
        for (size_t c0 = 0; c0 < l->in_w; c0 += CHUNK) {
            float chunk[CHUNK];
            const size_t n = OBX_MIN((size_t)CHUNK, l->in_w - c0), k0 = c0 / 2, at = r * l->in_w + c0;
            TCONV_ROWS_DEQUANTIZE_PIXELS(chunk, x + c0, scale + at, inverse + at, n);
            const size_t n_even = l->n_even > k0 ? OBX_MIN((size_t)CHUNK / 2, l->n_even - k0) : 0;
            const size_t n_odd = l->n_odd > k0 ? OBX_MIN((size_t)CHUNK / 2, l->n_odd - k0) : 0;
            deinterleave(row + l->even_at + k0, n_even, row + l->odd_at + k0, n_odd, chunk);
        }
    }
}
#define TCONV_ROWS_STAGE_PHASES stage_phases
#endif

/* An ISA file may bring its own (TCONV_ROWS_COPY_ROWS). */
#ifndef TCONV_ROWS_COPY_ROWS
static void copy_rows(float *dst, size_t dst_stride, const float *src, size_t src_stride, size_t rows, size_t cols,
                      const float *scale, const float *inverse) {
    for (size_t r = 0; r < rows; r++) {
        if (scale)
            TCONV_ROWS_DEQUANTIZE_PIXELS(dst + r * dst_stride, src + r * src_stride, scale + r * src_stride,
                                         inverse + r * src_stride, cols);
        else
            memcpy(dst + r * dst_stride, src + r * src_stride, cols * sizeof(float));
    }
}
#define TCONV_ROWS_COPY_ROWS copy_rows
#endif

/* An ISA file may bring its own (TCONV_ROWS_BLOCK_TILE): here 16 pixels at
 * a time transposed into a square in L1, then each pixel's row copied to its
 * place, dequantized; 16 channels take loops of a constant 16 (vector
 * moves: with a run-time count AVX2 ran the 512 @14x14 stride-2 float conv
 * 1.4x slower than with a transpose straight into the tile). */
#ifndef TCONV_ROWS_BLOCK_TILE
static void block_tile(float *restrict tile, const uint32_t *restrict at, const float *restrict x, size_t channels,
                       size_t pixels, size_t plane_stride, const float *restrict scale,
                       const float *restrict inverse) {
    enum { LANES = 16 };
    float square[LANES * LANES];
    if (channels < LANES) memset(square, 0, sizeof square);
    for (size_t p0 = 0; p0 < pixels; p0 += LANES) {
        const size_t n = OBX_MIN((size_t)LANES, pixels - p0);
        TCONV_ROWS_TRANSPOSE(x + p0, channels, n, plane_stride, square, LANES);
        for (size_t j = 0; j < n; j++) {
            float *restrict pixel = tile + at[p0 + j];
            const float *row = square + j * LANES;
            if (!scale) {
                for (size_t l = 0; l < LANES; l++) pixel[l] = row[l];
                continue;
            }
            const float s = scale[p0 + j], v = inverse[p0 + j];
            for (size_t l = 0; l < LANES; l++) pixel[l] = dequantized(row[l], s, v);
            /* past the channels: +0 (a NaN inverse would have made 0 * v NaN) */
            for (size_t l = channels; l < LANES; l++) pixel[l] = 0.0f;
        }
    }
}
#define TCONV_ROWS_BLOCK_TILE block_tile
#endif

/* tconv.h's activations, a native vector at a time in GCC's generic
 * vectors, the tail in one zero-padded vector: plain loops had stayed
 * scalar, a branch per value (under trapping math GCC would not evaluate a
 * compare or a product that only one side of a select needs; the fused Silu
 * of YOLOv8n took a third of the converted model's time on AVX2). Each
 * product and sum is rounded on its own: the build does not contract them
 * into FMAs. A select keeps v when it is NaN (every compare fails). */
typedef uint32_t tconv_un __attribute__((vector_size(4 * TCONV_NATIVE_FLOATS)));

static inline tconv_fn select_fn(tconv_in take, tconv_fn a, tconv_fn b) {
    return (tconv_fn)((take & (tconv_in)a) | (~take & (tconv_in)b));
}

static inline tconv_fn clip_fn(tconv_fn v, float lo, float hi) {
    const tconv_fn zero = {0}, low = zero + lo, high = zero + hi;
    const tconv_fn above = select_fn(v < lo, low, v);
    return select_fn(above > hi, high, above);
}

/* exp(x) for Sigmoid and Silu, step for step as onnxbit/reference/activation.py's _exp (so the C op and
 * the reference agree to the bit; libm's expf differs between builds): x clamped to [-87, 88]; n =
 * rint(x * log2(e)), by adding 1.5 * 2^23, whose low bits then hold n; r = (x - n * C1) - n * C2 (C1 + C2
 * = ln 2, C1 exact in few bits); exp(r) by its degree-6 Taylor polynomial in Horner form; times 2^n put
 * into the exponent bits (n in [-126, 127]). Each product and sum rounded on its own; within 3 ulp of exp
 * on the clamped range (measured over 2M points); NaN in, NaN out. */
static inline tconv_fn activation_exp_fn(tconv_fn x) {
    const float magic = 0x1.8p+23f;
    uint32_t magic_bits;
    memcpy(&magic_bits, &magic, sizeof magic_bits);
    x = clip_fn(x, -87.0f, 88.0f);
    const tconv_fn shifted = x * 0x1.715476p+0f + magic, n = shifted - magic;
    const tconv_fn r = (x - n * 0x1.63p-1f) - n * -0x1.bd0106p-13f;
    const tconv_fn zero = {0};
    tconv_fn p = zero + 0x1.6c16c2p-10f;
    p = p * r + 0x1.111112p-7f;
    p = p * r + 0x1.555556p-5f;
    p = p * r + 0x1.555556p-3f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const tconv_un scale_bits = ((tconv_un)shifted - magic_bits + 127u) << 23;
    return p * (tconv_fn)scale_bits;
}

/* One loop per kind (a switch per vector cost 3% of a Silu model on AVX2). */
static void activate(float *restrict y, size_t n, int kind, float alpha, float beta) {
    enum { W = TCONV_NATIVE_FLOATS };
    const tconv_fn zero = {0};
    size_t i = 0;
#define ACTIVATE_EACH(EXPR)                                                                                    \
    for (; i + W <= n; i += W) {                                                                               \
        const tconv_fn v = *(const tconv_vn *)(y + i);                                                         \
        *(tconv_vn *)(y + i) = EXPR;                                                                           \
    }                                                                                                          \
    if (i < n) {                                                                                               \
        float tail[W] = {0};                                                                                   \
        memcpy(tail, y + i, (n - i) * sizeof(float));                                                         \
        const tconv_fn v = *(const tconv_vn *)tail;                                                            \
        *(tconv_vn *)tail = EXPR;                                                                              \
        memcpy(y + i, tail, (n - i) * sizeof(float));                                                         \
    }                                                                                                          \
    break;
    switch (kind) {
    case OBX_ACTIVATION_RELU: ACTIVATE_EACH(select_fn(v < 0.0f, zero, v))
    case OBX_ACTIVATION_LEAKY_RELU: ACTIVATE_EACH(select_fn(v < 0.0f, alpha * v, v))
    case OBX_ACTIVATION_CLIP: ACTIVATE_EACH(clip_fn(v, alpha, beta))
    case OBX_ACTIVATION_HARD_SIGMOID: ACTIVATE_EACH(clip_fn(alpha * v + beta, 0.0f, 1.0f))
    case OBX_ACTIVATION_HARD_SWISH: ACTIVATE_EACH(v * clip_fn(alpha * v + beta, 0.0f, 1.0f))
    case OBX_ACTIVATION_HARD_SWISH_RELU6: ACTIVATE_EACH((v * clip_fn(v + 3.0f, 0.0f, 6.0f)) / 6.0f)
    case OBX_ACTIVATION_SIGMOID: ACTIVATE_EACH(1.0f / (1.0f + activation_exp_fn(-v)))
    case OBX_ACTIVATION_SILU: ACTIVATE_EACH(v * (1.0f / (1.0f + activation_exp_fn(-v))))
    default: break;
    }
#undef ACTIVATE_EACH
}

/* tconv_rows.h direct_f32 one output at a time, where the ISA has no kernel:
 * each tap's x * w is exact (w in {-1, 0, 1}), so acc + x * w rounds as an
 * ISA's fused tap does. */
static inline void depthwise_direct_plain(size_t stride, size_t k, float *out, size_t out_w, size_t oh0, size_t oh1,
                                          const float *x, const float *scale, const float *inverse, size_t ih0,
                                          size_t ih1, size_t in_w, size_t pad_top, size_t pad_left, const float *w,
                                          float channel_scale, const float *bias) {
    for (size_t oh = oh0; oh < oh1; oh++)
        for (size_t ow = 0; ow < out_w; ow++) {
            float acc = 0.0f;
            for (size_t kh = 0; kh < k; kh++) {
                const ptrdiff_t ih = (ptrdiff_t)(stride * oh + kh) - (ptrdiff_t)pad_top;
                if (ih < (ptrdiff_t)ih0 || ih >= (ptrdiff_t)ih1) continue;
                const size_t at = (size_t)(ih - (ptrdiff_t)ih0) * in_w;
                for (size_t kw = 0; kw < k; kw++) {
                    const ptrdiff_t iw = (ptrdiff_t)(stride * ow + kw) - (ptrdiff_t)pad_left;
                    if (iw < 0 || iw >= (ptrdiff_t)in_w) continue;
                    const size_t i = at + (size_t)iw;
                    acc = acc + (scale ? dequantized(x[i], scale[i], inverse[i]) : x[i]) * w[k * kh + kw];
                }
            }
            const float y = acc * channel_scale;
            out[oh * out_w + ow] = bias ? y + *bias : y;
        }
}
#define DIRECT_PLAIN(name, k, stride)                                                                          \
    static void name(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, const float *scale,      \
                     const float *inverse, size_t ih0, size_t ih1, size_t in_w, size_t pad_top, size_t pad_left, \
                     const float *w, float channel_scale, const float *bias) {                                 \
        depthwise_direct_plain(stride, k, out, out_w, oh0, oh1, x, scale, inverse, ih0, ih1, in_w, pad_top,     \
                               pad_left, w, channel_scale, bias);                                              \
    }
/* direct_i8 as plain loops: each output's window by the scalar row kernels
 * (absmax_bits, window_scales, accumulate_i8, finish_i8), a padding tap left
 * out. */
static inline void depthwise_direct_plain_i8(size_t stride, float *out, size_t out_w, size_t oh0, size_t oh1,
                                             const float *x, size_t ih0, size_t ih1, size_t in_w, size_t pad_top,
                                             size_t pad_left, const float *w, float static_scale,
                                             float weight_scale, const float *bias) {
    for (size_t oh = oh0; oh < oh1; oh++)
        for (size_t ow = 0; ow < out_w; ow++) {
            const float *tap[9];
            int32_t code[9], bits = 0, isum = 0;
            size_t n = 0;
            for (size_t kh = 0; kh < 3; kh++) {
                const ptrdiff_t ih = (ptrdiff_t)(stride * oh + kh) - (ptrdiff_t)pad_top;
                if (ih < (ptrdiff_t)ih0 || ih >= (ptrdiff_t)ih1) continue;
                for (size_t kw = 0; kw < 3; kw++) {
                    const ptrdiff_t iw = (ptrdiff_t)(stride * ow + kw) - (ptrdiff_t)pad_left;
                    if (iw < 0 || iw >= (ptrdiff_t)in_w) continue;
                    tap[n] = x + (size_t)(ih - (ptrdiff_t)ih0) * in_w + (size_t)iw;
                    code[n++] = (int32_t)w[3 * kh + kw];
                }
            }
            for (size_t t = 0; t < n; t++) absmax_bits(&bits, tap[t], 1, 1);
            float s;
            uint8_t bad;
            memcpy(&s, &bits, sizeof s);
            window_scales(&s, &bad, 1);
            if (static_scale > 0.0f) s = static_scale;
            for (size_t t = 0; t < n; t++) accumulate_i8(&isum, tap[t], &s, &code[t], 1);
            finish_i8(out + oh * out_w + ow, &isum, &s, &bad, &weight_scale, bias, 1);
        }
}
#define DIRECT_PLAIN_I8(name, stride)                                                                          \
    static void name(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, size_t ih0, size_t ih1, \
                     size_t in_w, size_t pad_top, size_t pad_left, const float *w, float static_scale,         \
                     float weight_scale, const float *bias) {                                                  \
        depthwise_direct_plain_i8(stride, out, out_w, oh0, oh1, x, ih0, ih1, in_w, pad_top, pad_left, w,        \
                                  static_scale, weight_scale, bias);                                           \
    }
#ifdef TCONV_ROWS_DIRECT_I8_STRIDE1
#define DIRECT_I8_1 TCONV_ROWS_DIRECT_I8_STRIDE1, 1
#else
DIRECT_PLAIN_I8(direct_plain_i8_1, 1)
#define DIRECT_I8_1 direct_plain_i8_1, 0
#endif
#ifdef TCONV_ROWS_DIRECT_I8_STRIDE2
#define DIRECT_I8_2 TCONV_ROWS_DIRECT_I8_STRIDE2, 1
#else
DIRECT_PLAIN_I8(direct_plain_i8_2, 2)
#define DIRECT_I8_2 direct_plain_i8_2, 0
#endif
/* The table's entry for a kernel the ISA may bring: its own, else the plain loop. */
#ifdef TCONV_ROWS_DIRECT_3X3_STRIDE1
#define DIRECT_3X3_1 TCONV_ROWS_DIRECT_3X3_STRIDE1, 1
#else
DIRECT_PLAIN(direct_plain_3x3_1, 3, 1)
#define DIRECT_3X3_1 direct_plain_3x3_1, 0
#endif
#ifdef TCONV_ROWS_DIRECT_3X3_STRIDE2
#define DIRECT_3X3_2 TCONV_ROWS_DIRECT_3X3_STRIDE2, 1
#else
DIRECT_PLAIN(direct_plain_3x3_2, 3, 2)
#define DIRECT_3X3_2 direct_plain_3x3_2, 0
#endif
#ifdef TCONV_ROWS_DIRECT_5X5_STRIDE1
#define DIRECT_5X5_1 TCONV_ROWS_DIRECT_5X5_STRIDE1, 1
#else
DIRECT_PLAIN(direct_plain_5x5_1, 5, 1)
#define DIRECT_5X5_1 direct_plain_5x5_1, 0
#endif
#ifdef TCONV_ROWS_DIRECT_5X5_STRIDE2
#define DIRECT_5X5_2 TCONV_ROWS_DIRECT_5X5_STRIDE2, 1
#else
DIRECT_PLAIN(direct_plain_5x5_2, 5, 2)
#define DIRECT_5X5_2 direct_plain_5x5_2, 0
#endif
#define DIRECT_FN(entry) DIRECT_FN_(entry)
#define DIRECT_FN_(fn, native) fn
#define DIRECT_NATIVE(entry) DIRECT_NATIVE_(entry)
#define DIRECT_NATIVE_(fn, native) native
#ifndef TCONV_ROWS_DIRECT_MIN_WIDTH
#define TCONV_ROWS_DIRECT_MIN_WIDTH 0
#endif

const struct tconv_row_kernels TCONV_ROWS_TABLE = {
    .accumulate_i8 = accumulate_i8,
    .absmax_bits = absmax_bits,
    .absmax_planes = absmax_planes,
    .absmax_run = absmax_run,
    .window_scales = window_scales,
    .pixel_inverses = pixel_inverses,
    .finish_i8 = finish_i8,
    .quantize_run = TCONV_ROWS_QUANTIZE_RUN,
    .quantize_taps = TCONV_ROWS_QUANTIZE_TAPS,
    .depthwise_row_f32 = depthwise_row_f32,
    .depthwise_rows_f32 = depthwise_rows_f32,
    .depthwise_block_plane_f32 = depthwise_block_plane_f32,
    .depthwise_pixel_f32 = depthwise_pixel_f32,
    .depthwise_pixel_i8 = depthwise_pixel_i8,
    .depthwise_plane_i8 = depthwise_plane_i8,
    .depthwise_block_i8 = depthwise_block_i8,
    .transpose = TCONV_ROWS_TRANSPOSE,
    .masked_copy = masked_copy,
    .stage_phases = TCONV_ROWS_STAGE_PHASES,
    .dequantize_pixels = TCONV_ROWS_DEQUANTIZE_PIXELS,
    .copy_rows = TCONV_ROWS_COPY_ROWS,
#ifdef TCONV_ROWS_MASKED_PLANE
    .depthwise_masked_plane_f32 = TCONV_ROWS_MASKED_PLANE,
#endif
    .direct_f32 = {{DIRECT_FN(DIRECT_3X3_1), DIRECT_FN(DIRECT_3X3_2)},
                   {DIRECT_FN(DIRECT_5X5_1), DIRECT_FN(DIRECT_5X5_2)}},
    .direct_native = {{DIRECT_NATIVE(DIRECT_3X3_1), DIRECT_NATIVE(DIRECT_3X3_2)},
                      {DIRECT_NATIVE(DIRECT_5X5_1), DIRECT_NATIVE(DIRECT_5X5_2)}},
    .direct_i8 = {DIRECT_FN(DIRECT_I8_1), DIRECT_FN(DIRECT_I8_2)},
    .direct_i8_native = {DIRECT_NATIVE(DIRECT_I8_1), DIRECT_NATIVE(DIRECT_I8_2)},
    .direct_min_width = TCONV_ROWS_DIRECT_MIN_WIDTH,
#ifdef TCONV_ROWS_DIRECT_PAIRS_3X3_STRIDE2
    .direct_pairs_3x3_stride2 = TCONV_ROWS_DIRECT_PAIRS_3X3_STRIDE2,
#endif
#ifdef TCONV_ROWS_DIRECT_I8_PAIR_STRIDE2
    .direct_i8_pair_stride2 = TCONV_ROWS_DIRECT_I8_PAIR_STRIDE2,
#endif
#ifdef TCONV_ROWS_DIRECT_PAIRS_3X3_STRIDE1
    .direct_pairs_3x3_stride1 = TCONV_ROWS_DIRECT_PAIRS_3X3_STRIDE1,
#endif
    .block_tile = TCONV_ROWS_BLOCK_TILE,
    .activate = activate,
};
