/* The conv row kernels built for AVX-512 (tconv_rows_body.h); 512-bit
 * vectors: the file's flags allow them and -mprefer-vector-width is not set.
 * The transpose works in 16 x 16 register blocks (64 shuffles a block, where
 * the AVX2 file's 8 x 8 blocks take 96 for the same floats), the AVX2 one on
 * the edges. The depthwise channel blocks (tconv_depthwise_blocks.c) spend
 * about a quarter of their time in transposes. */
#include <immintrin.h>
#include <stdlib.h>

#include "conv/tconv_rows.h"
#include "obx_common.h"

/* r[i] (row i) -> r[j] (column j), in registers. */
static inline void transpose_16x16_registers(__m512 r[16]) {
    __m512 t[16];
    /* in each 128-bit lane: pairs of rows interleaved */
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* r[4k + m], 128-bit lane L: column 4L + m of rows 4k .. 4k + 3 */
    for (int k = 0; k < 4; k++) {
        const __m512 *v = t + 4 * k;
        r[4 * k + 0] = _mm512_shuffle_ps(v[0], v[2], 0x44);
        r[4 * k + 1] = _mm512_shuffle_ps(v[0], v[2], 0xEE);
        r[4 * k + 2] = _mm512_shuffle_ps(v[1], v[3], 0x44);
        r[4 * k + 3] = _mm512_shuffle_ps(v[1], v[3], 0xEE);
    }
    /* t[m] (rows 0-7) and t[8 + m] (rows 8-15): columns m and 8 + m (0x88),
     * t[4 + m] and t[12 + m]: columns 4 + m and 12 + m (0xDD), four rows a lane */
    for (int m = 0; m < 4; m++) {
        t[m] = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x88);
        t[4 + m] = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xDD);
        t[8 + m] = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x88);
        t[12 + m] = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xDD);
    }
    for (int m = 0; m < 4; m++) {
        r[m] = _mm512_shuffle_f32x4(t[m], t[8 + m], 0x88);
        r[8 + m] = _mm512_shuffle_f32x4(t[m], t[8 + m], 0xDD);
        r[4 + m] = _mm512_shuffle_f32x4(t[4 + m], t[12 + m], 0x88);
        r[12 + m] = _mm512_shuffle_f32x4(t[4 + m], t[12 + m], 0xDD);
    }
}

static inline void transpose_16x16(const float *src, size_t src_stride, float *dst, size_t dst_stride) {
    __m512 r[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * src_stride);
    transpose_16x16_registers(r);
    for (int j = 0; j < 16; j++) _mm512_storeu_ps(dst + j * dst_stride, r[j]);
}

static void transpose_avx512(const float *src, size_t rows, size_t cols, size_t src_stride, float *dst,
                             size_t dst_stride) {
    const size_t rows16 = rows - rows % 16, cols16 = cols - cols % 16;
    for (size_t i = 0; i < rows16; i += 16) {
        for (size_t j = 0; j < cols16; j += 16)
            transpose_16x16(src + i * src_stride + j, src_stride, dst + j * dst_stride + i, dst_stride);
        if (cols16 < cols)
            tconv_transpose_avx2(src + i * src_stride + cols16, 16, cols - cols16, src_stride,
                                 dst + cols16 * dst_stride + i, dst_stride);
    }
    if (rows16 < rows)
        tconv_transpose_avx2(src + rows16 * src_stride, rows - rows16, cols, src_stride, dst + rows16, dst_stride);
}

/* The first n lanes (all 16 from n = 16 on). */
static inline __mmask16 first_lanes(size_t n) { return (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1); }

/* rint(x * s) * inverse, 16 lanes (tconv_rows.h dequantize_pixels). */
static inline __m512 dequantize16(__m512 x, __m512 s, __m512 inverse) {
    const __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(x, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_mul_ps(q, inverse);
}

/* tconv_rows.h block_tile with the dequantization in the transpose's
 * registers: a loaded row is 16 pixels of one channel, and each lane meets
 * its own pixel's scale, so the tile is written once, already dequantized
 * (the transpose followed by a pass over the tile's rows took a quarter of a
 * 512 @14x14 stride-2 call). Each column goes to its pixel's place from the
 * table, an offset in floats that the store's address takes as it is
 * (stepping a row and column per pixel put 6 scalar instructions on every
 * store, on the shuffles' ports). Masked loads cover the last pixels
 * with zeros. channels is 16 or, for the last block, fewer: a constant 16
 * lets the rows live in registers (with a run-time count GCC kept them on
 * the stack, and the tile took a third of that call). */
static inline __attribute__((always_inline)) void tile_block16(float *tile, const uint32_t *at, const float *x,
                                                               size_t channels, size_t n, size_t plane_stride,
                                                               const float *scale, const float *inverse) {
    /* n == 16: plain loads, which the multiplies take as operands */
    const __mmask16 lanes = first_lanes(n);
#define TILE_LOAD(p) (n == 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lanes, p))
    __m512 r[16];
    if (scale) {
        const __m512 s = TILE_LOAD(scale), inv = TILE_LOAD(inverse);
        for (int i = 0; i < 16; i++)
            r[i] = (size_t)i < channels ? dequantize16(TILE_LOAD(x + i * plane_stride), s, inv) : _mm512_setzero_ps();
    } else {
        for (int i = 0; i < 16; i++) r[i] = (size_t)i < channels ? TILE_LOAD(x + i * plane_stride) : _mm512_setzero_ps();
    }
#undef TILE_LOAD
    transpose_16x16_registers(r);
    if (n == 16)
        for (int j = 0; j < 16; j++) _mm512_storeu_ps(tile + at[j], r[j]);
    else
        for (int j = 0; (size_t)j < n; j++) _mm512_storeu_ps(tile + at[j], r[j]);
}

static inline __attribute__((always_inline)) void block_tile_lanes(float *tile, const uint32_t *at, const float *x,
                                                                   size_t channels, size_t pixels,
                                                                   size_t plane_stride, const float *scale,
                                                                   const float *inverse) {
    size_t p0 = 0;
    for (; p0 + 16 <= pixels; p0 += 16)
        tile_block16(tile, at + p0, x + p0, channels, 16, plane_stride, scale ? scale + p0 : NULL,
                     scale ? inverse + p0 : NULL);
    if (p0 < pixels)
        tile_block16(tile, at + p0, x + p0, channels, pixels - p0, plane_stride, scale ? scale + p0 : NULL,
                     scale ? inverse + p0 : NULL);
}

static void block_tile_avx512(float *tile, const uint32_t *at, const float *x, size_t channels, size_t pixels,
                              size_t plane_stride, const float *scale, const float *inverse) {
    if (channels == 16 && scale) block_tile_lanes(tile, at, x, 16, pixels, plane_stride, scale, inverse);
    else if (channels == 16) block_tile_lanes(tile, at, x, 16, pixels, plane_stride, NULL, NULL);
    else block_tile_lanes(tile, at, x, channels, pixels, plane_stride, scale, inverse);
}

/* Dequantized x when scale (dequantize16), masked loads. */
static inline __m512 load_dequantized(const float *x, const float *scale, const float *inverse, __mmask16 lanes) {
    const __m512 v = _mm512_maskz_loadu_ps(lanes, x);
    if (!scale) return v;
    return dequantize16(v, _mm512_maskz_loadu_ps(lanes, scale), _mm512_maskz_loadu_ps(lanes, inverse));
}

/* copy_rows_avx512 with scale known to be NULL or not where it is inlined. */
static inline __attribute__((always_inline)) void copy_rows_lines(float *dst, size_t dst_stride, const float *src,
                                                                  size_t src_stride, size_t rows, size_t cols,
                                                                  const float *scale, const float *inverse) {
    const size_t whole = cols / 16 * 16;
    const __mmask16 tail = first_lanes(cols - whole);
    for (size_t r = 0; r < rows; r++) {
        const size_t at = r * src_stride;
        float *out = dst + r * dst_stride;
        for (size_t c = 0; c < whole; c += 16)
            _mm512_storeu_ps(out + c, load_dequantized(src + at + c, scale ? scale + at + c : NULL,
                                                       scale ? inverse + at + c : NULL, 0xffff));
        if (tail)
            _mm512_mask_storeu_ps(out + whole, tail,
                                  load_dequantized(src + at + whole, scale ? scale + at + whole : NULL,
                                                   scale ? inverse + at + whole : NULL, tail));
    }
}

/* tconv_rows.h copy_rows: whole vectors, then a masked one worked out once
 * for all rows; inlined with and without scales, so neither tests them per
 * vector (as stage_wide_rows, which says what that saved). */
static void copy_rows_avx512(float *dst, size_t dst_stride, const float *src, size_t src_stride, size_t rows,
                             size_t cols, const float *scale, const float *inverse) {
    if (scale) copy_rows_lines(dst, dst_stride, src, src_stride, rows, cols, scale, inverse);
    else copy_rows_lines(dst, dst_stride, src, src_stride, rows, cols, NULL, NULL);
}

/* tconv_rows.h dequantize_pixels: one row of copy_rows, a masked last
 * vector (the flat planes dequantized a row at a time, 56 values at 56x56,
 * where the compiler's scalar epilogue took a third of the call). */
static void dequantize_pixels_avx512(float *out, const float *src, const float *scale, const float *inverse,
                                     size_t n) {
    copy_rows_avx512(out, n, src, n, 1, n, scale, inverse);
}

/* x + i, i possibly outside the plane: only lanes inside it are loaded
 * (integer arithmetic, so no out-of-bounds pointer is formed). */
static inline const float *shifted(const float *x, ptrdiff_t i) {
    return (const float *)((uintptr_t)x + (uintptr_t)(i * (ptrdiff_t)sizeof(float)));
}

/* tconv_rows.h depthwise_masked_plane_f32: each tap a masked load, so the
 * wrapped columns and the rows outside the plane read as zeros without the
 * staged, masked copies of the plane (a fifth of a 576 @14x14 call); four
 * vectors at once (four independent chains of FMAs). */
static void depthwise_masked_plane_avx512(float *out, const float *x, size_t n, const ptrdiff_t *shift,
                                          const uint16_t *mask, const float *w, size_t taps, float scale,
                                          const float *bias) {
    const size_t vectors = OBX_DIV_UP(n, 16);
    const __m512 s = _mm512_set1_ps(scale);
    size_t v = 0;
#define MASKED_TAP(acc, k)                                                                                      \
    acc = _mm512_fmadd_ps(                                                                                     \
        _mm512_maskz_loadu_ps(mask[t * vectors + v + (k)], shifted(x, (ptrdiff_t)(16 * (v + (k))) + shift[t])), \
        wt, acc)
#define MASKED_STORE(acc, k)                                                                                    \
    do {                                                                                                       \
        __m512 y_ = _mm512_mul_ps(acc, s);                                                                     \
        if (bias) y_ = _mm512_add_ps(y_, _mm512_set1_ps(*bias));                                               \
        _mm512_mask_storeu_ps(out + 16 * (v + (k)), first_lanes(n - 16 * (v + (k))), y_);                     \
    } while (0)
    for (; v + 4 <= vectors; v += 4) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (size_t t = 0; t < taps; t++) {
            const __m512 wt = _mm512_set1_ps(w[t]);
            MASKED_TAP(a0, 0);
            MASKED_TAP(a1, 1);
            MASKED_TAP(a2, 2);
            MASKED_TAP(a3, 3);
        }
        MASKED_STORE(a0, 0);
        MASKED_STORE(a1, 1);
        MASKED_STORE(a2, 2);
        MASKED_STORE(a3, 3);
    }
    for (; v < vectors; v++) {
        __m512 a0 = _mm512_setzero_ps();
        for (size_t t = 0; t < taps; t++) {
            const __m512 wt = _mm512_set1_ps(w[t]);
            MASKED_TAP(a0, 0);
        }
        MASKED_STORE(a0, 0);
    }
#undef MASKED_TAP
#undef MASKED_STORE
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

/* Weight kh * 3 + kw. */
#define STRIDE2_FMA3(acc, t0, t1, t2, kh)                \
    do {                                                 \
        acc = _mm512_fmadd_ps(t0, wv[3 * (kh)], acc);     \
        acc = _mm512_fmadd_ps(t1, wv[3 * (kh) + 1], acc); \
        acc = _mm512_fmadd_ps(t2, wv[3 * (kh) + 2], acc); \
    } while (0)

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

/* One input row's taps for the group's strips, each strip's three FMA'd
 * into acc[g] with the weights of kernel row kh (1 or 2), and (kh 0 or 2)
 * with those of row 0 into next[g] from zero: the next output row's first
 * taps. A strip's
 * third column set is one of its split halves moved a lane, the lane set
 * free taken from the neighbouring strip's half, or at the group's end from
 * the edge column: pad_left 1, columns c - 1 + 2i, c + 2i, c + 1 + 2i;
 * pad_left 0, columns c + 2i, c + 1 + 2i, c + 2 + 2i. */
static inline __attribute__((always_inline)) void stride2_group_row(int G, int pad_left, int ragged, const float *row,
                                                                    const float *scale, const float *inverse,
                                                                    const struct stride2_group *sg, const __m512 *wv,
                                                                    int kh, __m512 *acc, __m512 *next) {
#define STRIDE2_AT(g) (scale ? scale + 32 * (g) : NULL), (scale ? inverse + 32 * (g) : NULL)
#define STRIDE2_ADD(g, t0, t1, t2)                    \
    do {                                              \
        if (kh) STRIDE2_FMA3(acc[g], t0, t1, t2, kh); \
        if (kh != 1) {                                \
            next[g] = _mm512_setzero_ps();            \
            STRIDE2_FMA3(next[g], t0, t1, t2, 0);     \
        }                                             \
    } while (0)
    if (pad_left) {
        __m512 before = stride2_edge(row, scale, inverse, sg);
        for (int g = 0; g < G; g++) {
            __m512 even, odd;
            stride2_split(g == G - 1, ragged, row + 32 * g, STRIDE2_AT(g), sg, &even, &odd);
            const __m512 t0 =
                _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(odd), _mm512_castps_si512(before), 15));
            STRIDE2_ADD(g, t0, even, odd);
            before = odd;
        }
    } else {
        __m512 even, odd;
        stride2_split(G == 1, ragged, row, STRIDE2_AT(0), sg, &even, &odd);
        for (int g = 0; g < G; g++) {
            __m512 even_after, odd_after = _mm512_setzero_ps();
            if (g + 1 < G) stride2_split(g + 1 == G - 1, ragged, row + 32 * (g + 1), STRIDE2_AT(g + 1), sg, &even_after, &odd_after);
            else even_after = stride2_edge(row, scale, inverse, sg);
            const __m512 t2 =
                _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(even_after), _mm512_castps_si512(even), 1));
            STRIDE2_ADD(g, even, odd, t2);
            even = even_after;
            odd = odd_after;
        }
    }
