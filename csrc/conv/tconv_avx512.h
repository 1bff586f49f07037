/* Lane helpers the AVX-512 conv kernels share (tconv_rows_avx512.c, the
 * direct depthwise planes in tconv_direct_avx512.c and
 * tconv_direct_i8_avx512.c), and the direct kernels' entry points, which
 * the AVX-512 row-kernel table takes. Included only by *_avx512.c files. */
#ifndef ONNXBIT_TCONV_AVX512_H
#define ONNXBIT_TCONV_AVX512_H

#include <immintrin.h>

#include "conv/tconv_rows.h"
#include "obx_common.h"

/* The first n lanes (all 16 from n = 16 on). */
static inline __mmask16 first_lanes(size_t n) { return (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1); }
/* The lanes of columns [from, from + 16) inside [0, width). */
static inline __mmask16 lanes_inside(ptrdiff_t from, ptrdiff_t width) {
    const ptrdiff_t lo = from < 0 ? -from : 0, hi = OBX_MIN(width - from, (ptrdiff_t)16);
    return hi <= lo ? 0 : (__mmask16)(first_lanes((size_t)hi) & ~first_lanes((size_t)lo));
}
/* rint(x * s) * inverse, 16 lanes (tconv_rows.h dequantize_pixels). */
static inline __m512 dequantize16(__m512 x, __m512 s, __m512 inverse) {
    const __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(x, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_mul_ps(q, inverse);
}
/* Dequantized x when scale (dequantize16), masked loads. */
static inline __m512 load_dequantized(const float *x, const float *scale, const float *inverse, __mmask16 lanes) {
    const __m512 v = _mm512_maskz_loadu_ps(lanes, x);
    if (!scale) return v;
    return dequantize16(v, _mm512_maskz_loadu_ps(lanes, scale), _mm512_maskz_loadu_ps(lanes, inverse));
}
/* A group of G 16-output strips of a stride-2 row (tconv_rows.h
 * direct_f32[0][1]), the same for every row: strip g reads columns
 * c + 32 g .. c + 32 g + 31 (c = 2 ow0), and the column just left of the
 * group (pad_left 1) or just right of it (pad_left 0). */
struct stride2_group {
    ptrdiff_t c, edge_at;     /* the edge column, or column 0 where it lies outside the row */
    __mmask16 lo, hi, out;    /* the last strip's loads' lanes inside the row, its outputs' */
    __mmask16 edge;           /* all lanes where the edge column lies inside the row, else none */
};
/* Strip g's columns split into even ones and odd ones: two loads (the last
 * strip's masked when ragged), dequantized with scale, and two permutes. */
static inline __attribute__((always_inline)) void stride2_split(int last, int ragged, const float *row,
                                                                const float *scale, const float *inverse,
                                                                const struct stride2_group *sg, __m512 *even,
                                                                __m512 *odd) {
    const __m512i even_lanes = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd_lanes = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __mmask16 lo_lanes = last && ragged ? sg->lo : 0xffff, hi_lanes = last && ragged ? sg->hi : 0xffff;
    const __m512 lo = load_dequantized(row, scale, inverse, lo_lanes);
    const __m512 hi = load_dequantized(row + 16, scale ? scale + 16 : NULL, scale ? inverse + 16 : NULL, hi_lanes);
    *even = _mm512_permutex2var_ps(lo, even_lanes, hi);
    *odd = _mm512_permutex2var_ps(lo, odd_lanes, hi);
}

static inline __m512 stride2_edge(const float *row, const float *scale, const float *inverse,
                                  const struct stride2_group *sg) {
    const ptrdiff_t e = sg->edge_at;
    __m512 v = _mm512_set1_ps(row[e]);
    if (scale) v = dequantize16(v, _mm512_set1_ps(scale[e]), _mm512_set1_ps(inverse[e]));
    return _mm512_maskz_mov_ps(sg->edge, v); /* after the dequantization: a bad pixel's NaN stays out of the padding */
}
/* The group of G strips from output column ow0 on; *ragged: its last
 * strip crosses the row's end (masked loads and store). */
static inline struct stride2_group stride2_group_at(size_t ow0, int G, size_t out_w, size_t in_w, size_t pad_left,
                                                    int *ragged) {
    const ptrdiff_t width = (ptrdiff_t)in_w;
    const size_t last_ow0 = ow0 + 16 * (size_t)(G - 1);
    struct stride2_group sg;
    sg.c = (ptrdiff_t)(2 * ow0);
    const ptrdiff_t edge_col = pad_left ? sg.c - 1 : sg.c + 32 * G, last_c = sg.c + 32 * (G - 1);
    const int edge_inside = edge_col >= 0 && edge_col < width;
    sg.edge_at = edge_inside ? edge_col - sg.c : -sg.c;
    sg.edge = edge_inside ? 0xffff : 0;
    const ptrdiff_t left = width - last_c;
    sg.lo = left <= 0 ? 0 : first_lanes((size_t)left);
    sg.hi = left <= 16 ? 0 : first_lanes((size_t)(left - 16));
    sg.out = first_lanes(out_w - last_ow0);
    *ragged = last_c + 32 > width || last_ow0 + 16 > out_w;
    return sg;
}
/* Two channels a vector (the direct pair kernels): the first's value in the
 * lower half, the second's in the upper. */
static inline __m512 pair_halves(float lower, float upper) {
    return _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(lower), _mm512_set1_ps(upper));
}

