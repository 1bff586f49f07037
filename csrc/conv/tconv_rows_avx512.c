/* The conv row kernels built for AVX-512 (tconv_rows_body.h); 512-bit
 * vectors: the file's flags allow them and -mprefer-vector-width is not set.
 * The transpose works in 16 x 16 register blocks (64 shuffles a block, where
 * the AVX2 file's 8 x 8 blocks take 96 for the same floats), the AVX2 one on
 * the edges. The depthwise channel blocks (tconv_depthwise_blocks.c) spend
 * about a quarter of their time in transposes. */
#include <immintrin.h>

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

/* The lanes of a 16-output strip of a stride-2 row (tconv_rows.h
 * direct_f32[0][1]), the same for every row: columns c = 2 ow0 on. */
struct stride2_strip {
    ptrdiff_t c, edge_at;               /* the edge column, or column 0 where it lies outside the row */
    __mmask16 lo, hi, edge, out;        /* the two loads' lanes inside the row, the edge's, the outputs' */
};

/* One input row's three taps for a strip: columns c .. c + 31 are two
 * loads, two permutes split them into the even columns and the odd ones,
 * and the third tap's columns are one of those moved a lane, with the
 * column before them (pad_left 1) or after them (pad_left 0) in the lane
 * set free. inside: all 33 columns lie in the row, so plain loads. */
static inline __attribute__((always_inline)) void stride2_row_taps(const float *row, const float *scale,
                                                                   const float *inverse, const struct stride2_strip *s,
                                                                   int pad_left, int inside, __m512 *t0,
                                                                   __m512 *t1, __m512 *t2) {
    const __m512i even_lanes = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd_lanes = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __mmask16 lo_lanes = inside ? 0xffff : s->lo, hi_lanes = inside ? 0xffff : s->hi;
    __m512 lo = load_dequantized(row + s->c, scale ? scale + s->c : NULL, scale ? inverse + s->c : NULL, lo_lanes);
    __m512 hi = load_dequantized(row + s->c + 16, scale ? scale + s->c + 16 : NULL,
                                 scale ? inverse + s->c + 16 : NULL, hi_lanes);
    const ptrdiff_t e = s->edge_at;
    __m512 edge = _mm512_set1_ps(row[e]);
    if (scale) edge = dequantize16(edge, _mm512_set1_ps(scale[e]), _mm512_set1_ps(inverse[e]));
    if (!inside) edge = _mm512_maskz_mov_ps(s->edge, edge);
    const __m512 even = _mm512_permutex2var_ps(lo, even_lanes, hi), odd = _mm512_permutex2var_ps(lo, odd_lanes, hi);
    if (pad_left) { /* columns c - 1 + 2i, c + 2i, c + 1 + 2i */
        *t0 = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(odd), _mm512_castps_si512(edge), 15));
        *t1 = even;
        *t2 = odd;
    } else { /* columns c + 2i, c + 1 + 2i, c + 2 + 2i */
        *t0 = even;
        *t1 = odd;
        *t2 = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(edge), _mm512_castps_si512(even), 1));
    }
}

#define STRIDE2_TAPS(acc, t0, t1, t2, kh)                              \
    do {                                                               \
        acc = _mm512_fmadd_ps(t0, wv[3 * (kh)], acc);                  \
        acc = _mm512_fmadd_ps(t1, wv[3 * (kh) + 1], acc);              \
        acc = _mm512_fmadd_ps(t2, wv[3 * (kh) + 2], acc);              \
    } while (0)

/* A strip down rows [oh0, oh1): an output row's last input row is the next
 * one's first, so its taps stay in registers (two rows split a row of
 * outputs, not three). */
static inline __attribute__((always_inline)) void stride2_strip_rows(float *out, size_t out_w, size_t ow0, size_t oh0,
                                                                     size_t oh1, const float *x, const float *scale,
                                                                     const float *inverse, ptrdiff_t ih0,
                                                                     ptrdiff_t ih1, size_t in_w, ptrdiff_t pad_top,
                                                                     int pad_left, const struct stride2_strip *s,
                                                                     const __m512 *wv, __m512 channel_scale,
                                                                     const float *bias, int inside) {
    /* input row ih's offset from x, or -1 in the padding */
#define STRIDE2_ROW(ih) ((ih) >= ih0 && (ih) < ih1 ? ((ih) - ih0) * (ptrdiff_t)in_w : -1)
#define STRIDE2_ROW_TAPS(at, t0, t1, t2)                                                                       \
    stride2_row_taps(x + (at), scale ? scale + (at) : NULL, scale ? inverse + (at) : NULL, s, pad_left, inside, \
                     &t0, &t1, &t2)
    __m512 p0 = _mm512_setzero_ps(), p1 = p0, p2 = p0;
    ptrdiff_t top = STRIDE2_ROW(2 * (ptrdiff_t)oh0 - pad_top);
    if (top >= 0) STRIDE2_ROW_TAPS(top, p0, p1, p2);
    for (size_t oh = oh0; oh < oh1; oh++) {
        const ptrdiff_t ih = 2 * (ptrdiff_t)oh - pad_top;
        const ptrdiff_t middle = STRIDE2_ROW(ih + 1), bottom = STRIDE2_ROW(ih + 2);
        __m512 acc = _mm512_setzero_ps();
        if (top >= 0) STRIDE2_TAPS(acc, p0, p1, p2, 0);
        if (middle >= 0) {
            __m512 t0, t1, t2;
            STRIDE2_ROW_TAPS(middle, t0, t1, t2);
            STRIDE2_TAPS(acc, t0, t1, t2, 1);
        }
        if (bottom >= 0) {
            STRIDE2_ROW_TAPS(bottom, p0, p1, p2);
            STRIDE2_TAPS(acc, p0, p1, p2, 2);
        }
        top = bottom;
        __m512 v = _mm512_mul_ps(acc, channel_scale);
        if (bias) v = _mm512_add_ps(v, _mm512_set1_ps(*bias));
        if (inside) _mm512_storeu_ps(out + oh * out_w + ow0, v);
        else _mm512_mask_storeu_ps(out + oh * out_w + ow0, s->out, v);
    }
#undef STRIDE2_ROW
#undef STRIDE2_ROW_TAPS
}

