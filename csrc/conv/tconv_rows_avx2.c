/* The conv row kernels built for AVX2 (tconv_rows_body.h), with a transpose
 * in 8 x 8 register blocks: the compiler does not vectorize the plain one
 * (scalar loads and stores, measured 27% of a depthwise conv's time). */
#include <immintrin.h>
#include <string.h>

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

/* The direct 3x3 kernels (tconv_rows.h direct_f32) as the AVX-512 file has
 * them, on strips of 8 outputs: see it for the order of the work. */

/* The lanes of an 8-output strip, the same for every row. Stride 1: tap kw
 * reads columns at + kw on (load[kw]); stride 2: columns at .. at + 15
 * (load[0], load[1]) and the edge column. */
struct direct_strip8 {
    ptrdiff_t at, edge_at;
    __m256i load[5], out;
    int edge_inside;
};

static inline __attribute__((always_inline)) __m256 load8(const float *x, const float *scale, const float *inverse,
                                                          ptrdiff_t i, __m256i lanes, int inside) {
    __m256 v = inside ? _mm256_loadu_ps(x + i) : _mm256_maskload_ps(x + i, lanes);
    if (scale)
        v = dequantize8(v, inside ? _mm256_loadu_ps(scale + i) : _mm256_maskload_ps(scale + i, lanes),
                        inside ? _mm256_loadu_ps(inverse + i) : _mm256_maskload_ps(inverse + i, lanes));
    return v;
}

/* The lanes of columns [from, from + 8) inside [0, width). */
static inline __m256i lanes_inside8(ptrdiff_t from, ptrdiff_t width) {
    const __m256i column = _mm256_add_epi32(_mm256_set1_epi32((int)from), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), column),
                               _mm256_cmpgt_epi32(_mm256_set1_epi32((int)width), column));
}

static inline __attribute__((always_inline)) void direct_store8(float *y, __m256 acc, __m256 channel_scale,
                                                                const float *bias, const struct direct_strip8 *s,
                                                                int inside) {
    __m256 v = _mm256_mul_ps(acc, channel_scale);
    if (bias) v = _mm256_add_ps(v, _mm256_set1_ps(*bias));
    if (inside) _mm256_storeu_ps(y, v);
    else _mm256_maskstore_ps(y, s->out, v);
}

#define DIRECT8_TAPS(acc, t0, t1, t2, kh)                     \
    do {                                                      \
        acc = _mm256_fmadd_ps(t0, wv[3 * (kh)], acc);         \
        acc = _mm256_fmadd_ps(t1, wv[3 * (kh) + 1], acc);     \
        acc = _mm256_fmadd_ps(t2, wv[3 * (kh) + 2], acc);     \
    } while (0)

static inline __attribute__((always_inline)) void stride1_strip8(int K, float *out, size_t out_w, size_t ow0,
                                                                 size_t oh0, size_t oh1, const float *x,
                                                                 const float *scale, const float *inverse,
                                                                 ptrdiff_t ih0, ptrdiff_t ih1, size_t in_w,
                                                                 ptrdiff_t pad_top, const struct direct_strip8 *s,
                                                                 const __m256 *wv, __m256 channel_scale,
                                                                 const float *bias, int inside) {
    __m256 sums[5];
    for (int d = 0; d < K; d++) sums[d] = _mm256_setzero_ps();
    for (ptrdiff_t ih = (ptrdiff_t)oh0 - pad_top; ih < (ptrdiff_t)oh1 - pad_top + K - 1; ih++) {
        if (ih >= ih0 && ih < ih1) {
            const ptrdiff_t row = (ih - ih0) * (ptrdiff_t)in_w + s->at;
            __m256 t[5];
            for (int k = 0; k < K; k++) t[k] = load8(x, scale, inverse, row + k, s->load[k], inside);
            for (int d = K - 1; d >= 0; d--)
                for (int k = 0; k < K; k++) sums[d] = _mm256_fmadd_ps(t[k], wv[d * K + k], sums[d]);
        }
        const ptrdiff_t o = ih + pad_top - (K - 1);
        if (o >= (ptrdiff_t)oh0) direct_store8(out + (size_t)o * out_w + ow0, sums[K - 1], channel_scale, bias, s, inside);
        for (int d = K - 1; d > 0; d--) sums[d] = sums[d - 1];
        sums[0] = _mm256_setzero_ps();
    }
}

