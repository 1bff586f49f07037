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

/* The direct 3x3 kernels (tconv_rows.h direct_f32) as tconv_direct_avx512.c has
 * them, on strips of 8 outputs: see it for the order of the work. */

/* The lanes of an 8-output stride-1 strip, the same for every row: tap kw
 * reads columns at + kw on (load[kw]). */
struct direct_strip8 {
    ptrdiff_t at;
    __m256i load[5], out;
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

/* A group of G stride-2 strips of 8 outputs (columns c + 16 g on, c =
 * 2 ow0), as tconv_avx512.h's stride2_group: the edge column just left
 * (pad_left 1) or right (pad_left 0) of the group, the last strip's load
 * and output lanes. */
struct stride2_group8 {
    ptrdiff_t c, edge_at;
    int edge_inside;
    __m256i lo, hi, out;
};

/* One input row's taps for the group's strips, FMA'd as tconv_direct_avx512.c's
 * stride2_group_row does: kernel row kh (1, 2) into acc[g], row 0 from zero
 * into next[g] (kh 0, 2). A strip's shifted third tap takes its free lane
 * from the neighbouring strip's (moved) half, the group's ends from the
 * edge column. */
static inline __attribute__((always_inline)) void stride2_group_row8(int G, int pad_left, int ragged, const float *row,
                                                                     const float *scale, const float *inverse,
                                                                     const struct stride2_group8 *sg,
                                                                     const __m256 *wv, int kh, __m256 *acc,
                                                                     __m256 *next) {
    const __m256i right = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6), left = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0);
    __m256 edge = _mm256_setzero_ps();
    if (sg->edge_inside) {
        edge = _mm256_set1_ps(row[sg->edge_at]);
        if (scale) edge = dequantize8(edge, _mm256_set1_ps(scale[sg->edge_at]), _mm256_set1_ps(inverse[sg->edge_at]));
    }
#define S2G_SPLIT(g, even, odd)                                                                                \
    split16(row + 16 * (g), scale ? scale + 16 * (g) : NULL, scale ? inverse + 16 * (g) : NULL, sg->lo, sg->hi, \
            ragged && (g) == G - 1, &(even), &(odd))
#define S2G_ADD(g, t0, t1, t2)                                                                \
    do {                                                                                      \
        if (kh) {                                                                             \
            acc[g] = _mm256_fmadd_ps(t0, wv[3 * kh], acc[g]);                                 \
            acc[g] = _mm256_fmadd_ps(t1, wv[3 * kh + 1], acc[g]);                             \
            acc[g] = _mm256_fmadd_ps(t2, wv[3 * kh + 2], acc[g]);                             \
        }                                                                                     \
        if (kh != 1) {                                                                        \
            next[g] = _mm256_fmadd_ps(t0, wv[0], _mm256_setzero_ps());                        \
            next[g] = _mm256_fmadd_ps(t1, wv[1], next[g]);                                    \
            next[g] = _mm256_fmadd_ps(t2, wv[2], next[g]);                                    \
        }                                                                                     \
    } while (0)
    if (pad_left) { /* columns c - 1 + 2i, c + 2i, c + 1 + 2i */
        __m256 before = edge; /* lane 0: the column left of the strip */
        for (int g = 0; g < G; g++) {
            __m256 even, odd;
            S2G_SPLIT(g, even, odd);
            const __m256 moved = _mm256_permutevar8x32_ps(odd, right);
            S2G_ADD(g, _mm256_blend_ps(moved, before, 0x01), even, odd);
            before = moved;
        }
    } else { /* columns c + 2i, c + 1 + 2i, c + 2 + 2i */
        __m256 even, odd;
        S2G_SPLIT(0, even, odd);
        __m256 moved = _mm256_permutevar8x32_ps(even, left);
        for (int g = 0; g < G; g++) {
            __m256 even_after = _mm256_setzero_ps(), odd_after = even_after, moved_after = edge;
            if (g + 1 < G) {
                S2G_SPLIT(g + 1, even_after, odd_after);
                moved_after = _mm256_permutevar8x32_ps(even_after, left); /* lane 7: the next strip's column 0 */
            }
            S2G_ADD(g, even, odd, _mm256_blend_ps(moved, moved_after, 0x80));
            even = even_after;
            odd = odd_after;
            moved = moved_after;
        }
    }