#undef STRIDE2_AT
#undef STRIDE2_ADD
}

/* The group down rows [oh0, oh1). An output's sum still adds its taps in
 * (kh, kw) order: its kh = 0 taps are summed from zero as the previous
 * output row's bottom input row is split (that row's third), so only that
 * partial sum crosses rows and G strips fit the registers. One strip at a
 * time, its top row's three taps kept, every load masked and an edge
 * column dequantized a strip (the kernel alone in a loop, one thread, 96
 * @112x112: float 79 us, act_quant 3 in bands of 5 rows 149 us); four side
 * by side, as here: 66 us and 100 us. */
static inline __attribute__((always_inline)) void stride2_group_rows(int G, int pad_left, int ragged, float *out,
                                                                     size_t out_w, size_t ow0, size_t oh0, size_t oh1,
                                                                     const float *x, const float *scale,
                                                                     const float *inverse, ptrdiff_t ih0,
                                                                     ptrdiff_t ih1, size_t in_w, ptrdiff_t pad_top,
                                                                     const struct stride2_group *sg, const __m512 *wv,
                                                                     __m512 channel_scale, const float *bias) {
    /* input row ih's offset from x (at the group's first column), or -1 in the padding */
#define STRIDE2_ROW(ih) ((ih) >= ih0 && (ih) < ih1 ? ((ih) - ih0) * (ptrdiff_t)in_w + sg->c : -1)
#define STRIDE2_GROUP_ROW(at, kh, nx)                                                                          \
    stride2_group_row(G, pad_left, ragged, x + (at), scale ? scale + (at) : NULL, scale ? inverse + (at) : NULL, \
                      sg, wv, kh, acc, nx)
    __m512 acc[4], next[4];
    for (int g = 0; g < G; g++) acc[g] = next[g] = _mm512_setzero_ps();
    const ptrdiff_t top = STRIDE2_ROW(2 * (ptrdiff_t)oh0 - pad_top);
    if (top >= 0) STRIDE2_GROUP_ROW(top, 0, next);
    for (size_t oh = oh0; oh < oh1; oh++) {
        const ptrdiff_t ih = 2 * (ptrdiff_t)oh - pad_top;
        const ptrdiff_t middle = STRIDE2_ROW(ih + 1), bottom = STRIDE2_ROW(ih + 2);
        for (int g = 0; g < G; g++) acc[g] = next[g];
        if (middle >= 0) STRIDE2_GROUP_ROW(middle, 1, next);
        if (bottom >= 0) STRIDE2_GROUP_ROW(bottom, 2, next);
        else
            for (int g = 0; g < G; g++) next[g] = _mm512_setzero_ps();
        for (int g = 0; g < G; g++) {
            __m512 v = _mm512_mul_ps(acc[g], channel_scale);
            if (bias) v = _mm512_add_ps(v, _mm512_set1_ps(*bias));
            float *y = out + oh * out_w + ow0 + 16 * (size_t)g;
            if (ragged && g == G - 1) _mm512_mask_storeu_ps(y, sg->out, v);
            else _mm512_storeu_ps(y, v);
        }
    }
#undef STRIDE2_ROW
#undef STRIDE2_GROUP_ROW
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

/* tconv_rows.h direct_f32[0][1] (3x3, stride 2): groups of four strips of
 * 16 outputs down the rows, then single strips; masked loads and stores
 * only on a row's last strip where it crosses the row's end, an edge column
 * a group. */
static void depthwise_stride2_avx512(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x,
                                     const float *scale, const float *inverse, size_t ih0, size_t ih1, size_t in_w,
                                     size_t pad_top, size_t pad_left, const float *w, float channel_scale,
                                     const float *bias) {
    const __m512 cs = _mm512_set1_ps(channel_scale);
    __m512 wv[9];
    for (int t = 0; t < 9; t++) wv[t] = _mm512_set1_ps(w[t]);
    const size_t strips = OBX_DIV_UP(out_w, 16);
    for (size_t first = 0; first < strips;) {
        const int G = strips - first >= 4 ? 4 : 1;
        const size_t ow0 = 16 * first;
        int ragged;
        const struct stride2_group sg = stride2_group_at(ow0, G, out_w, in_w, pad_left, &ragged);
#define STRIDE2_GROUP(G, pl, rg)                                                                              \
    stride2_group_rows(G, pl, rg, out, out_w, ow0, oh0, oh1, x, scale, inverse, (ptrdiff_t)ih0, (ptrdiff_t)ih1, \
                       in_w, (ptrdiff_t)pad_top, &sg, wv, cs, bias)
#define STRIDE2_PAD(G, rg)                  \
    do {                                    \
        if (pad_left) STRIDE2_GROUP(G, 1, rg); \
        else STRIDE2_GROUP(G, 0, rg);          \
    } while (0)
        if (G == 4) {
            if (ragged) STRIDE2_PAD(4, 1);
            else STRIDE2_PAD(4, 0);
        } else {
            if (ragged) STRIDE2_PAD(1, 1);
            else STRIDE2_PAD(1, 0);
        }
#undef STRIDE2_PAD
#undef STRIDE2_GROUP
        first += (size_t)G;
    }
}
#undef STRIDE2_FMA3

/* tconv_rows.h direct_pairs_3x3_stride2: rows at most 16 wide (at most 8
 * outputs), channels 2 p and 2 p + 1 in one vector, the first's outputs in
 * lanes 0 .. 7, the second's in 8 .. 15. A row of each channel is one
 * load; one permute takes both channels' even columns, one their odd ones,
 * and one moves a lane within each half for the third tap (the lane set
 * free is padding: column -1 at pad_left 1, column 16 at pad_left 0, which
 * a row of at most 16 columns does not hold). Row by row as
 * depthwise_stride2_avx512 goes, kh = 0 sums started one row early, P
 * vectors side by side (their chains of 9 FMAs overlap). One strip a
 * channel filled 7 of 16 lanes at 14x14 stride 2. */
static inline __attribute__((always_inline)) void pairs_stride2(int P, float *const *out, size_t out_w, size_t oh0,
                                                               size_t oh1, const float *const *x,
                                                               const float *scale, const float *inverse, size_t ih0,
                                                               size_t ih1, size_t in_w, size_t pad_top,
                                                               size_t pad_left, const float *w, size_t w_stride,
                                                               const float *channel_scale, const float *bias) {
    const __m512i even_lanes = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd_lanes = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    /* pad_left 1: lane i takes lane i - 1 of its half (lanes 0 and 8 cleared); pad_left 0: lane i + 1 (7, 15) */
    const __m512i shift = pad_left ? _mm512_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6, 8, 8, 9, 10, 11, 12, 13, 14)
                                   : _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7, 9, 10, 11, 12, 13, 14, 15, 15);
    const __mmask16 moved = pad_left ? 0xfefe : 0x7f7f;
    const __mmask16 lanes = first_lanes(in_w), half = 0xff00, stored = first_lanes(out_w);
    /* columns 2i and 2i + 1 inside the row, in both halves: a row's other lanes are cleared by the permutes,
     * so plain loads may read past its end where the rows given go on (masked loads of rows crossing a cache
     * line ran slow on Zen 5: 512 @14x14 stride 2 7.8 -> 6.6 us) */
    const __mmask16 even_in = (__mmask16)(first_lanes((in_w + 1) / 2) * 0x101), odd_in = (__mmask16)(first_lanes(in_w / 2) * 0x101);
    const ptrdiff_t extent = (ptrdiff_t)((ih1 - ih0) * in_w);