/* A stride-2 row's three taps for a strip (split16, then the third tap's
 * columns one lane over, the edge column in the lane set free). */
static inline __attribute__((always_inline)) void stride2_taps8(const float *x, const float *scale,
                                                                const float *inverse, ptrdiff_t row,
                                                                const struct direct_strip8 *s, int pad_left,
                                                                int inside, __m256 *t0, __m256 *t1, __m256 *t2) {
    __m256 even, odd;
    const ptrdiff_t i = row + s->at;
    split16(x + i, scale ? scale + i : NULL, scale ? inverse + i : NULL, s->load[0], s->load[1], !inside, &even,
            &odd);
    __m256 edge = _mm256_setzero_ps();
    if (s->edge_inside) {
        const ptrdiff_t e = row + s->edge_at;
        edge = _mm256_set1_ps(x[e]);
        if (scale) edge = dequantize8(edge, _mm256_set1_ps(scale[e]), _mm256_set1_ps(inverse[e]));
    }
    if (pad_left) { /* columns at - 1 + 2i, at + 2i, at + 1 + 2i */
        const __m256 moved = _mm256_permutevar8x32_ps(odd, _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6));
        *t0 = _mm256_blend_ps(moved, edge, 0x01);
        *t1 = even;
        *t2 = odd;
    } else { /* columns at + 2i, at + 1 + 2i, at + 2 + 2i */
        const __m256 moved = _mm256_permutevar8x32_ps(even, _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0));
        *t0 = even;
        *t1 = odd;
        *t2 = _mm256_blend_ps(moved, edge, 0x80);
    }
}

static inline __attribute__((always_inline)) void stride2_strip8(float *out, size_t out_w, size_t ow0, size_t oh0,
                                                                 size_t oh1, const float *x, const float *scale,
                                                                 const float *inverse, ptrdiff_t ih0, ptrdiff_t ih1,
                                                                 size_t in_w, ptrdiff_t pad_top, int pad_left,
                                                                 const struct direct_strip8 *s, const __m256 *wv,
                                                                 __m256 channel_scale, const float *bias, int inside) {
#define DIRECT8_ROW(ih) ((ih) >= ih0 && (ih) < ih1 ? ((ih) - ih0) * (ptrdiff_t)in_w : -1)
    __m256 p0 = _mm256_setzero_ps(), p1 = p0, p2 = p0;
    ptrdiff_t top = DIRECT8_ROW(2 * (ptrdiff_t)oh0 - pad_top);
    if (top >= 0) stride2_taps8(x, scale, inverse, top, s, pad_left, inside, &p0, &p1, &p2);
    for (size_t oh = oh0; oh < oh1; oh++) {
        const ptrdiff_t ih = 2 * (ptrdiff_t)oh - pad_top;
        const ptrdiff_t middle = DIRECT8_ROW(ih + 1), bottom = DIRECT8_ROW(ih + 2);
        __m256 acc = _mm256_setzero_ps();
        if (top >= 0) DIRECT8_TAPS(acc, p0, p1, p2, 0);
        if (middle >= 0) {
            __m256 t0, t1, t2;
            stride2_taps8(x, scale, inverse, middle, s, pad_left, inside, &t0, &t1, &t2);
            DIRECT8_TAPS(acc, t0, t1, t2, 1);
        }
        if (bottom >= 0) {
            stride2_taps8(x, scale, inverse, bottom, s, pad_left, inside, &p0, &p1, &p2);
            DIRECT8_TAPS(acc, p0, p1, p2, 2);
        }
        top = bottom;
        direct_store8(out + oh * out_w + ow0, acc, channel_scale, bias, s, inside);
    }
#undef DIRECT8_ROW
}
#undef DIRECT8_TAPS