#undef S2G_SPLIT
#undef S2G_ADD
}

/* The group down rows [oh0, oh1), an output row's kh = 0 sums started from
 * its top input row as the previous row's bottom one (tconv_direct_avx512.c's
 * stride2_group_rows): one strip at a time, its top taps kept, a row was a
 * chain of nine FMAs. */
static inline __attribute__((always_inline)) void stride2_group_rows8(int G, int pad_left, int ragged, float *out,
                                                                      size_t out_w, size_t ow0, size_t oh0, size_t oh1,
                                                                      const float *x, const float *scale,
                                                                      const float *inverse, ptrdiff_t ih0,
                                                                      ptrdiff_t ih1, size_t in_w, ptrdiff_t pad_top,
                                                                      const struct stride2_group8 *sg,
                                                                      const __m256 *wv, __m256 channel_scale,
                                                                      const float *bias) {
#define S2G_ROW(ih) ((ih) >= ih0 && (ih) < ih1 ? ((ih) - ih0) * (ptrdiff_t)in_w + sg->c : -1)
#define S2G_TAPS(at, kh, nx)                                                                                   \
    stride2_group_row8(G, pad_left, ragged, x + (at), scale ? scale + (at) : NULL, scale ? inverse + (at) : NULL, \
                       sg, wv, kh, acc, nx)
    __m256 acc[2], next[2];
    for (int g = 0; g < G; g++) acc[g] = next[g] = _mm256_setzero_ps();
    const ptrdiff_t top = S2G_ROW(2 * (ptrdiff_t)oh0 - pad_top);
    if (top >= 0) S2G_TAPS(top, 0, next);
    for (size_t oh = oh0; oh < oh1; oh++) {
        const ptrdiff_t ih = 2 * (ptrdiff_t)oh - pad_top;
        const ptrdiff_t middle = S2G_ROW(ih + 1), bottom = S2G_ROW(ih + 2);
        for (int g = 0; g < G; g++) acc[g] = next[g];
        if (middle >= 0) S2G_TAPS(middle, 1, next);
        if (bottom >= 0) S2G_TAPS(bottom, 2, next);
        else
            for (int g = 0; g < G; g++) next[g] = _mm256_setzero_ps();
        for (int g = 0; g < G; g++) {
            __m256 v = _mm256_mul_ps(acc[g], channel_scale);
            if (bias) v = _mm256_add_ps(v, _mm256_set1_ps(*bias));
            float *y = out + oh * out_w + ow0 + 8 * (size_t)g;
            if (ragged && g == G - 1) _mm256_maskstore_ps(y, sg->out, v);
            else _mm256_storeu_ps(y, v);
        }
    }
#undef S2G_ROW
#undef S2G_TAPS
}

/* tconv_rows.h direct_f32[0][1] on AVX2: groups of two strips of 8
 * outputs down the rows, then a single strip. */