#define PAIR_HALVES(v, k) _mm512_mask_blend_ps(half, _mm512_set1_ps((v)[2 * (k)]), _mm512_set1_ps((v)[2 * (k) + 1]))
    __m512 wv[2][9], cs[2], b[2];
    for (int k = 0; k < P; k++) {
        for (int t = 0; t < 9; t++)
            wv[k][t] = _mm512_mask_blend_ps(half, _mm512_set1_ps(w[t * w_stride + 2 * k]),
                                            _mm512_set1_ps(w[t * w_stride + 2 * k + 1]));
        cs[k] = PAIR_HALVES(channel_scale, k);
        b[k] = bias ? PAIR_HALVES(bias, k) : _mm512_setzero_ps();
    }
#undef PAIR_HALVES
#define PAIR_ROW(ih) ((ih) >= (ptrdiff_t)ih0 && (ih) < (ptrdiff_t)ih1 ? ((ih) - (ptrdiff_t)ih0) * (ptrdiff_t)in_w : -1)
    /* one input row's taps, kernel row kh's FMA'd into acc[k] (kh 1, 2), row 0's into next[k] from zero (kh 0, 2) */
#define PAIR_TAPS(at, kh)                  \
    do {                                   \
        if ((at) + 16 <= extent)           \
            PAIR_ROW_TAPS(at, kh, 0xffff); \
        else                               \
            PAIR_ROW_TAPS(at, kh, lanes);  \
    } while (0)
#define PAIR_ROW_TAPS(at, kh, read_)                                                                        \
    do {                                                                                                    \
        const float *s_ = scale ? scale + (at) : NULL, *i_ = scale ? inverse + (at) : NULL;               \
        for (int k = 0; k < P; k++) {                                                                       \
            const __m512 a_ = load_dequantized(xs[2 * k] + (at), s_, i_, read_);                           \
            const __m512 c_ = load_dequantized(xs[2 * k + 1] + (at), s_, i_, read_);                       \
            const __m512 even_ = _mm512_maskz_permutex2var_ps(even_in, a_, even_lanes, c_);                \
            const __m512 odd_ = _mm512_maskz_permutex2var_ps(odd_in, a_, odd_lanes, c_);                   \
            const __m512 t0_ = pad_left ? _mm512_maskz_permutexvar_ps(moved, shift, odd_) : even_;        \
            const __m512 t1_ = pad_left ? even_ : odd_;                                                    \
            const __m512 t2_ = pad_left ? odd_ : _mm512_maskz_permutexvar_ps(moved, shift, even_);        \
            if (kh) {                                                                                       \
                acc[k] = _mm512_fmadd_ps(t0_, wv[k][3 * (kh)], acc[k]);                                    \
                acc[k] = _mm512_fmadd_ps(t1_, wv[k][3 * (kh) + 1], acc[k]);                                \
                acc[k] = _mm512_fmadd_ps(t2_, wv[k][3 * (kh) + 2], acc[k]);                                \
            }                                                                                               \
            if ((kh) != 1) {                                                                                \
                next[k] = _mm512_fmadd_ps(t0_, wv[k][0], _mm512_setzero_ps());                             \
                next[k] = _mm512_fmadd_ps(t1_, wv[k][1], next[k]);                                         \
                next[k] = _mm512_fmadd_ps(t2_, wv[k][2], next[k]);                                         \
            }                                                                                               \
        }                                                                                                   \
    } while (0)
    /* the planes' pointers in locals: read from x and out at every row, they took a tenth of its instructions */
    const float *xs[4];
    float *ys[4];
    for (int j = 0; j < 2 * P; j++) {
        xs[j] = x[j];
        ys[j] = out[j] + oh0 * out_w;
    }
    __m512 acc[2], next[2];
    for (int k = 0; k < P; k++) acc[k] = next[k] = _mm512_setzero_ps();
    const ptrdiff_t top = PAIR_ROW(2 * (ptrdiff_t)oh0 - (ptrdiff_t)pad_top);
    if (top >= 0) PAIR_TAPS(top, 0);
    for (size_t oh = oh0; oh < oh1; oh++) {
        const ptrdiff_t ih = 2 * (ptrdiff_t)oh - (ptrdiff_t)pad_top;
        const ptrdiff_t middle = PAIR_ROW(ih + 1), bottom = PAIR_ROW(ih + 2);
        for (int k = 0; k < P; k++) acc[k] = next[k];
        if (middle >= 0) PAIR_TAPS(middle, 1);
        if (bottom >= 0) PAIR_TAPS(bottom, 2);
        else
            for (int k = 0; k < P; k++) next[k] = _mm512_setzero_ps();
        for (int k = 0; k < P; k++) {
            __m512 v = _mm512_mul_ps(acc[k], cs[k]);
            if (bias) v = _mm512_add_ps(v, b[k]);
            _mm512_mask_storeu_ps(ys[2 * k], stored, v);
            _mm512_mask_storeu_ps(ys[2 * k + 1], stored, _mm512_shuffle_f32x4(v, v, 0x4e)); /* upper half */
        }
        for (int j = 0; j < 2 * P; j++) ys[j] += out_w;
    }
#undef PAIR_ROW
#undef PAIR_TAPS
#undef PAIR_ROW_TAPS
}