static inline __attribute__((always_inline)) void direct_avx2(int K, size_t stride, float *out, size_t out_w,
                                                              size_t oh0, size_t oh1, const float *x,
                                                              const float *scale, const float *inverse, size_t ih0,
                                                              size_t ih1, size_t in_w, size_t pad_top,
                                                              size_t pad_left, const float *w, float channel_scale,
                                                              const float *bias) {
    const __m256 cs = _mm256_set1_ps(channel_scale);
    __m256 wv[25];
    for (int t = 0; t < K * K; t++) wv[t] = _mm256_set1_ps(w[t]);
    const ptrdiff_t width = (ptrdiff_t)in_w, pl = (ptrdiff_t)pad_left;
    for (size_t ow0 = 0; ow0 < out_w; ow0 += 8) {
        struct direct_strip8 s;
        s.out = first_lanes8(OBX_MIN(out_w - ow0, (size_t)8));
        int inside;
        if (stride == 1) {
            s.at = (ptrdiff_t)ow0 - pl;
            for (int k = 0; k < K; k++) s.load[k] = lanes_inside8(s.at + k, width);
            s.edge_at = 0;
            s.edge_inside = 0;
            inside = s.at >= 0 && s.at + K - 1 + 8 <= width && ow0 + 8 <= out_w;
        } else {
            s.at = (ptrdiff_t)(2 * ow0);
            s.load[0] = lanes_inside8(s.at, width);
            s.load[1] = lanes_inside8(s.at + 8, width);
            const ptrdiff_t edge = pad_left ? s.at - 1 : s.at + 16;
            s.edge_inside = edge >= 0 && edge < width;
            s.edge_at = edge;
            inside = s.at - pl >= 0 && s.at + 16 - pl < width && ow0 + 8 <= out_w;
        }
#define DIRECT8_STRIP(sc, inv, in)                                                                             \
    do {                                                                                                       \
        if (stride == 1)                                                                                       \
            stride1_strip8(K, out, out_w, ow0, oh0, oh1, x, sc, inv, (ptrdiff_t)ih0, (ptrdiff_t)ih1, in_w,      \
                           (ptrdiff_t)pad_top, &s, wv, cs, bias, in);                                          \
        else                                                                                                   \
            stride2_strip8(out, out_w, ow0, oh0, oh1, x, sc, inv, (ptrdiff_t)ih0, (ptrdiff_t)ih1, in_w,         \
                           (ptrdiff_t)pad_top, (int)pad_left, &s, wv, cs, bias, in);                           \
    } while (0)
        if (scale) {
            if (inside) DIRECT8_STRIP(scale, inverse, 1);
            else DIRECT8_STRIP(scale, inverse, 0);
        } else {
            if (inside) DIRECT8_STRIP(NULL, NULL, 1);
            else DIRECT8_STRIP(NULL, NULL, 0);
        }
#undef DIRECT8_STRIP
    }
}

#define DIRECT8_ENTRY(name, k, stride)                                                                         \
    static void name(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, const float *scale,      \
                     const float *inverse, size_t ih0, size_t ih1, size_t in_w, size_t pad_top, size_t pad_left, \
                     const float *w, float channel_scale, const float *bias) {                                 \
        direct_avx2(k, stride, out, out_w, oh0, oh1, x, scale, inverse, ih0, ih1, in_w, pad_top, pad_left, w,   \
                    channel_scale, bias);                                                                      \
    }
DIRECT8_ENTRY(direct_3x3_stride1_avx2, 3, 1)
DIRECT8_ENTRY(direct_3x3_stride2_avx2, 3, 2)
DIRECT8_ENTRY(direct_5x5_stride1_avx2, 5, 1)
#undef DIRECT8_ENTRY

/* tconv_rows_body.h quantize_run and quantize_taps on 8-lane halves, the
 * sums in registers: the generic forms' 16-lane narrowing to bytes went
 * lane by lane here (a 16->32 3x3 stride-2 conv, forced AVX2,
 * spent 78% of its 1.4 ms in it; 0.46 ms so). Clamping the product to
 * [-128, 127] before a rounding conversion gives the magic-number form's
 * codes for every finite product (the rows quantized hold no NaN or Inf). */
static inline int32_t round_to_i8(float v);
static inline __m256i quantize8_avx2(const float *src, __m256 s) {
    const __m256 lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(src), s), lo), hi));
}

/* 16 codes of a and b (8 each) to bytes: packs work within 128-bit lanes, a0-3 b0-3 | a4-7 b4-7, sorted to
 * a0-7 | b0-7 first. */
