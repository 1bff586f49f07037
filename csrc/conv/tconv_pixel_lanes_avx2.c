/* The pixel-lanes conv kernel on AVX2 (tconv_pixel_lanes.h): the layout,
 * order and arithmetic of the AVX-512 kernel (tconv_pixel_lanes_avx512.c
 * says what they are and why) on vectors of 8 pixels, without a 4-way dot
 * product instruction. vpmaddubsw multiplies the activations (q + 128,
 * unsigned) by the ternary codes and adds pairs: each 16-bit sum is at most
 * 2 x 255 = 510 in magnitude, so FLUSH_STEPS = 64 steps add up in 16 bits
 * (32640 at most) before vpmaddwd with ones widens them into the int32 sums.
 * The integer sums are the exact ones of the other paths and the float steps
 * the same operations in the same order, so the outputs are the same bits.
 * tconv_pixel_lanes_avxvnni.c compiles this file again for CPUs with
 * AVX-VNNI, whose vpdpbusd adds the four products straight into int32 sums
 * (the widening is then a plain add). */
#include <immintrin.h>
#include <string.h>

#include "conv/tconv_pixel_lanes.h"
#include "obx_common.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

#ifdef TCONV_LANES_AVXVNNI
#define LANES_DOT(sum, x, w) _mm256_dpbusd_avx_epi32(sum, x, w)
#define LANES_WIDEN(sum) (sum)
#else
#define LANES_DOT(sum, x, w) _mm256_add_epi16(sum, _mm256_maddubs_epi16(x, w))
#define LANES_WIDEN(sum) _mm256_madd_epi16(sum, ones)
#endif

/* Output channels per register block, over up to VECS_MAX pixel vectors: 12
 * 16-bit sums, three tile vectors and a broadcast fill the 16 registers.
 * Measured (forced AVX2 on a Sapphire Rapids, one thread, 3x3 128 @28x28,
 * act_quant 1): channels x vectors 6 x 2 1086 us, 4 x 2 1128, 4 x 3 866;
 * act_quant 3, whose float sums live in memory across the taps: 4 x 2 975,
 * 4 x 3 1261. */
enum { BLOCK_M = 4, VECS_MAX = 3, WINDOW_VECS = 3, PIXEL_VECS = 2, NV = TCONV_LANES_TILE / 8, FLUSH_STEPS = 64 };

static ALWAYS_INLINE __m256i lanes_up_to(size_t n) {
    const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)OBX_MIN(n, (size_t)8)), index);
}

/* Per lane: its window's or pixel's scale and whether it holds NaN or Inf. */
struct lane_scales {
    __m256 scale[NV];
    __m256i bad[NV];
};

/* s = 127 * (1 / max(amax, 1e-5)) from the absmax bits (NaN and Inf order
 * above every finite magnitude as integers; a bad lane takes any finite s). */
static ALWAYS_INLINE __m256 scale_of_bits(__m256i bits, __m256i *bad) {
    const __m256i floor_bits = _mm256_castps_si256(_mm256_set1_ps(1e-5f));
    *bad = _mm256_cmpgt_epi32(bits, _mm256_set1_epi32(0x7f7fffff));
    const __m256i clamped = _mm256_max_epi32(_mm256_blendv_epi8(bits, floor_bits, *bad), floor_bits);
    return _mm256_mul_ps(_mm256_set1_ps(127.0f), _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_castsi256_ps(clamped)));
}

/* A pixel's s and r = 1 / s (NaN for a pixel holding NaN or Inf). */
static ALWAYS_INLINE __m256 pixel_scale(__m256i bits, __m256 *r) {
    __m256i bad;
    const __m256 scale = scale_of_bits(bits, &bad);
    *r = _mm256_blendv_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), scale), _mm256_set1_ps(__builtin_nanf("")),
                          _mm256_castsi256_ps(bad));
    return scale;
}

/* 8 pixels x 4 channels: q = rint(x * s) (clamped first for a static s), as
 * bytes q + 128, pixel p's 4 channels in dword p. */
