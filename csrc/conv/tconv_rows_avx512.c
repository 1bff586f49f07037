/* The conv row kernels built for AVX-512 (tconv_rows_body.h); 512-bit
 * vectors: the file's flags allow them and -mprefer-vector-width is not set.
 * The transpose works in 16 x 16 register blocks (64 shuffles a block, where
 * the AVX2 file's 8 x 8 blocks take 96 for the same floats), the AVX2 one on
 * the edges. The depthwise channel blocks (tconv_depthwise_blocks.c) spend
 * about a quarter of their time in transposes. The direct depthwise
 * kernels in the table are tconv_direct_avx512.c's and
 * tconv_direct_i8_avx512.c's. */
#include "conv/tconv_avx512.h"

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
#define TCONV_ROWS_DIRECT_3X3_STRIDE1 tconv_direct_3x3_stride1_avx512
#define TCONV_ROWS_DIRECT_3X3_STRIDE2 tconv_direct_3x3_stride2_avx512
#define TCONV_ROWS_DIRECT_PAIRS_3X3_STRIDE2 tconv_direct_pairs_stride2_avx512
#define TCONV_ROWS_DIRECT_PAIRS_3X3_STRIDE1 tconv_direct_pairs_3x3_stride1_avx512
#define TCONV_ROWS_DIRECT_5X5_STRIDE1 tconv_direct_5x5_stride1_avx512
#define TCONV_ROWS_DIRECT_I8_STRIDE1 tconv_direct_i8_stride1_avx512
#define TCONV_ROWS_DIRECT_I8_STRIDE2 tconv_direct_i8_stride2_avx512
#define TCONV_ROWS_DIRECT_I8_PAIR_STRIDE2 tconv_direct_i8_pair_stride2_avx512
/* 160 @10x10 1.15x fp32 Conv against the channel blocks' 1.00x; 8x8 0.97x against 1.01x */
#define TCONV_ROWS_DIRECT_MIN_WIDTH 10
#include "conv/tconv_rows_body.h"