static inline __m128i codes16_avx2(__m256i a, __m256i b) {
    const __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
    return _mm_packs_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1));
}

static inline int32_t sum8_avx2(__m256i v) {
    __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0x4E));
    sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0xB1));
    return _mm_cvtsi128_si32(sum);
}

/* tconv_rows_body.h quantize_run: 16 values a step, then 8, then one by one. */
static int32_t quantize_run_avx2(int8_t *restrict q, const float *restrict src, float scale, size_t n) {
    const __m256 s = _mm256_set1_ps(scale);
    __m256i total = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i a = quantize8_avx2(src + i, s), b = quantize8_avx2(src + i + 8, s);
        _mm_storeu_si128((__m128i *)(q + i), codes16_avx2(a, b));
        total = _mm256_add_epi32(total, _mm256_add_epi32(a, b));
    }
    for (; i + 8 <= n; i += 8) {
        const __m256i a = quantize8_avx2(src + i, s);
        _mm_storel_epi64((__m128i *)(q + i), codes16_avx2(a, a));
        total = _mm256_add_epi32(total, a);
    }
    int32_t sum = sum8_avx2(total);
    for (; i < n; i++) {
        const int32_t v = round_to_i8(src[i] * scale);
        q[i] = (int8_t)v;
        sum += v;
    }
    return sum;
}
static int32_t quantize_taps_avx2(int8_t *restrict q, const float *restrict src, const ptrdiff_t *pixel, size_t taps,
                                  size_t pixel_stride, size_t n, float scale) {
    if (n % 16 != 0 || n >= 64) { /* as the generic form: a run a call */
        int32_t sum = 0;
        for (size_t t = 0; t < taps; t++, q += n) {
            if (pixel[t] < 0) memset(q, 0, n);
            else sum += quantize_run_avx2(q, src + (size_t)pixel[t] * pixel_stride, scale, n);
        }
        return sum;
    }
    const __m256 s = _mm256_set1_ps(scale);
    __m256i total = _mm256_setzero_si256();
    for (size_t t = 0; t < taps; t++, q += n) {
        if (pixel[t] < 0) {
            memset(q, 0, n);
            continue;
        }
        const float *run = src + (size_t)pixel[t] * pixel_stride;
        for (size_t i = 0; i < n; i += 16) {
            const __m256i a = quantize8_avx2(run + i, s), b = quantize8_avx2(run + i + 8, s);
            _mm_storeu_si128((__m128i *)(q + i), codes16_avx2(a, b));
            total = _mm256_add_epi32(total, _mm256_add_epi32(a, b));
        }
    }
    return sum8_avx2(total);
}

/* 256-bit vectors (tconv_rows_body.h tconv_vn). */
#define TCONV_NATIVE_FLOATS 8
#define TCONV_STORE_FIRST(dst, v, n) _mm256_maskstore_ps((dst), first_lanes8(n), (__m256)(v))
#define TCONV_ROWS_TABLE tconv_rows_avx2
#define TCONV_ROWS_TRANSPOSE tconv_transpose_avx2
#define TCONV_ROWS_BLOCK_TILE block_tile_avx2
#define TCONV_ROWS_STAGE_PHASES stage_phases_avx2
#define TCONV_ROWS_QUANTIZE_TAPS quantize_taps_avx2
#define TCONV_ROWS_QUANTIZE_RUN quantize_run_avx2
#define TCONV_ROWS_DIRECT_3X3_STRIDE1 direct_3x3_stride1_avx2
#define TCONV_ROWS_DIRECT_3X3_STRIDE2 direct_3x3_stride2_avx2
#define TCONV_ROWS_DIRECT_5X5_STRIDE1 direct_5x5_stride1_avx2
/* strips of 8: 960 @7x7 22.7 us against the channel blocks' 26.8 (forced AVX2 on a Zen 5 core); act_quant 3
 * at stride 2 96 @112x112 323 against the phase planes' 282 us */
#define TCONV_ROWS_DIRECT_MIN_WIDTH 5
#define TCONV_ROWS_DIRECT_PIXELS_STRIDE2 0
#include "conv/tconv_rows_body.h"