static void depthwise_pairs_stride2_avx512(size_t count, float *const *out, size_t out_w, size_t oh0, size_t oh1,
                                           const float *const *x, const float *scale, const float *inverse,
                                           size_t ih0, size_t ih1, size_t in_w, size_t pad_top, size_t pad_left,
                                           const float *w, size_t w_stride, const float *channel_scale,
                                           const float *bias) {
    /* inlined for each count, pad_left and kind of activations */
#define PAIRS(P, pl, sc, inv) \
    pairs_stride2(P, out, out_w, oh0, oh1, x, sc, inv, ih0, ih1, in_w, pad_top, pl, w, w_stride, channel_scale, bias)
#define PAIRS_PAD(P, sc, inv)                  \
    do {                                       \
        if (pad_left) PAIRS(P, 1, sc, inv);    \
        else PAIRS(P, 0, sc, inv);             \
    } while (0)
#define PAIRS_ACT(P)                           \
    do {                                       \
        if (scale) PAIRS_PAD(P, scale, inverse); \
        else PAIRS_PAD(P, NULL, NULL);         \
    } while (0)
    if (count == 4) PAIRS_ACT(2);
    else PAIRS_ACT(1);
#undef PAIRS_ACT
#undef PAIRS_PAD
#undef PAIRS
}

/* The lanes of a 16-output strip of a stride-1 row (tconv_rows.h
 * direct_f32[.][0]), the same for every row: tap kw reads columns at + kw on. */
struct stride1_strip {
    ptrdiff_t at;           /* ow0 - pad_left */
    __mmask16 load[5], out; /* each tap's lanes inside the row, the outputs' */
};

/* G strips side by side down the input rows of a K x K kernel: each row is
 * K loads a strip (dequantized with scale), and each load serves K output
 * rows, kh = d of output ih + pad_top - d in sums[.][d], which move up a
 * place a row (an output's taps still add in (kh, kw) order: its kh = 0 row
 * comes first). An output's sum is a chain of K * K dependent FMAs, K of
 * them in flight a strip: one strip at a time, 3x3 ran at the FMAs' latency
 * (G strips: G times the chains). */
static inline __attribute__((always_inline)) void stride1_strip_rows(int K, int G, float *out, size_t out_w,
                                                                     size_t ow0, size_t oh0, size_t oh1,
                                                                     const float *x, const float *scale,
                                                                     const float *inverse, ptrdiff_t ih0,
                                                                     ptrdiff_t ih1, size_t in_w, ptrdiff_t pad_top,
                                                                     const struct stride1_strip *s, const __m512 *wv,
                                                                     const float *w, __m512 channel_scale,
                                                                     const float *bias, int inside) {
    __m512 sums[4][5];
    for (int g = 0; g < G; g++)
        for (int d = 0; d < K; d++) sums[g][d] = _mm512_setzero_ps();
    for (ptrdiff_t ih = (ptrdiff_t)oh0 - pad_top; ih < (ptrdiff_t)oh1 - pad_top + K - 1; ih++) {
        if (ih >= ih0 && ih < ih1) {
            const ptrdiff_t row = (ih - ih0) * (ptrdiff_t)in_w; /* + at: K / 2 below 0 at most, masked lanes */
            __m512 t[4][5];
            for (int g = 0; g < G; g++)
                for (int k = 0; k < K; k++) {
                    const ptrdiff_t i = row + s[g].at + k;
                    t[g][k] = load_dequantized(x + i, scale ? scale + i : NULL, scale ? inverse + i : NULL,
                                               inside ? 0xffff : s[g].load[k]);
                }
            for (int d = K - 1; d >= 0; d--)
                for (int k = 0; k < K; k++)
                    for (int g = 0; g < G; g++)
                        sums[g][d] = _mm512_fmadd_ps(t[g][k], K == 5 ? _mm512_set1_ps(w[d * K + k]) : wv[d * K + k],
                                                     sums[g][d]);
        }
        const ptrdiff_t o = ih + pad_top - (K - 1);
        if (o >= (ptrdiff_t)oh0) {
            for (int g = 0; g < G; g++) {
                __m512 v = _mm512_mul_ps(sums[g][K - 1], channel_scale);
                if (bias) v = _mm512_add_ps(v, _mm512_set1_ps(*bias));
                float *y = out + (size_t)o * out_w + ow0 + 16 * (size_t)g;
                if (inside) _mm512_storeu_ps(y, v);
                else _mm512_mask_storeu_ps(y, s[g].out, v);
            }
        }
        for (int g = 0; g < G; g++) {
            for (int d = K - 1; d > 0; d--) sums[g][d] = sums[g][d - 1];
            sums[g][0] = _mm512_setzero_ps();
        }
    }
}

/* act_quant 3 at stride 1: G side-by-side strips whose input row is
 * dequantized once, as G center vectors (columns ow0 .. ow0 + 16 G) and the
 * vectors just left and right of them; tap kw is then a center vector moved
 * d = kw - pad_left lanes along its neighbour (valignd). stride1_strip_rows
 * dequantized each of its K loads, every value K times. */
struct dequant_strips {
    __mmask16 center[4], left, right, out[4]; /* lanes inside the row; the outputs' */
};

static inline __attribute__((always_inline)) __m512 moved_lanes(__m512 before, __m512 center, __m512 after, int d) {
    switch (d) { /* valignd takes its shift as an immediate */
    case -2: return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(center), _mm512_castps_si512(before), 14));
    case -1: return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(center), _mm512_castps_si512(before), 15));
    case 1: return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(after), _mm512_castps_si512(center), 1));
    case 2: return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(after), _mm512_castps_si512(center), 2));
    case 3: return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(after), _mm512_castps_si512(center), 3));
    case 4: return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(after), _mm512_castps_si512(center), 4));
    default: return center; /* d = 0 (pad_left <= 2 and K <= 5 keep d in [-2, 4]) */
    }
}

static inline __attribute__((always_inline)) void stride1_dequant_rows(int K, int G, int pad_left, float *out,
                                                                       size_t out_w, size_t ow0, size_t oh0,
                                                                       size_t oh1, const float *x, const float *scale,
                                                                       const float *inverse, ptrdiff_t ih0,
                                                                       ptrdiff_t ih1, size_t in_w, ptrdiff_t pad_top,
                                                                       const struct dequant_strips *s, const __m512 *wv,
                                                                       const float *w, __m512 channel_scale,
                                                                       const float *bias) {
    __m512 sums[4][5];
    for (int g = 0; g < G; g++)
        for (int d = 0; d < K; d++) sums[g][d] = _mm512_setzero_ps();
    for (ptrdiff_t ih = (ptrdiff_t)oh0 - pad_top; ih < (ptrdiff_t)oh1 - pad_top + K - 1; ih++) {
        if (ih >= ih0 && ih < ih1) {
            const ptrdiff_t row = (ih - ih0) * (ptrdiff_t)in_w + (ptrdiff_t)ow0;
            __m512 c[6]; /* the left vector, G centers, the right vector */
#define DEQUANTIZED(i, lanes) load_dequantized(x + (i), scale + (i), inverse + (i), lanes)
            c[0] = DEQUANTIZED(row - 16, s->left);
            for (int g = 0; g < G; g++) c[g + 1] = DEQUANTIZED(row + 16 * g, s->center[g]);
            c[G + 1] = DEQUANTIZED(row + 16 * G, s->right);
#undef DEQUANTIZED
            for (int k = 0; k < K; k++)
                for (int g = 0; g < G; g++) {
                    const __m512 t = moved_lanes(c[g], c[g + 1], c[g + 2], k - pad_left);
                    for (int d = K - 1; d >= 0; d--)
                        sums[g][d] = _mm512_fmadd_ps(t, K == 5 ? _mm512_set1_ps(w[d * K + k]) : wv[d * K + k],
                                                     sums[g][d]);
                }
        }
        const ptrdiff_t o = ih + pad_top - (K - 1);
        if (o >= (ptrdiff_t)oh0)
            for (int g = 0; g < G; g++) {
                __m512 v = _mm512_mul_ps(sums[g][K - 1], channel_scale);
                if (bias) v = _mm512_add_ps(v, _mm512_set1_ps(*bias));
                _mm512_mask_storeu_ps(out + (size_t)o * out_w + ow0 + 16 * (size_t)g, s->out[g], v);
            }
        for (int g = 0; g < G; g++) {
            for (int d = K - 1; d > 0; d--) sums[g][d] = sums[g][d - 1];
            sums[g][0] = _mm512_setzero_ps();
        }
    }
}

/* The lanes of columns [from, from + 16) inside [0, width). */
static inline __mmask16 lanes_inside(ptrdiff_t from, ptrdiff_t width) {
    const ptrdiff_t lo = from < 0 ? -from : 0, hi = OBX_MIN(width - from, (ptrdiff_t)16);
    return hi <= lo ? 0 : (__mmask16)(first_lanes((size_t)hi) & ~first_lanes((size_t)lo));
}