/* Two channels' rows of at most 16 columns at 3x3 stride 2 (the pair
 * kernels, float and int8): the lanes a row's load takes, the even and odd
 * columns inside it in both halves, and the third tap's lane shift within
 * each half: pad_left 1, lane i takes lane i - 1 (lanes 0 and 8 cleared);
 * pad_left 0, lane i + 1 (lanes 7 and 15: column 16, which a row of at
 * most 16 columns does not hold). A row's lanes past its end are cleared by
 * the permutes, so plain loads may read past it where the rows given go on
 * (masked loads of rows crossing a cache line ran slow on Zen 5: 512 @14x14
 * stride 2 7.8 -> 6.6 us). */
struct pair_split2 {
    __m512i shift;
    __mmask16 moved, lanes, even_in, odd_in;
};

static inline struct pair_split2 pair_split2_at(size_t in_w, size_t pad_left) {
    struct pair_split2 p;
    p.shift = pad_left ? _mm512_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6, 8, 8, 9, 10, 11, 12, 13, 14)
                       : _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7, 9, 10, 11, 12, 13, 14, 15, 15);
    p.moved = pad_left ? 0xfefe : 0x7f7f;
    p.lanes = first_lanes(in_w);
    p.even_in = (__mmask16)(first_lanes((in_w + 1) / 2) * 0x101);
    p.odd_in = (__mmask16)(first_lanes(in_w / 2) * 0x101);
    return p;
}

/* A row of channel a and of channel b (loaded from their first column) to
 * the row's three taps, a's outputs in the lower half, b's in the upper:
 * one permute for both channels' even columns, one for their odd ones, one
 * lane shift for the third tap. pad_left as pair_split2_at had it (a
 * constant where inlined: the kernels are built for each). */
static inline __attribute__((always_inline)) void pair_split2_taps(const struct pair_split2 *p, int pad_left, __m512 a,
                                                                   __m512 b, __m512 *t) {
    const __m512i even_lanes = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd_lanes = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512 even = _mm512_maskz_permutex2var_ps(p->even_in, a, even_lanes, b);
    const __m512 odd = _mm512_maskz_permutex2var_ps(p->odd_in, a, odd_lanes, b);
    t[0] = pad_left ? _mm512_maskz_permutexvar_ps(p->moved, p->shift, odd) : even;
    t[1] = pad_left ? even : odd;
    t[2] = pad_left ? odd : _mm512_maskz_permutexvar_ps(p->moved, p->shift, even);
}

/* tconv_rows.h direct_f32, direct_pairs_3x3_stride2 (tconv_direct_avx512.c) */
void tconv_direct_3x3_stride1_avx512(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x,
                                     const float *scale, const float *inverse, size_t ih0, size_t ih1, size_t in_w,
                                     size_t pad_top, size_t pad_left, const float *w, float channel_scale,
                                     const float *bias);
void tconv_direct_5x5_stride1_avx512(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x,
                                     const float *scale, const float *inverse, size_t ih0, size_t ih1, size_t in_w,
                                     size_t pad_top, size_t pad_left, const float *w, float channel_scale,
                                     const float *bias);
void tconv_direct_3x3_stride2_avx512(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x,
                                     const float *scale, const float *inverse, size_t ih0, size_t ih1, size_t in_w,
                                     size_t pad_top, size_t pad_left, const float *w, float channel_scale,
                                     const float *bias);
void tconv_direct_pairs_stride2_avx512(size_t count, float *const *out, size_t out_w, size_t oh0, size_t oh1,
                                       const float *const *x, const float *scale, const float *inverse, size_t ih0,
                                       size_t ih1, size_t in_w, size_t pad_top, size_t pad_left, const float *w,
                                       size_t w_stride, const float *channel_scale, const float *bias);
void tconv_direct_pairs_3x3_stride1_avx512(size_t count, float *const *out, size_t out_w, size_t oh0, size_t oh1,
                                           const float *const *x, const float *scale, const float *inverse,
                                           size_t ih0, size_t ih1, size_t in_w, size_t pad_top, size_t pad_left,
                                           const float *w, size_t w_stride, const float *channel_scale,
                                           const float *bias);
/* tconv_rows.h direct_i8, direct_i8_pair_stride2 (tconv_direct_i8_avx512.c) */
void tconv_direct_i8_stride1_avx512(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, size_t ih0,
                                    size_t ih1, size_t in_w, size_t pad_top, size_t pad_left, const float *w,
                                    float static_scale, float weight_scale, const float *bias);
void tconv_direct_i8_stride2_avx512(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, size_t ih0,
                                    size_t ih1, size_t in_w, size_t pad_top, size_t pad_left, const float *w,
                                    float static_scale, float weight_scale, const float *bias);
void tconv_direct_i8_pair_stride2_avx512(float *const *out, size_t out_w, size_t oh0, size_t oh1,
                                         const float *const *x, size_t ih0, size_t ih1, size_t in_w, size_t pad_top,
                                         size_t pad_left, const float *w, size_t w_stride, float static_scale,
                                         const float *weight_scale, const float *bias);

#endif