static void direct_3x3_stride2_avx2(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x,
                                    const float *scale, const float *inverse, size_t ih0, size_t ih1, size_t in_w,
                                    size_t pad_top, size_t pad_left, const float *w, float channel_scale,
                                    const float *bias) {
    enum { GROUP = 2 };
    const __m256 cs = _mm256_set1_ps(channel_scale);
    __m256 wv[9];
    for (int t = 0; t < 9; t++) wv[t] = _mm256_set1_ps(w[t]);
    const ptrdiff_t width = (ptrdiff_t)in_w;
    const size_t strips = OBX_DIV_UP(out_w, 8);
    for (size_t first = 0; first < strips;) {
        const int G = strips - first >= GROUP ? GROUP : 1;
        const size_t ow0 = 8 * first, last_ow0 = ow0 + 8 * (size_t)(G - 1);
        struct stride2_group8 sg;
        sg.c = (ptrdiff_t)(2 * ow0);
        const ptrdiff_t edge_col = pad_left ? sg.c - 1 : sg.c + 16 * G, last_c = sg.c + 16 * (G - 1);
        sg.edge_inside = edge_col >= 0 && edge_col < width;
        sg.edge_at = edge_col - sg.c;
        sg.lo = lanes_inside8(0, width - last_c); /* the last strip's loads, from its first column */
        sg.hi = lanes_inside8(8, width - last_c);
        sg.out = first_lanes8(OBX_MIN(out_w - last_ow0, (size_t)8));
        const int ragged = last_c + 16 > width || last_ow0 + 8 > out_w;
#define S2G(G, pl, rg)                                                                                        \
    stride2_group_rows8(G, pl, rg, out, out_w, ow0, oh0, oh1, x, scale, inverse, (ptrdiff_t)ih0, (ptrdiff_t)ih1, \
                        in_w, (ptrdiff_t)pad_top, &sg, wv, cs, bias)
#define S2G_PAD(G, rg)               \
    do {                             \
        if (pad_left) S2G(G, 1, rg); \
        else S2G(G, 0, rg);          \
    } while (0)
        if (G == GROUP) {
            if (ragged) S2G_PAD(GROUP, 1);
            else S2G_PAD(GROUP, 0);
        } else {
            if (ragged) S2G_PAD(1, 1);
            else S2G_PAD(1, 0);
        }
#undef S2G_PAD
#undef S2G
        first += (size_t)G;
    }
}
#undef DIRECT8_TAPS

static inline __attribute__((always_inline)) void direct_avx2(int K, float *out, size_t out_w, size_t oh0,
                                                              size_t oh1, const float *x, const float *scale,
                                                              const float *inverse, size_t ih0, size_t ih1,
                                                              size_t in_w, size_t pad_top, size_t pad_left,
                                                              const float *w, float channel_scale, const float *bias) {
    const __m256 cs = _mm256_set1_ps(channel_scale);
    __m256 wv[25];
    for (int t = 0; t < K * K; t++) wv[t] = _mm256_set1_ps(w[t]);
    const ptrdiff_t width = (ptrdiff_t)in_w, pl = (ptrdiff_t)pad_left;
    for (size_t ow0 = 0; ow0 < out_w; ow0 += 8) {
        struct direct_strip8 s;
        s.out = first_lanes8(OBX_MIN(out_w - ow0, (size_t)8));
        s.at = (ptrdiff_t)ow0 - pl;
        for (int k = 0; k < K; k++) s.load[k] = lanes_inside8(s.at + k, width);
        const int inside = s.at >= 0 && s.at + K - 1 + 8 <= width && ow0 + 8 <= out_w;
#define DIRECT8_STRIP(sc, inv, in)                                                                            \
    stride1_strip8(K, out, out_w, ow0, oh0, oh1, x, sc, inv, (ptrdiff_t)ih0, (ptrdiff_t)ih1, in_w,             \
                   (ptrdiff_t)pad_top, &s, wv, cs, bias, in)
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

#define DIRECT8_ENTRY(name, k)                                                                                 \
    static void name(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, const float *scale,      \
                     const float *inverse, size_t ih0, size_t ih1, size_t in_w, size_t pad_top, size_t pad_left, \
                     const float *w, float channel_scale, const float *bias) {                                 \
        direct_avx2(k, out, out_w, oh0, oh1, x, scale, inverse, ih0, ih1, in_w, pad_top, pad_left, w,           \
                    channel_scale, bias);                                                                      \
    }
DIRECT8_ENTRY(direct_3x3_stride1_avx2, 3)
DIRECT8_ENTRY(direct_5x5_stride1_avx2, 5)
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
 * at stride 2 96 @112x112 250 against the phase planes' 283 us (323 us before the strips went in pairs) */
#define TCONV_ROWS_DIRECT_MIN_WIDTH 5
#include "conv/tconv_rows_body.h"