static inline __attribute__((always_inline)) void depthwise_stride1_dequantized(
    int K, int pad_left, float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, const float *scale,
    const float *inverse, size_t ih0, size_t ih1, size_t in_w, size_t pad_top, const float *w, float channel_scale,
    const float *bias) {
    const int G = 2;
    const __m512 cs = _mm512_set1_ps(channel_scale);
    __m512 wv[9];
    if (K == 3)
        for (int t = 0; t < 9; t++) wv[t] = _mm512_set1_ps(w[t]);
    const ptrdiff_t width = (ptrdiff_t)in_w;
    const size_t strips = OBX_DIV_UP(out_w, 16);
    for (size_t first = 0; first < strips;) {
        const int group = strips - first >= (size_t)G ? G : 1;
        const size_t ow0 = 16 * first;
        struct dequant_strips ds;
        for (int g = 0; g < group; g++) {
            ds.center[g] = lanes_inside((ptrdiff_t)(ow0 + 16 * (size_t)g), width);
            ds.out[g] = first_lanes(out_w - ow0 - 16 * (size_t)g);
        }
        ds.left = lanes_inside((ptrdiff_t)ow0 - 16, width);
        ds.right = lanes_inside((ptrdiff_t)(ow0 + 16 * (size_t)group), width);
        if (group == G)
            stride1_dequant_rows(K, G, pad_left, out, out_w, ow0, oh0, oh1, x, scale, inverse, (ptrdiff_t)ih0,
                                 (ptrdiff_t)ih1, in_w, (ptrdiff_t)pad_top, &ds, wv, w, cs, bias);
        else
            stride1_dequant_rows(K, 1, pad_left, out, out_w, ow0, oh0, oh1, x, scale, inverse, (ptrdiff_t)ih0,
                                 (ptrdiff_t)ih1, in_w, (ptrdiff_t)pad_top, &ds, wv, w, cs, bias);
        first += (size_t)group;
    }
}

/* tconv_rows.h direct_f32[.][0], strips of 16 outputs down the rows, four
 * (3x3) or two (5x5) at a time, each input row loaded once a strip (the
 * flat planes staged a padded copy of each plane and loaded every row three
 * times; one thread, against this kernel in a loop: 144 @56x56 122 us with
 * three loads an output row, 60 us so). */
static inline __attribute__((always_inline)) void depthwise_stride1_avx512(
    int K, int dequantize, float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, const float *scale,
    const float *inverse, size_t ih0, size_t ih1, size_t in_w, size_t pad_top, size_t pad_left, const float *w,
    float channel_scale, const float *bias) {
    /* Float: four strips for 3x3, two for 5x5, whose 25 weights are then broadcast at each FMA rather than held
     * in registers (one thread, 5x5 speed-ups over fp32 Conv, one strip / two held / two broadcast / four
     * broadcast: 256 @44x44 1.11 / 1.18 / 1.32 / 1.07, 128 @88x88 0.95-1.03 / 1.03 / 1.37 / 1.10; 3x3 broadcast
     * too: 144 @56x56 1.87 against 1.50 held, but 576 @14x14 1.28 against 1.52). act_quant 3: one strip, as
     * the dequantization's loads spill more (144 @56x56: one strip 140 us, two 176, four 172). */
    const int G = K == 3 && !dequantize ? 4 : K == 5 && !dequantize ? 2 : 1;
    const __m512 cs = _mm512_set1_ps(channel_scale);
    __m512 wv[9];
    if (K == 3)
        for (int t = 0; t < 9; t++) wv[t] = _mm512_set1_ps(w[t]);
    const ptrdiff_t width = (ptrdiff_t)in_w;
    const size_t strips = OBX_DIV_UP(out_w, 16);
    for (size_t first = 0; first < strips;) {
        const int group = strips - first >= (size_t)G ? G : 1;
        struct stride1_strip strip[4];
        int inside = 1;
        for (int g = 0; g < group; g++) {
            const size_t ow0 = 16 * (first + (size_t)g);
            strip[g].at = (ptrdiff_t)ow0 - (ptrdiff_t)pad_left;
            for (int k = 0; k < K; k++) strip[g].load[k] = lanes_inside(strip[g].at + k, width);
            strip[g].out = first_lanes(out_w - ow0);
            inside &= strip[g].at >= 0 && strip[g].at + K - 1 + 16 <= width && ow0 + 16 <= out_w;
        }
#define STRIDE1_STRIPS(n, sc, inv, in)                                                                     \
    stride1_strip_rows(K, n, out, out_w, 16 * first, oh0, oh1, x, sc, inv, (ptrdiff_t)ih0, (ptrdiff_t)ih1,  \
                       in_w, (ptrdiff_t)pad_top, strip, wv, w, cs, bias, in)
#define STRIDE1_GROUP(sc, inv)                            \
    do {                                                  \
        if (group == G) {                                 \
            if (inside) STRIDE1_STRIPS(G, sc, inv, 1);    \
            else STRIDE1_STRIPS(G, sc, inv, 0);           \
        } else {                                          \
            if (inside) STRIDE1_STRIPS(1, sc, inv, 1);    \
            else STRIDE1_STRIPS(1, sc, inv, 0);           \
        }                                                 \
    } while (0)
        if (dequantize) STRIDE1_GROUP(scale, inverse);
        else STRIDE1_GROUP(NULL, NULL);
#undef STRIDE1_GROUP
#undef STRIDE1_STRIPS
        first += (size_t)group;
    }
}

/* One function per kernel size and activation kind, each with its four
 * strip loops inlined (all eight in one function ran 576 @14x14 1.3x
 * slower). */
#define STRIDE1_ENTRY(name, k, dequantized)                                                                    \
    static __attribute__((noinline)) void name(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, \
                                               const float *scale, const float *inverse, size_t ih0, size_t ih1, \
                                               size_t in_w, size_t pad_top, size_t pad_left, const float *w,     \
                                               float channel_scale, const float *bias) {                         \
        depthwise_stride1_avx512(k, dequantized, out, out_w, oh0, oh1, x, scale, inverse, ih0, ih1, in_w,       \
                                 pad_top, pad_left, w, channel_scale, bias);                                   \
    }
STRIDE1_ENTRY(depthwise_3x3_stride1_f32, 3, 0)
STRIDE1_ENTRY(depthwise_5x5_stride1_f32, 5, 0)
#undef STRIDE1_ENTRY

/* act_quant 3: one function per kernel size, pad_left a constant in each of its loops (the lane shifts are
 * immediates). Rows of one strip keep the K dequantizing loads (the left, center and right vectors are as
 * many; 576 @14x14: 43 us against 45). One thread, before / after: 144 @56x56 147 / 125 us, 192 @28x28 48 /
 * 41, 5x5 128 @44x44 157 / 112. */
#define DEQUANTIZED_ENTRY(name, k)                                                                             \
    static __attribute__((noinline)) void name(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, \
                                               const float *scale, const float *inverse, size_t ih0, size_t ih1, \
                                               size_t in_w, size_t pad_top, size_t pad_left, const float *w,     \
                                               float channel_scale, const float *bias) {                         \
        if (out_w <= 16) {                                                                                     \
            depthwise_stride1_avx512(k, 1, out, out_w, oh0, oh1, x, scale, inverse, ih0, ih1, in_w, pad_top,    \
                                     pad_left, w, channel_scale, bias);                                        \
            return;                                                                                            \
        }                                                                                                      \
        switch (pad_left) {                                                                                    \
        case 0:                                                                                                \
            depthwise_stride1_dequantized(k, 0, out, out_w, oh0, oh1, x, scale, inverse, ih0, ih1, in_w,        \
                                          pad_top, w, channel_scale, bias);                                    \
            break;                                                                                             \
        case 1:                                                                                                \
            depthwise_stride1_dequantized(k, 1, out, out_w, oh0, oh1, x, scale, inverse, ih0, ih1, in_w,        \
                                          pad_top, w, channel_scale, bias);                                    \
            break;                                                                                             \
        default: /* 2 (5x5 only: the path takes pad_left <= kernel / 2) */                                     \
            depthwise_stride1_dequantized(k, 2, out, out_w, oh0, oh1, x, scale, inverse, ih0, ih1, in_w,        \
                                          pad_top, w, channel_scale, bias);                                    \
        }                                                                                                      \
    }
DEQUANTIZED_ENTRY(depthwise_3x3_stride1_dequantized, 3)
DEQUANTIZED_ENTRY(depthwise_5x5_stride1_dequantized, 5)
#undef DEQUANTIZED_ENTRY

/* The table's entries: the float or the dequantizing function by scale. */
#define STRIDE1_DISPATCH(name, f32, dequantized)                                                               \
    static void name(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, const float *scale,      \
                     const float *inverse, size_t ih0, size_t ih1, size_t in_w, size_t pad_top, size_t pad_left, \
                     const float *w, float channel_scale, const float *bias) {                                 \
        (scale ? dequantized : f32)(out, out_w, oh0, oh1, x, scale, inverse, ih0, ih1, in_w, pad_top, pad_left, \
                                    w, channel_scale, bias);                                                   \
    }
STRIDE1_DISPATCH(depthwise_3x3_stride1_avx512, depthwise_3x3_stride1_f32, depthwise_3x3_stride1_dequantized)
STRIDE1_DISPATCH(depthwise_5x5_stride1_avx512, depthwise_5x5_stride1_f32, depthwise_5x5_stride1_dequantized)
#undef STRIDE1_DISPATCH

/* A row's even columns to even (n_even of them) and its odd ones to odd,
 * from `sorted`, whose lanes 0-7 hold the even columns and 8-15 the odd. */