static ALWAYS_INLINE __m256i quantize_values(__m256 x0, __m256 x1, __m256 x2, __m256 x3, __m256 s, int clamp) {
    __m256 f0 = _mm256_mul_ps(x0, s), f1 = _mm256_mul_ps(x1, s);
    __m256 f2 = _mm256_mul_ps(x2, s), f3 = _mm256_mul_ps(x3, s);
    if (clamp) {
        const __m256 lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
        f0 = _mm256_min_ps(_mm256_max_ps(f0, lo), hi);
        f1 = _mm256_min_ps(_mm256_max_ps(f1, lo), hi);
        f2 = _mm256_min_ps(_mm256_max_ps(f2, lo), hi);
        f3 = _mm256_min_ps(_mm256_max_ps(f3, lo), hi);
    }
    /* cvtps rounds to nearest even, as rintf in the default mode; per 128-bit
     * lane the packs leave bytes 4 c + p (channel c, pixel p of the lane's 4) */
    const __m256i q01 = _mm256_packs_epi32(_mm256_cvtps_epi32(f0), _mm256_cvtps_epi32(f1));
    const __m256i q23 = _mm256_packs_epi32(_mm256_cvtps_epi32(f2), _mm256_cvtps_epi32(f3));
    const __m256i to_pixels = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                               0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m256i q = _mm256_shuffle_epi8(_mm256_packs_epi16(q01, q23), to_pixels);
    return _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80));
}

static ALWAYS_INLINE __m256i quantize_quad(const float *x0, const float *x1, const float *x2, const float *x3,
                                           __m256 s, int clamp) {
    return quantize_values(_mm256_loadu_ps(x0), _mm256_loadu_ps(x1), _mm256_loadu_ps(x2), _mm256_loadu_ps(x3), s,
                           clamp);
}

/* A 1x1 conv read in place: each of the tile's TCONV_LANES_TILE pixels'
 * absmax bits over the channels. */
static void tile_absmax(const struct tconv_lanes_task *t, __m256i *bits) {
    const __m256i magnitude = _mm256_set1_epi32(0x7fffffff);
    for (size_t v = 0; v < NV; v++) bits[v] = _mm256_setzero_si256();
    for (size_t c = 0; c < t->channels; c++)
        for (size_t v = 0; v < NV; v++)
            bits[v] = _mm256_max_epi32(
                bits[v], _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(t->src[c] + 8 * v)), magnitude));
}

static void window_scales(const struct tconv_lanes_task *t, size_t vectors, struct lane_scales *out) {
    __m256i bits[NV];
    if (t->window_amax) {
        for (size_t v = 0; v < vectors; v++) {
            bits[v] = _mm256_setzero_si256(); /* padding reads 0 */
            for (size_t k = 0; k < t->taps; k++)
                bits[v] = _mm256_max_epi32(
                    bits[v], _mm256_loadu_si256((const __m256i *)(t->window_amax + t->offset[k] + 8 * v)));
        }
    } else {
        tile_absmax(t, bits);
    }
    for (size_t v = 0; v < vectors; v++) {
        const __m256 scale = scale_of_bits(bits[v], &out->bad[v]);
        out->scale[v] = t->static_scale > 0.0f ? _mm256_set1_ps(t->static_scale) : scale;
    }
}

/* [tap][quad][vector] vectors of 8 pixels' codes, each lane at its window's scale. */
static void quantize_tile(const struct tconv_lanes_task *t, size_t vectors, const struct lane_scales *ls) {
    const int clamp = t->static_scale > 0.0f;
    __m256i *out = (__m256i *)t->tile;
    for (size_t k = 0; k < t->taps; k++) {
        const size_t off = t->offset[k];
        for (size_t q = 0; q < t->quads; q++) {
            const float *x0 = t->src[4 * q] + off, *x1 = t->src[4 * q + 1] + off;
            const float *x2 = t->src[4 * q + 2] + off, *x3 = t->src[4 * q + 3] + off;
            for (size_t v = 0; v < vectors; v++)
                _mm256_store_si256(out++, quantize_quad(x0 + 8 * v, x1 + 8 * v, x2 + 8 * v, x3 + 8 * v,
                                                        ls->scale[v], clamp));
        }
    }
}

/* Where lane vector v goes (tconv_lanes_stores). */
struct lane_stores {
    unsigned keep[NV];
    size_t dst[NV];
};

static void lane_stores(const struct tconv_lanes_task *t, size_t vectors, struct lane_stores *out) {
    tconv_lanes_stores(t, 8, vectors, out->keep, out->dst);
}