/* tconv_rows.h direct_f32[0][1] (3x3, stride 2), a strip of 16 outputs at a time down
 * the rows. Strips away from the row's ends take plain loads. One thread,
 * 96 @112x112 / 144 @56x56 / 512 @14x14: every strip masked, three rows
 * split per output row, 113 / 49 / 21 us; the inner strips plain, 75 us at
 * 112x112; down the strips as here, 74 / 32 / 14 us. */
static void depthwise_stride2_avx512(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x,
                                     const float *scale, const float *inverse, size_t ih0, size_t ih1, size_t in_w,
                                     size_t pad_top, size_t pad_left, const float *w, float channel_scale,
                                     const float *bias) {
    const __m512 s = _mm512_set1_ps(channel_scale);
    __m512 wv[9];
    for (int t = 0; t < 9; t++) wv[t] = _mm512_set1_ps(w[t]);
    const ptrdiff_t width = (ptrdiff_t)in_w, pl = (ptrdiff_t)pad_left;
    for (size_t ow0 = 0; ow0 < out_w; ow0 += 16) {
        struct stride2_strip strip;
        strip.c = (ptrdiff_t)(2 * ow0);
        const ptrdiff_t edge_col = pad_left ? strip.c - 1 : strip.c + 32, left = width - strip.c;
        const int edge_inside = edge_col >= 0 && edge_col < width;
        strip.edge_at = edge_inside ? edge_col : 0;
        strip.lo = left <= 0 ? 0 : first_lanes((size_t)left);
        strip.hi = left <= 16 ? 0 : first_lanes((size_t)(left - 16));
        strip.edge = edge_inside ? 0xffff : 0;
        strip.out = first_lanes(out_w - ow0);
        const int inside = strip.c - pl >= 0 && strip.c + 32 - pl < width && ow0 + 16 <= out_w;
        /* inlined four times: plain or masked loads, float or dequantized values */
#define STRIDE2_STRIP(sc, inv, in)                                                                          \
    stride2_strip_rows(out, out_w, ow0, oh0, oh1, x, sc, inv, (ptrdiff_t)ih0, (ptrdiff_t)ih1, in_w,          \
                       (ptrdiff_t)pad_top, (int)pad_left, &strip, wv, s, bias, in)
        if (scale) {
            if (inside) STRIDE2_STRIP(scale, inverse, 1);
            else STRIDE2_STRIP(scale, inverse, 0);
        } else {
            if (inside) STRIDE2_STRIP(NULL, NULL, 1);
            else STRIDE2_STRIP(NULL, NULL, 0);
        }
#undef STRIDE2_STRIP
    }
}
#undef STRIDE2_TAPS

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

#define TCONV_ROWS_TABLE tconv_rows_avx512
#define TCONV_ROWS_TRANSPOSE transpose_avx512
#define TCONV_ROWS_BLOCK_TILE block_tile_avx512
#define TCONV_ROWS_DEQUANTIZE_PIXELS dequantize_pixels_avx512
#define TCONV_ROWS_STAGE_PHASES stage_phases_avx512
#define TCONV_ROWS_COPY_ROWS copy_rows_avx512
#define TCONV_ROWS_MASKED_PLANE depthwise_masked_plane_avx512
#define TCONV_ROWS_DIRECT_3X3_STRIDE1 depthwise_3x3_stride1_avx512
#define TCONV_ROWS_DIRECT_3X3_STRIDE2 depthwise_stride2_avx512
#define TCONV_ROWS_DIRECT_5X5_STRIDE1 depthwise_5x5_stride1_avx512
/* 160 @10x10 1.15x fp32 Conv against the channel blocks' 1.00x; 8x8 0.97x against 1.01x */
#define TCONV_ROWS_DIRECT_MIN_WIDTH 10
#define TCONV_ROWS_DIRECT_PIXELS_STRIDE2 1
#include "conv/tconv_rows_body.h"