static inline void store_sorted_row(float *even, size_t n_even, float *odd, size_t n_odd, __m512 sorted) {
    _mm512_mask_storeu_ps(even, first_lanes(n_even), sorted);
    _mm256_mask_storeu_ps(odd, (__mmask8)first_lanes(n_odd), _mm512_extractf32x8_ps(sorted, 1));
}

/* Rows wider than 16: whole steps of 32 columns (16 even, 16 odd) with
 * plain loads and stores, then one masked step whose masks are the same
 * every row. One step that tested and masked every vector ran at half this
 * speed (96 x 56x56 at stride 2: 37 against 22 us a call, float; 51 against
 * 39 us dequantizing); it was faster only where the compiler had the layout
 * as constants. Inlined twice, with and without scales, so neither tests
 * them per vector. */
static inline __attribute__((always_inline)) void stage_wide_rows(float *dst, const float *src,
                                                                  const struct tconv_phase_layout *l,
                                                                  const float *scale, const float *inverse) {
    const __m512i even_lanes = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd_lanes = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const struct tconv_phase_steps p = tconv_phase_steps(l, 16);
    const size_t steps = p.steps, tail_c = p.tail_c, tail_k = p.tail_k;
    const __mmask16 lo_lanes = first_lanes(p.left), hi_lanes = first_lanes(p.left > 16 ? p.left - 16 : 0);
    const __mmask16 even_mask = first_lanes(l->n_even - tail_k), odd_mask = first_lanes(l->n_odd - tail_k);
    for (size_t r = 0; r < l->rows; r++) {
        float *row = tconv_phase_row(dst, l, r), *even = row + l->even_at, *odd = row + l->odd_at;
        const size_t at = r * l->in_w;
        for (size_t i = 0; i < steps; i++) {
            const size_t x0 = at + 32 * i, x1 = x0 + 16;
            const __m512 lo = load_dequantized(src + x0, scale ? scale + x0 : NULL, scale ? inverse + x0 : NULL, 0xffff);
            const __m512 hi = load_dequantized(src + x1, scale ? scale + x1 : NULL, scale ? inverse + x1 : NULL, 0xffff);
            _mm512_storeu_ps(even + 16 * i, _mm512_permutex2var_ps(lo, even_lanes, hi));
            _mm512_storeu_ps(odd + 16 * i, _mm512_permutex2var_ps(lo, odd_lanes, hi));
        }
        if (!p.tail) continue;
        const size_t x0 = at + tail_c, x1 = x0 + 16;
        const __m512 lo = load_dequantized(src + x0, scale ? scale + x0 : NULL, scale ? inverse + x0 : NULL, lo_lanes);
        const __m512 hi = load_dequantized(src + x1, scale ? scale + x1 : NULL, scale ? inverse + x1 : NULL, hi_lanes);
        _mm512_mask_storeu_ps(even + tail_k, even_mask, _mm512_permutex2var_ps(lo, even_lanes, hi));
        _mm512_mask_storeu_ps(odd + tail_k, odd_mask, _mm512_permutex2var_ps(lo, odd_lanes, hi));
    }
}

/* tconv_rows.h stage_phases. Rows up to 16 wide go two at a time: they are
 * adjacent in the plane, so two vector loads (and the scales') hold both, and
 * one two-source permute per row sorts its columns into even and odd halves
 * for two masked stores each. Wider rows go 32 columns a step, two permutes
 * split them into 16 even and 16 odd columns (stage_wide_rows). The generic form's short rows
 * went element by element (a 14-wide row has no full block), and with its
 * per-row calls the phase path took 3x the channel blocks' time on 512
 * @14x14; a row a step here still took 2x. */
static void stage_phases_avx512(float *dst, const float *src, const struct tconv_phase_layout *layout,
                                const float *scale, const float *inverse) {
    const struct tconv_phase_layout l = *layout; /* in registers: the stores could alias it */
    const size_t w = l.in_w;
    if (w <= 16) {
        /* row r's columns (from 0) and row r + 1's (from w) as even | odd halves */
        const __m512i sort0 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
        const __m512i sort1 = _mm512_min_epi32(_mm512_add_epi32(sort0, _mm512_set1_epi32((int)w)), _mm512_set1_epi32(31));
        for (size_t r = 0; r < l.rows; r += 2) {
            const size_t at = r * w, values = OBX_MIN((size_t)2, l.rows - r) * w;
            const __mmask16 lo_lanes = first_lanes(values), hi_lanes = first_lanes(values > 16 ? values - 16 : 0);
            const __m512 lo = load_dequantized(src + at, scale ? scale + at : NULL, inverse ? inverse + at : NULL,
                                               lo_lanes);
            const __m512 hi = load_dequantized(src + at + 16, scale ? scale + at + 16 : NULL,
                                               inverse ? inverse + at + 16 : NULL, hi_lanes);
            for (size_t i = 0; i < 2 && r + i < l.rows; i++) {
                float *row = tconv_phase_row(dst, &l, r + i);
                store_sorted_row(row + l.even_at, l.n_even, row + l.odd_at, l.n_odd,
                                 _mm512_permutex2var_ps(lo, i ? sort1 : sort0, hi));
            }
        }
        return;
    }
    if (scale) stage_wide_rows(dst, src, &l, scale, inverse);
    else stage_wide_rows(dst, src, &l, NULL, NULL);
}

/* A depthwise tap as one FMA (tconv_rows_body.h says why that is exact). */
#define TCONV_TAPN(acc, x, w) ((tconv_fn)_mm512_fmadd_ps((__m512)(x), _mm512_set1_ps(w), (__m512)(acc)))
#define TCONV_TAPNV(acc, x, wv) ((tconv_fn)_mm512_fmadd_ps((__m512)(x), (__m512)(wv), (__m512)(acc)))
#define TCONV_TAP16V TCONV_TAPNV
#define TCONV_STORE_FIRST(dst, v, n) _mm512_mask_storeu_ps((dst), first_lanes(n), (__m512)(v))

/* a rounding conversion, max and a clamp in one instruction each (the generic forms take two
 * to four). A NaN lane's clamp may differ: its window's output is NaN. */