static ALWAYS_INLINE void store_lanes(float *y, unsigned keep, __m256 f) {
    if (keep == 0xff) {
        _mm256_storeu_ps(y, f);
        return;
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, f);
    for (size_t l = 0, n = 0; l < 8; l++)
        if (keep >> l & 1) y[n++] = lanes[l];
}

/* 16-bit sums (i, v): output channel o0 + i, pixel vector v0 + v; named,
 * not an array, so that they stay in registers; those past MB x VECS
 * compile away. One step adds channel o0 + i's 4 codes `word` times the
 * vectors' 4 activations of each pixel. */
#define MADD_ROW(i, word)                                                                                      \
    if (i < MB) {                                                                                              \
        const __m256i wb = _mm256_set1_epi32(word);                                                            \
        s##i##0 = LANES_DOT(s##i##0, x0, wb);                                                                  \
        if (VECS > 1) s##i##1 = LANES_DOT(s##i##1, x1, wb);                                                    \
        if (VECS > 2) s##i##2 = LANES_DOT(s##i##2, x2, wb);                                                    \
    }
/* The 16-bit sums widened into the int32 ones (in memory: few flushes). */
#define WIDEN(i)                                                                                               \
    if (i < MB) {                                                                                              \
        wide[i][0] = _mm256_add_epi32(wide[i][0], LANES_WIDEN(s##i##0));                                       \
        s##i##0 = z;                                                                                           \
        if (VECS > 1) {                                                                                        \
            wide[i][1] = _mm256_add_epi32(wide[i][1], LANES_WIDEN(s##i##1));                                   \
            s##i##1 = z;                                                                                       \
        }                                                                                                      \
        if (VECS > 2) {                                                                                        \
            wide[i][2] = _mm256_add_epi32(wide[i][2], LANES_WIDEN(s##i##2));                                   \
            s##i##2 = z;                                                                                       \
        }                                                                                                      \
    }
#define WIDEN_ALL()                                                                                            \
    do {                                                                                                       \
        WIDEN(0) WIDEN(1) WIDEN(2) WIDEN(3)                                                                    \
    } while (0)
#define ROW_POINTERS(base)                                                                                     \
    const int32_t *w0 = (base);                                                                                \
    const int32_t *w1 = MB > 1 ? w0 + k4 : w0, *w2 = MB > 2 ? w1 + k4 : w1, *w3 = MB > 3 ? w2 + k4 : w2;       \
    (void)w1, (void)w2, (void)w3
#define STEPS(k) MADD_ROW(0, w0[k]) MADD_ROW(1, w1[k]) MADD_ROW(2, w2[k]) MADD_ROW(3, w3[k])

/* Window scales (act_quant 1, 2): output channels [o0, o0 + MB) over pixel
 * vectors [v0, v0 + VECS) of a tile of `vectors` vectors per step. */
static ALWAYS_INLINE void channel_block(const struct tconv_lanes_task *t, size_t o0, size_t v0, size_t vectors,
                                        const struct lane_scales *ls, const struct lane_stores *st, const int MB,
                                        const int VECS) {
    const __m256i z = _mm256_setzero_si256(), ones = _mm256_set1_epi16(1);
    (void)ones; /* AVX-VNNI sums need no widening */
    __m256i s00 = z, s01 = z, s02 = z, s10 = z, s11 = z, s12 = z, s20 = z, s21 = z, s22 = z, s30 = z, s31 = z,
            s32 = z;
    __m256i wide[BLOCK_M][VECS_MAX];
    for (int i = 0; i < MB; i++)
        for (int v = 0; v < VECS; v++) wide[i][v] = z;
    const size_t k4 = t->taps * t->quads;
    ROW_POINTERS(t->codes + o0 * k4);
    const __m256i *x = (const __m256i *)t->tile + v0;
    for (size_t k = 0; k < k4; k++, x += vectors) {
        const __m256i x0 = _mm256_load_si256(x);
        const __m256i x1 = VECS > 1 ? _mm256_load_si256(x + 1) : z;
        const __m256i x2 = VECS > 2 ? _mm256_load_si256(x + 2) : z;
        STEPS(k)
        if ((k + 1) % FLUSH_STEPS == 0) WIDEN_ALL();
    }
    WIDEN_ALL();
    for (int i = 0; i < MB; i++) {
        const size_t o = o0 + (size_t)i;
        for (int v = 0; v < VECS; v++) {
            const size_t lv = v0 + (size_t)v;
            /* the TernaryMatMul epilogue: (0 + (float)isum * weight_scale) / s + bias; NaN for a bad window */
            __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(wide[i][v], _mm256_set1_epi32(t->correction[o])));
            f = _mm256_add_ps(_mm256_setzero_ps(), _mm256_mul_ps(f, _mm256_set1_ps(t->weight_scale[o])));
            f = _mm256_div_ps(f, ls->scale[lv]);
            if (t->bias) f = _mm256_add_ps(f, _mm256_set1_ps(t->bias[o]));
            f = _mm256_blendv_ps(f, _mm256_set1_ps(__builtin_nanf("")), _mm256_castsi256_ps(ls->bad[lv]));
            store_lanes(t->y + o * t->plane + st->dst[lv], st->keep[lv], f);
        }
    }
}

#define TAP_TERM(i, v)                                                                                         \
    do {                                                                                                       \
        __m256i isum = _mm256_add_epi32(LANES_WIDEN(s##i##v), correction);                                    \
        if (quads > FLUSH_STEPS) isum = _mm256_add_epi32(isum, wide[i][v]);                                    \
        f[i][v] = _mm256_add_ps(f[i][v], _mm256_mul_ps(_mm256_cvtepi32_ps(isum),                               \
                                                       _mm256_loadu_ps(r + shift + 8 * (v))));                 \
        s##i##v = z;                                                                                           \
    } while (0)
#define TAP_END(i)                                                                                             \
    if (i < MB) {                                                                                              \
        const __m256i correction = _mm256_set1_epi32(-t->tap_correction[(o0 + (i)) * t->taps + k]);            \
        TAP_TERM(i, 0);                                                                                        \
        if (VECS > 1) TAP_TERM(i, 1);                                                                          \
        if (VECS > 2) TAP_TERM(i, 2);                                                                          \
    }

/* Per-pixel scales (act_quant 3): the pixels as [quad][stride] dwords at
 * `pixels` with their r; the integer sums restart per tap and go into the
 * float sums times the r of the pixel each lane's tap reads. */
static ALWAYS_INLINE void pixel_channel_block(const struct tconv_lanes_task *t, size_t o0, size_t v0,
                                              const int32_t *pixels, size_t stride, const float *r,
                                              const struct lane_stores *st, const int MB, const int VECS) {
    const __m256i z = _mm256_setzero_si256(), ones = _mm256_set1_epi16(1);
    (void)ones; /* AVX-VNNI sums need no widening */
    __m256i s00 = z, s01 = z, s02 = z, s10 = z, s11 = z, s12 = z, s20 = z, s21 = z, s22 = z, s30 = z, s31 = z,
            s32 = z;
    __m256i wide[BLOCK_M][VECS_MAX];
    __m256 f[BLOCK_M][VECS_MAX];
    for (int i = 0; i < MB; i++)
        for (int v = 0; v < VECS; v++) f[i][v] = _mm256_setzero_ps(), wide[i][v] = z;
    const size_t quads = t->quads, k4 = t->taps * quads;
    for (size_t k = 0; k < t->taps; k++) {
        const size_t shift = t->offset[k] + 8 * v0;
        ROW_POINTERS(t->codes + o0 * k4 + k * quads);
        /* more than FLUSH_STEPS quads: the sums widened on the way start at 0 */
        if (quads > FLUSH_STEPS)
            for (int i = 0; i < MB; i++)
                for (int v = 0; v < VECS; v++) wide[i][v] = z;
        const int32_t *x = pixels + shift;
        for (size_t j = 0; j < quads; j++, x += stride) {
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)x);
            const __m256i x1 = VECS > 1 ? _mm256_loadu_si256((const __m256i *)(x + 8)) : z;
            const __m256i x2 = VECS > 2 ? _mm256_loadu_si256((const __m256i *)(x + 16)) : z;
            STEPS(j)
            if ((j + 1) % FLUSH_STEPS == 0 && j + 1 < quads) WIDEN_ALL();
        }
        /* isum = the 16-bit sums widened (+ those widened before) - the tap's
         * correction; then acc = acc + (float)isum * r: a multiply and an
         * add, each rounded. Straight from the registers: through `wide`
         * every tap cost 1x1 256->64 a tenth more. */
        TAP_END(0) TAP_END(1) TAP_END(2) TAP_END(3)
    }
    for (int i = 0; i < MB; i++) {
        const size_t o = o0 + (size_t)i;
        for (int v = 0; v < VECS; v++) {
            const size_t lv = v0 + (size_t)v;
            __m256 y = _mm256_mul_ps(f[i][v], _mm256_set1_ps(t->weight_scale[o]));
            if (t->bias) y = _mm256_add_ps(y, _mm256_set1_ps(t->bias[o]));
            store_lanes(t->y + o * t->plane + st->dst[lv], st->keep[lv], y);
        }
    }
}

/* Every block of BLOCK_M output channels, then the remainder, each over the
 * tile's pixel vectors G at a time (the block's codes stay in L1 across
 * them), through CALL(MB, VECS) with compile-time sizes; needs t, vectors,
 * and size_t o0, v0 in scope. */
#define VEC_GROUPS(CALL, MB, G)                                                                                \
    for (v0 = 0; v0 + G <= vectors; v0 += G) CALL(MB, G);                                                      \
    if (G > 2 && v0 + 2 == vectors) CALL(MB, 2);                                                               \
    if (v0 + 1 == vectors) CALL(MB, 1);
#define CHANNEL_BLOCKS(CALL, G)                                                                                \
    for (o0 = 0; o0 + BLOCK_M <= t->m; o0 += BLOCK_M) {                                                        \
        VEC_GROUPS(CALL, BLOCK_M, G)                                                                           \
    }                                                                                                          \
    switch (t->m - o0) {                                                                                       \
    case 0: break;                                                                                             \
    case 1: VEC_GROUPS(CALL, 1, G) break;                                                                      \
    case 2: VEC_GROUPS(CALL, 2, G) break;                                                                      \
    default: VEC_GROUPS(CALL, 3, G) break;                                                                     \
    }

static void channel_blocks(const struct tconv_lanes_task *t, size_t vectors, const struct lane_scales *ls,
                           const struct lane_stores *st) {
    size_t o0, v0;
#define INT_BLOCK(MB, VECS) channel_block(t, o0, v0, vectors, ls, st, MB, VECS)
    CHANNEL_BLOCKS(INT_BLOCK, WINDOW_VECS)
#undef INT_BLOCK
}

static void pixel_channel_blocks(const struct tconv_lanes_task *t, size_t vectors, const int32_t *pixels,
                                 size_t stride, const float *r, const struct lane_stores *st) {
    size_t o0, v0;
#define PIXEL_BLOCK(MB, VECS) pixel_channel_block(t, o0, v0, pixels, stride, r, st, MB, VECS)
    CHANNEL_BLOCKS(PIXEL_BLOCK, PIXEL_VECS)
#undef PIXEL_BLOCK
}

/* act_quant 3 on a 1x1 conv read in place: the tile's pixels (its span)
 * quantized once each as [quad][span] dwords, then their r. */
static const float *quantize_span(const struct tconv_lanes_task *t, size_t span) {
    const size_t vectors = span / 8;
    int32_t *out = (int32_t *)t->tile;
    float *r = (float *)(t->tile + span * 4 * t->quads);
    __m256i bits[NV];
    tile_absmax(t, bits);
    for (size_t v = 0; v < vectors; v++) {
        __m256 pixel_r;
        const __m256 scale = pixel_scale(bits[v], &pixel_r);
        _mm256_storeu_ps(r + 8 * v, pixel_r);
        for (size_t q = 0; q < t->quads; q++)
            _mm256_store_si256((__m256i *)(out + q * span + 8 * v),
                               quantize_quad(t->src[4 * q] + 8 * v, t->src[4 * q + 1] + 8 * v,
                                             t->src[4 * q + 2] + 8 * v, t->src[4 * q + 3] + 8 * v, scale, 0));
    }
    return r;
}

static void lanes_tile(const struct tconv_lanes_task *t) {
    const size_t vectors = OBX_DIV_UP(t->pixels, 8);
    struct lane_stores st;
    lane_stores(t, vectors, &st);
    if (t->per_pixel && t->quantized) {
        pixel_channel_blocks(t, vectors, t->quantized, t->quantized_stride, t->pixel_r, &st);
        return;
    }
    if (t->per_pixel) {
        /* only 1x1 convs read in place come here: their span is the tile */
        const size_t span = tconv_lanes_span(t->offset[t->taps - 1]);
        const float *r = quantize_span(t, span);
        pixel_channel_blocks(t, vectors, (const int32_t *)t->tile, span, r, &st);
        return;
    }
    struct lane_scales ls;
    window_scales(t, vectors, &ls);
    quantize_tile(t, vectors, &ls);
    channel_blocks(t, vectors, &ls, &st);
}

/* Up to NV vectors of consecutive pixels of one flat row, n of them from
 * flat pixel p (flat column col) on: each channel's run read whole for the
 * absmaxes, then again (from L1) a quad at a time for the codes. */
static void quantize_row_run(const struct tconv_lanes_image *im, size_t p, size_t row, size_t col, size_t n) {
    const __m256i magnitude = _mm256_set1_epi32(0x7fffffff);
    const size_t plane = im->in_h * im->in_w, vectors = OBX_DIV_UP(n, 8);
    const int inside = row >= im->pad_top && row - im->pad_top < im->in_h;
    const ptrdiff_t first = (ptrdiff_t)col - (ptrdiff_t)im->pad_left; /* image column of lane 0 */
    const float *line = inside ? im->x + (row - im->pad_top) * im->in_w : im->x;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i valid[NV], store[NV], bits[NV];
    for (size_t v = 0; v < vectors; v++) {
        store[v] = lanes_up_to(n - 8 * v);
        /* image columns [0, in_w) among the lanes: column - first - 8 v in [-first - 8 v, in_w - first - 8 v) */
        const ptrdiff_t lo = -first - (ptrdiff_t)(8 * v), hi = (ptrdiff_t)im->in_w - first - (ptrdiff_t)(8 * v);
        const __m256i from = _mm256_set1_epi32((int)OBX_MAX(OBX_MIN(lo, (ptrdiff_t)8), (ptrdiff_t)-1));
        const __m256i to = _mm256_set1_epi32((int)OBX_MAX(OBX_MIN(hi, (ptrdiff_t)8), (ptrdiff_t)0));
        const __m256i in_row = _mm256_andnot_si256(_mm256_cmpgt_epi32(from, lane), _mm256_cmpgt_epi32(to, lane));
        valid[v] = inside ? _mm256_and_si256(in_row, store[v]) : _mm256_setzero_si256();
        bits[v] = _mm256_setzero_si256();
    }
    /* The masked loads never touch a lane outside the image, so the run's
     * address may lie before the row. */
#define RUN_AT(c, v) ((const float *)((uintptr_t)(line + (c) * plane) + (first + 8 * (ptrdiff_t)(v)) * 4))
    for (size_t c = 0; c < im->channels; c++)
        for (size_t v = 0; v < vectors; v++)
            bits[v] = _mm256_max_epi32(
                bits[v], _mm256_and_si256(_mm256_castps_si256(_mm256_maskload_ps(RUN_AT(c, v), valid[v])), magnitude));
    for (size_t v = 0; v < vectors; v++) {
        __m256 r;
        const __m256 scale = pixel_scale(bits[v], &r);
        _mm256_maskstore_ps(im->r + p + 8 * v, store[v], r);
        for (size_t quad = 0; quad < im->quads; quad++) {
            __m256 x[4];
            for (size_t i = 0; i < 4; i++) {
                const size_t c = 4 * quad + i; /* channels past C hold 0: their codes are 0 */
                x[i] = c < im->channels ? _mm256_maskload_ps(RUN_AT(c, v), valid[v]) : _mm256_setzero_ps();
            }
            _mm256_maskstore_epi32((int *)(im->q + quad * im->stride + p + 8 * v), store[v],
                                   quantize_values(x[0], x[1], x[2], x[3], scale, 0));
        }
    }
#undef RUN_AT
}

#ifndef TCONV_LANES_KERNELS
#define TCONV_LANES_KERNELS tconv_lanes_avx2
#endif
const struct tconv_lanes_kernels TCONV_LANES_KERNELS = {lanes_tile, quantize_row_run, 256, 256};