#define TCONV_ROUND_I16(v) \
    ((tconv_i16)_mm512_cvt_roundps_epi32((__m512)(v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
#define TCONV_MAX_I16(a, b) ((tconv_i16)_mm512_max_epi32((__m512i)(a), (__m512i)(b)))
#define TCONV_CLAMP16(a, lo, hi) \
    ((tconv_f16)_mm512_min_ps(_mm512_max_ps((__m512)(a), _mm512_set1_ps(lo)), _mm512_set1_ps(hi)))

/* ---- int8 activations per window on the direct planes (tconv_rows.h direct_i8) ---- */

/* The constants of one channel's windows: the codes (as floats), the weight scale, the static scale (0:
 * each window its own), the bias. */
struct window_i8 {
    __m512 w[9];
    __m512 weight_scale, static_scale, bias;
    int fixed, has_bias;
};

/* absmax bits of one input row's three taps (window_scales' ordering: NaN above Inf above every finite
 * value). */
static inline __m512i row_absmax(__m512 t0, __m512 t1, __m512 t2) {
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
    const __m512i a = _mm512_and_si512(_mm512_castps_si512(t0), magnitude);
    const __m512i b = _mm512_and_si512(_mm512_castps_si512(t1), magnitude);
    const __m512i c = _mm512_and_si512(_mm512_castps_si512(t2), magnitude);
    return _mm512_max_epi32(_mm512_max_epi32(a, b), c);
}

/* WINDOW_SCALE16 of 16 windows' absmax bits: s (the static scale where
 * fixed) and the windows holding NaN or Inf. */
static inline __m512 window_scale(const struct window_i8 *k, __m512i amax, __mmask16 *bad) {
    const __m512i floor_bits = _mm512_set1_epi32(0x3727c5ac); /* 1e-5f */
    *bad = _mm512_cmpge_epi32_mask(amax, _mm512_set1_epi32(0x7f800000));
    if (k->fixed) return k->static_scale;
    const __m512i floored = _mm512_max_epi32(_mm512_mask_mov_epi32(amax, *bad, floor_bits), floor_bits);
    return _mm512_mul_ps(_mm512_set1_ps(127.0f), _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_castsi512_ps(floored)));
}

/* 16 windows' outputs from their nine taps (t[3 kh + kw], padding lanes 0)
 * and scale: each tap rint(x * s) (clamped with a static scale), their sum
 * by the codes (exact: integers below 2^24, in any order, so three partial
 * sums), then WINDOW_OUTPUT16. Skipping the taps coded 0 by a branch a tap
 * ran slower on real weights (576 @14x14: 75 against 56 us): the branches
 * change from channel to channel. */
static inline __attribute__((always_inline)) __m512 window_output(const struct window_i8 *k, const __m512 *t,
                                                                  __m512 s, __mmask16 bad) {
    __m512 sum[3];
    for (int r = 0; r < 3; r++) {
        sum[r] = _mm512_setzero_ps();
        for (int c = 0; c < 3; c++) {
            __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(t[3 * r + c], s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            if (k->fixed) q = _mm512_min_ps(_mm512_max_ps(q, _mm512_set1_ps(-128.0f)), _mm512_set1_ps(127.0f));
            sum[r] = _mm512_fmadd_ps(q, k->w[3 * r + c], sum[r]);
        }
    }
    __m512 y = _mm512_div_ps(_mm512_mul_ps(_mm512_add_ps(_mm512_add_ps(sum[0], sum[1]), sum[2]), k->weight_scale), s);
    if (k->has_bias) y = _mm512_add_ps(y, k->bias);
    return _mm512_castsi512_ps(_mm512_mask_or_epi32(_mm512_castps_si512(y), bad, _mm512_castps_si512(y),
                                                    _mm512_set1_epi32(0x7fc00000)));
}

static inline struct window_i8 window_constants(const float *w, float static_scale, float weight_scale,
                                                const float *bias) {
    struct window_i8 k;
    for (int t = 0; t < 9; t++) k.w[t] = _mm512_set1_ps(w[t]);
    k.weight_scale = _mm512_set1_ps(weight_scale);
    k.fixed = static_scale > 0.0f;
    k.static_scale = _mm512_set1_ps(static_scale);
    k.has_bias = bias != NULL;
    k.bias = _mm512_set1_ps(bias ? *bias : 0.0f);
    return k;
}

/* The row loop of the int8-window kernels, output rows [oh0, oh1) whose
 * first reads input row `first`: ROW(ih, slot) puts input row ih's three
 * taps in t[3 slot ..] and their absmax in rmax[slot] (zeros in the
 * padding), STORE(oh, y) writes output row oh. An output row's last input
 * rows are the next one's first (two at stride 1, one at stride 2), so
 * their taps and absmaxes stay; the next row's new input rows and its scale
 * (its division) come before this row's taps are quantized: a row is a
 * chain of two divisions and the quantization between them, and one row at
 * a time in program order it ran at that chain's latency (the stride-1
 * kernel alone, 144 @56x56: 202 -> 173 us). */
#define I8_WINDOW_ROWS(stride, kk, ROW, STORE)                                                               \
    do {                                                                                                     \
        __m512 t[9 + 3 * (stride)];                                                                          \
        __m512i rmax[3 + (stride)];                                                                          \
        ROW(first, 0);                                                                                       \
        ROW(first + 1, 1);                                                                                   \
        ROW(first + 2, 2);                                                                                   \
        __mmask16 bad;                                                                                       \
        __m512 s = window_scale(&(kk), _mm512_max_epi32(_mm512_max_epi32(rmax[0], rmax[1]), rmax[2]), &bad); \
        ptrdiff_t next_ = first + 3; /* the next output row's first new input row */                         \
        for (size_t oh = oh0;; oh++, next_ += (stride)) {                                                    \
            const int more = oh + 1 < oh1;                                                                   \
            __mmask16 bad_next = 0;                                                                          \
            __m512 s_next = s;                                                                               \
            if (more) {                                                                                      \
                ROW(next_, 3); /* unrolled by hand: a loop left the slots indexed at run time, in memory */    \
                if ((stride) == 2) ROW(next_ + 1, (stride) + 2);                                             \
                s_next = window_scale(                                                                       \
                    &(kk), _mm512_max_epi32(_mm512_max_epi32(rmax[stride], rmax[(stride) + 1]), rmax[(stride) + 2]), \
                    &bad_next);                                                                              \
            }                                                                                                \
            const __m512 y_ = window_output(&(kk), t, s, bad);                                               \
            STORE(oh, y_);                                                                                   \
            if (!more) break;                                                                                \
            for (int i_ = 0; i_ < 9; i_++) t[i_] = t[i_ + 3 * (stride)];                                     \
            for (int r_ = 0; r_ < 3; r_++) rmax[r_] = rmax[r_ + (stride)];                                   \
            s = s_next;                                                                                      \
            bad = bad_next;                                                                                  \
        }                                                                                                    \
    } while (0)

/* GCC cannot see that the next row's slots are written before they are read
 * (only when there is a next row); zeroing them first made the stride-1
 * loop 15% slower. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
/* One strip of a 3x3 stride-1 plane down rows [oh0, oh1): each input row
 * is three loads (tap kw at columns at + kw on, masked at the row's ends
 * unless inside) and their absmax. Two or more strips side by side,
 * reloading their taps, ran slower. */
static inline __attribute__((always_inline)) void i8_stride1_strip(const struct window_i8 *k, int fixed, int has_bias,
                                                                   float *out, size_t out_w, size_t ow0, size_t oh0,
                                                                   size_t oh1, const float *x, ptrdiff_t ih0,
                                                                   ptrdiff_t ih1, size_t in_w, ptrdiff_t pad_top,
                                                                   ptrdiff_t at, const __mmask16 *load,
                                                                   __mmask16 stored, int inside) {
    if (oh0 >= oh1) return;
    struct window_i8 kk = *k;
    kk.fixed = fixed;
    kk.has_bias = has_bias;
#define I8_ROW(ih, slot)                                                                                  \
    do {                                                                                                  \
        if ((ih) >= ih0 && (ih) < ih1) {                                                                  \
            const float *row_ = x + ((ih) - ih0) * (ptrdiff_t)in_w + at;                                  \
            for (int c = 0; c < 3; c++)                                                                   \
                t[3 * (slot) + c] = inside ? _mm512_loadu_ps(row_ + c) : _mm512_maskz_loadu_ps(load[c], row_ + c); \
            rmax[slot] = row_absmax(t[3 * (slot)], t[3 * (slot) + 1], t[3 * (slot) + 2]);                  \
        } else {                                                                                          \
            for (int c = 0; c < 3; c++) t[3 * (slot) + c] = _mm512_setzero_ps();                          \
            rmax[slot] = _mm512_setzero_si512();                                                          \
        }                                                                                                 \
    } while (0)
#define I8_STORE(oh, y)                                                              \
    do {                                                                             \
        if (inside) _mm512_storeu_ps(out + (oh) * out_w + ow0, y);                   \
        else _mm512_mask_storeu_ps(out + (oh) * out_w + ow0, stored, y);             \
    } while (0)
    const ptrdiff_t first = (ptrdiff_t)oh0 - pad_top;
    I8_WINDOW_ROWS(1, kk, I8_ROW, I8_STORE);
#undef I8_ROW
#undef I8_STORE
}

/* tconv_rows.h direct_i8[0]: 3x3 at stride 1, strips of 16 outputs down the rows. */
static void depthwise_i8_stride1_avx512(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, size_t ih0,
                                        size_t ih1, size_t in_w, size_t pad_top, size_t pad_left, const float *w,
                                        float static_scale, float weight_scale, const float *bias) {
    const struct window_i8 k = window_constants(w, static_scale, weight_scale, bias);
    const ptrdiff_t width = (ptrdiff_t)in_w;
    for (size_t ow0 = 0; ow0 < out_w; ow0 += 16) {
        const ptrdiff_t at = (ptrdiff_t)ow0 - (ptrdiff_t)pad_left;
        __mmask16 load[3];
        for (int c = 0; c < 3; c++) load[c] = lanes_inside(at + c, width);
        const int inside = at >= 0 && at + 2 + 16 <= width && ow0 + 16 <= out_w;
        const __mmask16 stored = first_lanes(out_w - ow0);
#define I8_STRIP(fx, in)                                                                                        \
    i8_stride1_strip(&k, fx, bias != NULL, out, out_w, ow0, oh0, oh1, x, (ptrdiff_t)ih0, (ptrdiff_t)ih1, in_w,   \
                     (ptrdiff_t)pad_top, at, load, stored, in)
        /* inlined for a window or static scale and plain or masked loads; the bias is rarely absent */
        if (k.fixed) {
            if (inside) I8_STRIP(1, 1);
            else I8_STRIP(1, 0);
        } else {
            if (inside) I8_STRIP(0, 1);
            else I8_STRIP(0, 0);
        }
#undef I8_STRIP
    }
}

/* One input row's three taps for a stride-2 strip (a group of one): its
 * columns split, the third set moved a lane with the edge column. */
static inline __attribute__((always_inline)) void i8_stride2_taps(int pad_left, int ragged, const float *row,
                                                                  const struct stride2_group *sg, __m512 *t) {
    __m512 even, odd;
    stride2_split(1, ragged, row, NULL, NULL, sg, &even, &odd);
    const __m512 edge = stride2_edge(row, NULL, NULL, sg);
    if (pad_left) {
        t[0] = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(odd), _mm512_castps_si512(edge), 15));
        t[1] = even;
        t[2] = odd;
    } else {
        t[0] = even;
        t[1] = odd;
        t[2] = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(edge), _mm512_castps_si512(even), 1));
    }
}

/* One strip of a 3x3 stride-2 plane down rows [oh0, oh1): each input row
 * split into its three taps (i8_stride2_taps) and their absmax. */
static inline __attribute__((always_inline)) void i8_stride2_strip(const struct window_i8 *k, int fixed, int pad_left,
                                                                   int ragged, float *out, size_t out_w, size_t ow0,
                                                                   size_t oh0, size_t oh1, const float *x,
                                                                   ptrdiff_t ih0, ptrdiff_t ih1, size_t in_w,
                                                                   ptrdiff_t pad_top, const struct stride2_group *sg) {
    if (oh0 >= oh1) return;
    struct window_i8 kk = *k;
    kk.fixed = fixed;
#define I8_ROW2(ih, slot)                                                                                 \
    do {                                                                                                  \
        if ((ih) >= ih0 && (ih) < ih1) {                                                                  \
            i8_stride2_taps(pad_left, ragged, x + ((ih) - ih0) * (ptrdiff_t)in_w + sg->c, sg, t + 3 * (slot)); \
            rmax[slot] = row_absmax(t[3 * (slot)], t[3 * (slot) + 1], t[3 * (slot) + 2]);                  \
        } else {                                                                                          \
            for (int c = 0; c < 3; c++) t[3 * (slot) + c] = _mm512_setzero_ps();                          \
            rmax[slot] = _mm512_setzero_si512();                                                          \
        }                                                                                                 \
    } while (0)
#define I8_STORE2(oh, y)                                                             \
    do {                                                                             \
        if (ragged) _mm512_mask_storeu_ps(out + (oh) * out_w + ow0, sg->out, y);     \
        else _mm512_storeu_ps(out + (oh) * out_w + ow0, y);                          \
    } while (0)
    const ptrdiff_t first = 2 * (ptrdiff_t)oh0 - pad_top;
    I8_WINDOW_ROWS(2, kk, I8_ROW2, I8_STORE2);
#undef I8_ROW2
#undef I8_STORE2
}

/* tconv_rows.h direct_i8[1]: 3x3 at stride 2, strips of 16 outputs down the rows. */
static void depthwise_i8_stride2_avx512(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, size_t ih0,
                                        size_t ih1, size_t in_w, size_t pad_top, size_t pad_left, const float *w,
                                        float static_scale, float weight_scale, const float *bias) {
    const struct window_i8 k = window_constants(w, static_scale, weight_scale, bias);
    for (size_t ow0 = 0; ow0 < out_w; ow0 += 16) {
        int ragged;
        const struct stride2_group sg = stride2_group_at(ow0, 1, out_w, in_w, pad_left, &ragged);
#define I8_S2(fx, pl, rg) \
    i8_stride2_strip(&k, fx, pl, rg, out, out_w, ow0, oh0, oh1, x, (ptrdiff_t)ih0, (ptrdiff_t)ih1, in_w, (ptrdiff_t)pad_top, &sg)
#define I8_S2_PAD(fx, rg)                   \
    do {                                    \
        if (pad_left) I8_S2(fx, 1, rg);     \
        else I8_S2(fx, 0, rg);              \
    } while (0)
        /* inlined for a window or static scale, pad_left and plain or masked loads */
        if (k.fixed) {
            if (ragged) I8_S2_PAD(1, 1);
            else I8_S2_PAD(1, 0);
        } else {
            if (ragged) I8_S2_PAD(0, 1);
            else I8_S2_PAD(0, 0);
        }
#undef I8_S2_PAD
#undef I8_S2
    }
}

/* tconv_rows.h direct_i8_pair_stride2: two channels a vector on rows of at
 * most 16 columns, their taps split as pairs_stride2 splits them, each
 * lane's window as i8_stride2_strip takes it (the weights, weight scale
 * and bias of its channel). */
static void depthwise_i8_pair_stride2_avx512(float *const *out, size_t out_w, size_t oh0, size_t oh1,
                                             const float *const *x, size_t ih0, size_t ih1, size_t in_w,
                                             size_t pad_top, size_t pad_left, const float *w, size_t w_stride,
                                             float static_scale, const float *weight_scale, const float *bias) {
    if (oh0 >= oh1) return;
    const __m512i even_lanes = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd_lanes = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512i shift = pad_left ? _mm512_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6, 8, 8, 9, 10, 11, 12, 13, 14)
                                   : _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7, 9, 10, 11, 12, 13, 14, 15, 15);
    const __mmask16 moved = pad_left ? 0xfefe : 0x7f7f, half = 0xff00;
    const __mmask16 lanes = first_lanes(in_w), stored = first_lanes(out_w);
    const __mmask16 even_in = (__mmask16)(first_lanes((in_w + 1) / 2) * 0x101);
    const __mmask16 odd_in = (__mmask16)(first_lanes(in_w / 2) * 0x101);
    const ptrdiff_t extent = (ptrdiff_t)((ih1 - ih0) * in_w);
    struct window_i8 k;
    for (int t = 0; t < 9; t++)
        k.w[t] = _mm512_mask_blend_ps(half, _mm512_set1_ps(w[t * w_stride]), _mm512_set1_ps(w[t * w_stride + 1]));
    k.weight_scale = _mm512_mask_blend_ps(half, _mm512_set1_ps(weight_scale[0]), _mm512_set1_ps(weight_scale[1]));
    k.fixed = static_scale > 0.0f;
    k.static_scale = _mm512_set1_ps(static_scale);
    k.has_bias = bias != NULL;
    k.bias = bias ? _mm512_mask_blend_ps(half, _mm512_set1_ps(bias[0]), _mm512_set1_ps(bias[1])) : _mm512_setzero_ps();
    const float *xa = x[0], *xb = x[1];
    float *ya = out[0] + oh0 * out_w, *yb = out[1] + oh0 * out_w;
    /* plain loads where the rows given go on, the lanes past the row cleared by the permutes */
#define PAIR_I8_ROW(ih, slot)                                                                              \
    do {                                                                                                   \
        if ((ih) >= (ptrdiff_t)ih0 && (ih) < (ptrdiff_t)ih1) {                                             \
            const ptrdiff_t at_ = ((ih) - (ptrdiff_t)ih0) * (ptrdiff_t)in_w;                               \
            __m512 a_, b_;                                                                                 \
            if (at_ + 16 <= extent) {                                                                      \
                a_ = _mm512_loadu_ps(xa + at_);                                                            \
                b_ = _mm512_loadu_ps(xb + at_);                                                            \
            } else {                                                                                       \
                a_ = _mm512_maskz_loadu_ps(lanes, xa + at_);                                               \
                b_ = _mm512_maskz_loadu_ps(lanes, xb + at_);                                               \
            }                                                                                              \
            const __m512 even_ = _mm512_maskz_permutex2var_ps(even_in, a_, even_lanes, b_);                \
            const __m512 odd_ = _mm512_maskz_permutex2var_ps(odd_in, a_, odd_lanes, b_);                   \
            t[3 * (slot)] = pad_left ? _mm512_maskz_permutexvar_ps(moved, shift, odd_) : even_;           \
            t[3 * (slot) + 1] = pad_left ? even_ : odd_;                                                   \
            t[3 * (slot) + 2] = pad_left ? odd_ : _mm512_maskz_permutexvar_ps(moved, shift, even_);       \
            rmax[slot] = row_absmax(t[3 * (slot)], t[3 * (slot) + 1], t[3 * (slot) + 2]);                   \
        } else {                                                                                           \
            for (int c = 0; c < 3; c++) t[3 * (slot) + c] = _mm512_setzero_ps();                           \
            rmax[slot] = _mm512_setzero_si512();                                                           \
        }                                                                                                  \
    } while (0)
#define PAIR_I8_STORE(oh, y)                                                                                 \
    do {                                                                                                     \
        (void)(oh); /* called once a row, in order */                                                          \
        _mm512_mask_storeu_ps(ya, stored, y);                                                                \
        _mm512_mask_storeu_ps(yb, stored, _mm512_shuffle_f32x4(y, y, 0x4e)); /* upper half */                  \
        ya += out_w;                                                                                         \
        yb += out_w;                                                                                         \
    } while (0)
    const ptrdiff_t first = 2 * (ptrdiff_t)oh0 - (ptrdiff_t)pad_top;
    I8_WINDOW_ROWS(2, k, PAIR_I8_ROW, PAIR_I8_STORE);
#undef PAIR_I8_ROW
#undef PAIR_I8_STORE
}

#pragma GCC diagnostic pop
#undef I8_WINDOW_ROWS

#define TCONV_ROWS_TABLE tconv_rows_avx512
#define TCONV_ROWS_TRANSPOSE transpose_avx512
#define TCONV_ROWS_BLOCK_TILE block_tile_avx512
#define TCONV_ROWS_DEQUANTIZE_PIXELS dequantize_pixels_avx512
#define TCONV_ROWS_STAGE_PHASES stage_phases_avx512
#define TCONV_ROWS_COPY_ROWS copy_rows_avx512
#define TCONV_ROWS_MASKED_PLANE depthwise_masked_plane_avx512
#define TCONV_ROWS_DIRECT_3X3_STRIDE1 depthwise_3x3_stride1_avx512
#define TCONV_ROWS_DIRECT_3X3_STRIDE2 depthwise_stride2_avx512
#define TCONV_ROWS_DIRECT_PAIRS_3X3_STRIDE2 depthwise_pairs_stride2_avx512
#define TCONV_ROWS_DIRECT_5X5_STRIDE1 depthwise_5x5_stride1_avx512
#define TCONV_ROWS_DIRECT_I8_STRIDE1 depthwise_i8_stride1_avx512
#define TCONV_ROWS_DIRECT_I8_STRIDE2 depthwise_i8_stride2_avx512
#define TCONV_ROWS_DIRECT_I8_PAIR_STRIDE2 depthwise_i8_pair_stride2_avx512
/* 160 @10x10 1.15x fp32 Conv against the channel blocks' 1.00x; 8x8 0.97x against 1.01x */
#define TCONV_ROWS_DIRECT_MIN_WIDTH 10
#include "conv/tconv_rows_body.h"
