/* The pixel-lanes conv kernel on AVX-512 VNNI (tconv_pixel_lanes.h). A
 * task first finds its lanes' window scales, then quantizes its tile once:
 * for each (tap, quad of channels) one vector per 16 pixels holding each
 * pixel's 4 channels as q + 128 (vpdpbusd's unsigned operand), each lane
 * with its own output pixel's scale. Then blocks of BLOCK_M output channels
 * x up to 4 pixel vectors accumulate vpdpbusd(tile vector, broadcast dword
 * of 4 signed codes) over the whole K = taps * quads, in registers; the
 * sum over the +128 is one constant per output channel, taken off at the
 * end. Integer sums are exact and the epilogue is the TernaryMatMul one,
 * so the results are those of every other path bit for bit.
 *
 * act_quant 3 (per_pixel) quantizes each pixel once, with its own scale, as
 * [quad][pixel] dwords: a padded image whole before its tiles (overlapping
 * spans quantized per tile had cost 3x3 64 @56x56 10% of its time), a 1x1
 * conv read in place per tile. A tap's vectors are then unaligned loads at
 * the tap's shift. The integer sums restart per tap (at minus its
 * correction) and go into float sums tap by tap, times the 1 / s of the
 * pixel each lane's tap reads: per_pixel_conv's order. */
#include <immintrin.h>
#include <string.h>

#include "conv/tconv_pixel_lanes.h"
#include "obx_common.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* Output channels per register block: BLOCK_M x 4 accumulators + 4 tile
 * vectors + a broadcast fit the 32 vector registers without spills (8
 * channels x 3 vectors measured no faster: against the channels-last path
 * 1x1 256->64 @56 1.86x vs 1.94x, 144->24 2.17x vs 2.39x, 3x3 64 @56 even). */
enum { BLOCK_M = 6, NV = TCONV_LANES_VECTORS };

/* vpdpbusd in place through asm: GCC 12 moves the intrinsic's accumulators
 * through the stack (tmm_kernel_avx512.c measured 2.3x slower). */
static ALWAYS_INLINE void dpbusd_in_place(__m512i *acc, __m512i u8, __m512i s8) {
#ifdef ONNXBIT_TEST_EMULATED_X86_INTRINSICS_H
    *acc = _mm512_dpbusd_epi32(*acc, u8, s8);
#else
    __asm__("vpdpbusd %2, %1, %0" : "+v"(*acc) : "v"(u8), "v"(s8));
#endif
}

/* A 1x1 conv's tile: each of its TCONV_LANES_TILE pixels' absmax bits over
 * the channels into bits[0..NV), every tile of a 1x1 conv having that many
 * readable lanes (tconv_pixel_lanes.c): four named maxima (an indexed array
 * went through the stack), channel by channel, its lines in order. */
static ALWAYS_INLINE void tile_absmax(const struct tconv_lanes_task *t, __m512i *bits) {
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
    __m512i b0 = _mm512_setzero_si512(), b1 = b0, b2 = b0, b3 = b0;
    for (size_t c = 0; c < t->channels; c++) {
        const float *x = t->src[c];
        b0 = _mm512_max_epi32(b0, _mm512_and_si512(_mm512_loadu_si512(x), magnitude));
        b1 = _mm512_max_epi32(b1, _mm512_and_si512(_mm512_loadu_si512(x + 16), magnitude));
        b2 = _mm512_max_epi32(b2, _mm512_and_si512(_mm512_loadu_si512(x + 32), magnitude));
        b3 = _mm512_max_epi32(b3, _mm512_and_si512(_mm512_loadu_si512(x + 48), magnitude));
    }
    bits[0] = b0, bits[1] = b1, bits[2] = b2, bits[3] = b3;
}

struct lane_scales {
    __m512 scale[NV];
    __mmask16 bad[NV];
};

/* Each lane's s (tconv_pixel_lanes.h) and whether its window holds NaN or Inf. */
static void window_scales(const struct tconv_lanes_task *t, size_t vectors, struct lane_scales *out) {
    const __m512i inf_bits = _mm512_set1_epi32(0x7f800000);
    const __m512i floor_bits = _mm512_castps_si512(_mm512_set1_ps(1e-5f));
    __m512i bits[NV];
    for (size_t v = 0; v < NV; v++) bits[v] = _mm512_setzero_si512(); /* padding reads 0 */
    if (t->window_amax) {
        for (size_t v = 0; v < vectors; v++)
            for (size_t k = 0; k < t->taps; k++)
                bits[v] = _mm512_max_epi32(bits[v], _mm512_loadu_si512(t->window_amax + t->offset[k] + 16 * v));
    } else {
        tile_absmax(t, bits);
    }
    for (size_t v = 0; v < vectors; v++) {
        /* NaN and Inf order above every finite magnitude as integers. */
        out->bad[v] = _mm512_cmpge_epi32_mask(bits[v], inf_bits);
        if (t->static_scale > 0.0f) {
            out->scale[v] = _mm512_set1_ps(t->static_scale);
            continue;
        }
        /* max(amax, 1e-5) on bit patterns (non-negative floats order as
         * integers); a bad lane takes any finite value. */
        const __m512i clamped = _mm512_max_epi32(_mm512_mask_mov_epi32(bits[v], out->bad[v], floor_bits), floor_bits);
        out->scale[v] = _mm512_mul_ps(_mm512_set1_ps(127.0f),
                                      _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_castsi512_ps(clamped)));
    }
}

/* One vector of 16 pixels x 4 channels: q = rint(x * s) (clamped first for
 * a static s; a window scale keeps |x * s| <= 127 and the saturating packs
 * clamp), as bytes q + 128 with pixel p's 4 channels in dword p. */
static ALWAYS_INLINE __m512i quantize_values(__m512 x0, __m512 x1, __m512 x2, __m512 x3, __m512 s, int clamp) {
    __m512 f0 = _mm512_mul_ps(x0, s), f1 = _mm512_mul_ps(x1, s);
    __m512 f2 = _mm512_mul_ps(x2, s), f3 = _mm512_mul_ps(x3, s);
    if (clamp) {
        const __m512 lo = _mm512_set1_ps(-128.0f), hi = _mm512_set1_ps(127.0f);
        f0 = _mm512_min_ps(_mm512_max_ps(f0, lo), hi);
        f1 = _mm512_min_ps(_mm512_max_ps(f1, lo), hi);
        f2 = _mm512_min_ps(_mm512_max_ps(f2, lo), hi);
        f3 = _mm512_min_ps(_mm512_max_ps(f3, lo), hi);
    }
    /* cvtps rounds to nearest even, as rintf in the default mode. */
    __m512i q01 = _mm512_packs_epi32(_mm512_cvtps_epi32(f0), _mm512_cvtps_epi32(f1));
    __m512i q23 = _mm512_packs_epi32(_mm512_cvtps_epi32(f2), _mm512_cvtps_epi32(f3));
    /* Per 128-bit lane: bytes 4 c + p (channel c, pixel p) -> 4 p + c. */
    const __m512i to_pixels = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
    __m512i q = _mm512_shuffle_epi8(_mm512_packs_epi16(q01, q23), to_pixels);
    return _mm512_xor_si512(q, _mm512_set1_epi8((char)0x80));
}

static ALWAYS_INLINE __m512i quantize_quad(const float *x0, const float *x1, const float *x2, const float *x3,
                                           __m512 s, int clamp) {
    return quantize_values(_mm512_loadu_ps(x0), _mm512_loadu_ps(x1), _mm512_loadu_ps(x2), _mm512_loadu_ps(x3), s,
                           clamp);
}

static void quantize_tile(const struct tconv_lanes_task *t, size_t vectors, const struct lane_scales *ls) {
    const int clamp = t->static_scale > 0.0f;
    __m512i *out = (__m512i *)t->tile;
    for (size_t k = 0; k < t->taps; k++) {
        const size_t off = t->offset[k];
        for (size_t q = 0; q < t->quads; q++) {
            const float *x0 = t->src[4 * q] + off, *x1 = t->src[4 * q + 1] + off;
            const float *x2 = t->src[4 * q + 2] + off, *x3 = t->src[4 * q + 3] + off;
            for (size_t v = 0; v < vectors; v++)
                _mm512_store_si512(out++, quantize_quad(x0 + 16 * v, x1 + 16 * v, x2 + 16 * v, x3 + 16 * v,
                                                        ls->scale[v], clamp));
        }
    }
}

/* Reads the next tile's input ahead, a few lines per step of the integer
 * loop: a 1x1 conv's tile reads C short runs of X from L3, too many streams
 * for the hardware prefetchers, and one burst of misses would wait on the
 * fill buffers; spread over the dot products they overlap them (measured,
 * one thread, time against the channels-last path: 144->24 @56 2.35x with
 * it, 2.11x without; 256->64 @56 2.02x, 1.88x). */
struct next_tile_lines {
    const float *const *src;
    size_t c, v, channels, vectors;
    size_t per_step; /* lines per step: all of them within this tile's steps */
    size_t start;    /* the next tile's first pixel from this one's */
};

static ALWAYS_INLINE void prefetch_step(struct next_tile_lines *n) {
    for (size_t i = 0; i < n->per_step && n->c < n->channels; i++) {
        _mm_prefetch((const char *)(n->src[n->c] + n->start + 16 * n->v), _MM_HINT_T0);
        if (++n->v == n->vectors) {
            n->v = 0;
            n->c++;
        }
    }
}

/* Where lane vector v goes (tconv_lanes_stores), and the mask of as many
 * first lanes as it keeps: the kept values compressed into them. */
struct lane_stores {
    __mmask16 keep[NV], first_n[NV];
    size_t dst[NV];
};

static void lane_stores(const struct tconv_lanes_task *t, size_t vectors, struct lane_stores *out) {
    unsigned keep[NV];
    tconv_lanes_stores(t, 16, vectors, keep, out->dst);
    for (size_t v = 0; v < vectors; v++) {
        out->keep[v] = (__mmask16)keep[v];
        out->first_n[v] = (__mmask16)((1u << __builtin_popcount(keep[v])) - 1);
    }
}

/* Accumulator (i, v): output channel o0 + i, pixel vector v; named, not an
 * array (GCC kept an array of them on the stack); the ones past MB x VECS
 * compile away. One step adds output channel o0 + i's 4 codes `word` times
 * the pixel vectors' 4 activations. */
#define DPBUSD_ROW(i, word)                                                                                    \
    if (i < MB) {                                                                                              \
        const __m512i wb = _mm512_set1_epi32(word);                                                            \
        dpbusd_in_place(&a##i##0, x0, wb);                                                                     \
        if (VECS > 1) dpbusd_in_place(&a##i##1, x1, wb);                                                       \
        if (VECS > 2) dpbusd_in_place(&a##i##2, x2, wb);                                                       \
        if (VECS > 3) dpbusd_in_place(&a##i##3, x3, wb);                                                       \
    }
#define LANES_STEP(i) DPBUSD_ROW(i, w##i[k])
#define LANES_FINISH(i)                                                                                        \
    if (i < MB) {                                                                                              \
        finish(t, o0 + i, 0, a##i##0, ls, st);                                                                 \
        if (VECS > 1) finish(t, o0 + i, 1, a##i##1, ls, st);                                                   \
        if (VECS > 2) finish(t, o0 + i, 2, a##i##2, ls, st);                                                   \
        if (VECS > 3) finish(t, o0 + i, 3, a##i##3, ls, st);                                                   \
    }

/* One output vector: the TernaryMatMul epilogue (tmm_add_group(0, isum,
 * scale), / s, + bias as tmm_store_row; NaN for a bad window), stored to the
 * lanes that are output pixels. */
static ALWAYS_INLINE void finish(const struct tconv_lanes_task *t, size_t o, int v, __m512i acc,
                                 const struct lane_scales *ls, const struct lane_stores *st) {
    __m512 f = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, _mm512_set1_epi32(t->correction[o])));
    f = _mm512_add_ps(_mm512_setzero_ps(), _mm512_mul_ps(f, _mm512_set1_ps(t->weight_scale[o])));
    f = _mm512_div_ps(f, ls->scale[v]);
    if (t->bias) f = _mm512_add_ps(f, _mm512_set1_ps(t->bias[o]));
    f = _mm512_mask_mov_ps(f, ls->bad[v], _mm512_set1_ps(__builtin_nanf("")));
    if (st->keep[v] != st->first_n[v]) f = _mm512_maskz_compress_ps(st->keep[v], f);
    _mm512_mask_storeu_ps(t->y + o * t->plane + st->dst[v], st->first_n[v], f);
}

/* Output channels [o0, o0 + MB) over VECS pixel vectors (compile-time constants). */
static ALWAYS_INLINE void channel_block(const struct tconv_lanes_task *t, size_t o0, const struct lane_scales *ls,
                                        const struct lane_stores *st, struct next_tile_lines *next, const int MB,
                                        const int VECS) {
    const __m512i z = _mm512_setzero_si512();
    __m512i a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z;
    __m512i a20 = z, a21 = z, a22 = z, a23 = z, a30 = z, a31 = z, a32 = z, a33 = z;
    __m512i a40 = z, a41 = z, a42 = z, a43 = z, a50 = z, a51 = z, a52 = z, a53 = z;
    const size_t k4 = t->taps * t->quads;
    /* rows past MB are never read (nor pointed past the array) */
    const int32_t *w0 = t->codes + o0 * k4;
    const int32_t *w1 = MB > 1 ? w0 + k4 : w0, *w2 = MB > 2 ? w1 + k4 : w1, *w3 = MB > 3 ? w2 + k4 : w2;
    const int32_t *w4 = MB > 4 ? w3 + k4 : w3, *w5 = MB > 5 ? w4 + k4 : w4;
    const __m512i *x = (const __m512i *)t->tile;
    for (size_t k = 0; k < k4; k++, x += VECS) {
        const __m512i x0 = _mm512_load_si512(x);
        const __m512i x1 = VECS > 1 ? _mm512_load_si512(x + 1) : z;
        const __m512i x2 = VECS > 2 ? _mm512_load_si512(x + 2) : z;
        const __m512i x3 = VECS > 3 ? _mm512_load_si512(x + 3) : z;
        prefetch_step(next);
        LANES_STEP(0)
        LANES_STEP(1)
        LANES_STEP(2)
        LANES_STEP(3)
        LANES_STEP(4)
        LANES_STEP(5)
    }
    LANES_FINISH(0)
    LANES_FINISH(1)
    LANES_FINISH(2)
    LANES_FINISH(3)
    LANES_FINISH(4)
    LANES_FINISH(5)
}

/* Every block of BLOCK_M output channels, then the remainder, each through
 * CALL(MB, VECS) with the compile-time sizes the kernels are specialized on
 * (needs t, vectors and a size_t o0 in scope). */
#define VEC_CASES(CALL, MB)                                                                                    \
    switch (vectors) {                                                                                         \
    case 1: CALL(MB, 1); break;                                                                                \
    case 2: CALL(MB, 2); break;                                                                                \
    case 3: CALL(MB, 3); break;                                                                                \
    default: CALL(MB, 4); break;                                                                               \
    }
#define CHANNEL_BLOCKS(CALL)                                                                                   \
    for (o0 = 0; o0 + BLOCK_M <= t->m; o0 += BLOCK_M) VEC_CASES(CALL, BLOCK_M)                                  \
    switch (t->m - o0) {                                                                                       \
    case 0: break;                                                                                             \
    case 1: VEC_CASES(CALL, 1) break;                                                                          \
    case 2: VEC_CASES(CALL, 2) break;                                                                          \
    case 3: VEC_CASES(CALL, 3) break;                                                                          \
    case 4: VEC_CASES(CALL, 4) break;                                                                          \
    default: VEC_CASES(CALL, 5) break;                                                                         \
    }

/* The lines of the next tile to read ahead over this one's integer steps. */
static struct next_tile_lines next_tile(const struct tconv_lanes_task *t) {
    /* The padded planes' tiles overlap their neighbours' rows: mostly cached already. */
    const size_t steps = OBX_DIV_UP(t->m, BLOCK_M) * t->taps * t->quads;
    struct next_tile_lines lines = {t->src, 0, 0, t->prefetch_next && !t->window_amax ? t->channels : 0, NV,
                                    OBX_DIV_UP(t->channels * NV, OBX_MAX(steps, (size_t)1)),
                                    OBX_DIV_UP(t->pixels, 16) * 16};
    return lines;
}

static void channel_blocks(const struct tconv_lanes_task *t, size_t vectors, const struct lane_scales *ls,
                           const struct lane_stores *st) {
    struct next_tile_lines lines = next_tile(t);
    struct next_tile_lines *next = &lines;
    size_t o0;
#define INT_BLOCK(MB, VECS) channel_block(t, o0, ls, st, next, MB, VECS)
    CHANNEL_BLOCKS(INT_BLOCK)
#undef INT_BLOCK
}

/* ---- act_quant 3: one scale per input pixel ---------------------------- */

/* A pixel's s from its absmax bits over the channels, and its r = 1 / s
 * (NaN for a pixel holding NaN or Inf, whose s is then any finite value). */
static ALWAYS_INLINE __m512 pixel_scale(__m512i bits, __m512 *r) {
    const __m512i inf_bits = _mm512_set1_epi32(0x7f800000);
    const __m512i floor_bits = _mm512_castps_si512(_mm512_set1_ps(1e-5f));
    const __m512 one = _mm512_set1_ps(1.0f);
    /* NaN and Inf order above every finite magnitude as integers; max(amax,
     * 1e-5) on bit patterns, a bad pixel taking any finite value. */
    const __mmask16 bad = _mm512_cmpge_epi32_mask(bits, inf_bits);
    const __m512i clamped = _mm512_max_epi32(_mm512_mask_mov_epi32(bits, bad, floor_bits), floor_bits);
    const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(127.0f), _mm512_div_ps(one, _mm512_castsi512_ps(clamped)));
    *r = _mm512_mask_mov_ps(_mm512_div_ps(one, scale), bad, _mm512_set1_ps(__builtin_nanf("")));
    return scale;
}

/* The span's pixels quantized once each: [quad][span] dwords of 4 channels
 * as q + 128 at the tile, then each pixel's r = 1 / s (NaN for a pixel
 * holding NaN or Inf, whose q are then any bytes: every term reading them is
 * NaN). Returns r. */
static const float *quantize_span(const struct tconv_lanes_task *t, size_t span) {
    const size_t vectors = span / 16;
    __m512i *out = (__m512i *)t->tile;
    float *r = (float *)(t->tile + span * 4 * t->quads);
    /* A 1x1 conv: the span is the tile, TCONV_LANES_TILE readable lanes, whose
     * absmaxes come from X in one pass, each channel's run read whole (a pass
     * per vector, each reading a line of every channel, left 1x1 act_quant 3
     * 20% slower than act_quant 1 on 256->64 @56). */
    __m512i tile_bits[NV];
    if (!t->window_amax) tile_absmax(t, tile_bits);
    for (size_t v = 0; v < vectors; v++) {
        const __m512i bits = t->window_amax ? _mm512_loadu_si512(t->window_amax + 16 * v) : tile_bits[v];
        __m512 pixel_r;
        const __m512 scale = pixel_scale(bits, &pixel_r);
        _mm512_storeu_ps(r + 16 * v, pixel_r);
        for (size_t q = 0; q < t->quads; q++)
            _mm512_store_si512(out + q * vectors + v,
                               quantize_quad(t->src[4 * q] + 16 * v, t->src[4 * q + 1] + 16 * v,
                                             t->src[4 * q + 2] + 16 * v, t->src[4 * q + 3] + 16 * v, scale, 0));
    }
    return r;
}

/* Accumulator (i, v) as in channel_block, restarted per tap at minus the
 * tap's correction; the float sums f[i][v] carry across taps. */
#define PIXEL_START(i)                                                                                         \
    if (i < MB) {                                                                                              \
        a##i##0 = a##i##1 = a##i##2 = a##i##3 = _mm512_set1_epi32(-t->tap_correction[(o0 + i) * t->taps + k]); \
    }
#define PIXEL_STEP(i) DPBUSD_ROW(i, w##i[j])
/* acc = acc + (float)isum * r: a multiply and an add, each rounded */
#define PIXEL_TERM(i, v, rv) (f[i][v] = _mm512_add_ps(f[i][v], _mm512_mul_ps(_mm512_cvtepi32_ps(a##i##v), rv)))
#define PIXEL_END(i)                                                                                           \
    if (i < MB) {                                                                                              \
        PIXEL_TERM(i, 0, r0);                                                                                  \
        if (VECS > 1) PIXEL_TERM(i, 1, r1);                                                                    \
        if (VECS > 2) PIXEL_TERM(i, 2, r2);                                                                    \
        if (VECS > 3) PIXEL_TERM(i, 3, r3);                                                                    \
    }

/* y = acc * weight_scale + bias for one output vector, stored as finish does. */
static ALWAYS_INLINE void finish_pixel(const struct tconv_lanes_task *t, size_t o, int v, __m512 acc,
                                       const struct lane_stores *st) {
    __m512 f = _mm512_mul_ps(acc, _mm512_set1_ps(t->weight_scale[o]));
    if (t->bias) f = _mm512_add_ps(f, _mm512_set1_ps(t->bias[o]));
    if (st->keep[v] != st->first_n[v]) f = _mm512_maskz_compress_ps(st->keep[v], f);
    _mm512_mask_storeu_ps(t->y + o * t->plane + st->dst[v], st->first_n[v], f);
}

static ALWAYS_INLINE void pixel_channel_block(const struct tconv_lanes_task *t, size_t o0, const int32_t *pixels,
                                              size_t stride, const float *r, const struct lane_stores *st,
                                              struct next_tile_lines *next, const int MB, const int VECS) {
    const __m512i z = _mm512_setzero_si512();
    __m512i a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z;
    __m512i a20 = z, a21 = z, a22 = z, a23 = z, a30 = z, a31 = z, a32 = z, a33 = z;
    __m512i a40 = z, a41 = z, a42 = z, a43 = z, a50 = z, a51 = z, a52 = z, a53 = z;
    __m512 f[BLOCK_M][NV];
    for (int i = 0; i < MB; i++)
        for (int v = 0; v < VECS; v++) f[i][v] = _mm512_setzero_ps();
    const size_t quads = t->quads, k4 = t->taps * quads;
    for (size_t k = 0; k < t->taps; k++) {
        const size_t shift = t->offset[k];
        /* rows past MB are never read (nor pointed past the array) */
        const int32_t *w0 = t->codes + o0 * k4 + k * quads;
        const int32_t *w1 = MB > 1 ? w0 + k4 : w0, *w2 = MB > 2 ? w1 + k4 : w1, *w3 = MB > 3 ? w2 + k4 : w2;
        const int32_t *w4 = MB > 4 ? w3 + k4 : w3, *w5 = MB > 5 ? w4 + k4 : w4;
        PIXEL_START(0)
        PIXEL_START(1)
        PIXEL_START(2)
        PIXEL_START(3)
        PIXEL_START(4)
        PIXEL_START(5)
        const int32_t *x = pixels + shift;
        for (size_t j = 0; j < quads; j++, x += stride) {
            const __m512i x0 = _mm512_loadu_si512(x);
            const __m512i x1 = VECS > 1 ? _mm512_loadu_si512(x + 16) : z;
            const __m512i x2 = VECS > 2 ? _mm512_loadu_si512(x + 32) : z;
            const __m512i x3 = VECS > 3 ? _mm512_loadu_si512(x + 48) : z;
            prefetch_step(next);
            PIXEL_STEP(0)
            PIXEL_STEP(1)
            PIXEL_STEP(2)
            PIXEL_STEP(3)
            PIXEL_STEP(4)
            PIXEL_STEP(5)
        }
        const __m512 r0 = _mm512_loadu_ps(r + shift);
        const __m512 r1 = VECS > 1 ? _mm512_loadu_ps(r + shift + 16) : r0;
        const __m512 r2 = VECS > 2 ? _mm512_loadu_ps(r + shift + 32) : r0;
        const __m512 r3 = VECS > 3 ? _mm512_loadu_ps(r + shift + 48) : r0;
        PIXEL_END(0)
        PIXEL_END(1)
        PIXEL_END(2)
        PIXEL_END(3)
        PIXEL_END(4)
        PIXEL_END(5)
    }
    for (int i = 0; i < MB; i++)
        for (int v = 0; v < VECS; v++) finish_pixel(t, o0 + (size_t)i, v, f[i][v], st);
}

static void pixel_channel_blocks(const struct tconv_lanes_task *t, size_t vectors, const int32_t *pixels,
                                 size_t stride, const float *r, const struct lane_stores *st) {
    struct next_tile_lines lines = next_tile(t);
    struct next_tile_lines *next = &lines;
    size_t o0;
#define PIXEL_BLOCK(MB, VECS) pixel_channel_block(t, o0, pixels, stride, r, st, next, MB, VECS)
    CHANNEL_BLOCKS(PIXEL_BLOCK)
#undef PIXEL_BLOCK
}

static void lanes_tile(const struct tconv_lanes_task *t) {
    const size_t vectors = OBX_DIV_UP(t->pixels, 16);
    struct lane_stores st;
    lane_stores(t, vectors, &st);
    if (t->per_pixel && t->quantized) {
        pixel_channel_blocks(t, vectors, t->quantized, t->quantized_stride, t->pixel_r, &st);
        return;
    }
    if (t->per_pixel) {
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

/* Up to NV vectors of consecutive pixels of one flat row, from flat pixel p
 * (flat column col) on, n of them: each channel's run read whole for the
 * absmaxes, then again (from L1) a quad at a time for the codes. */
static void quantize_row_run(const struct tconv_lanes_image *im, size_t p, size_t row, size_t col, size_t n) {
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
    const size_t plane = im->in_h * im->in_w, vectors = OBX_DIV_UP(n, 16);
    const int inside = row >= im->pad_top && row - im->pad_top < im->in_h;
    /* image column of each vector's first lane, as a signed offset */
    const ptrdiff_t first = (ptrdiff_t)col - (ptrdiff_t)im->pad_left;
    const float *line = inside ? im->x + (row - im->pad_top) * im->in_w : im->x;
    __mmask16 valid[NV], store[NV];
    __m512i bits[NV];
    for (size_t v = 0; v < vectors; v++) {
        const size_t lanes = OBX_MIN(n - 16 * v, (size_t)16);
        store[v] = (__mmask16)((1u << lanes) - 1);
        unsigned in_image = 0;
        for (size_t l = 0; l < lanes && inside; l++) {
            const ptrdiff_t column = first + (ptrdiff_t)(16 * v + l);
            if (column >= 0 && column < (ptrdiff_t)im->in_w) in_image |= 1u << l;
        }
        valid[v] = (__mmask16)in_image;
        bits[v] = _mm512_setzero_si512();
    }
    /* The masked loads never touch a lane outside the image, so the run's
     * address may lie before the row. */
#define RUN_AT(c, v) ((const float *)((uintptr_t)(line + (c) * plane) + (first + 16 * (ptrdiff_t)(v)) * 4))
    for (size_t c = 0; c < im->channels; c++)
        for (size_t v = 0; v < vectors; v++)
            bits[v] = _mm512_max_epi32(bits[v],
                                       _mm512_and_si512(_mm512_castps_si512(_mm512_maskz_loadu_ps(valid[v], RUN_AT(c, v))),
                                                        magnitude));
    for (size_t v = 0; v < vectors; v++) {
        __m512 r;
        const __m512 scale = pixel_scale(bits[v], &r);
        _mm512_mask_storeu_ps(im->r + p + 16 * v, store[v], r);
        for (size_t quad = 0; quad < im->quads; quad++) {
            __m512 x[4];
            for (size_t i = 0; i < 4; i++) {
                const size_t c = 4 * quad + i; /* channels past C hold 0: their codes are 0 */
                x[i] = c < im->channels ? _mm512_maskz_loadu_ps(valid[v], RUN_AT(c, v)) : _mm512_setzero_ps();
            }
            _mm512_mask_storeu_epi32(im->q + quad * im->stride + p + 16 * v, store[v],
                                     quantize_values(x[0], x[1], x[2], x[3], scale, 0));
        }
    }
#undef RUN_AT
}

const struct tconv_lanes_kernels tconv_lanes_avx512 = {lanes_tile, quantize_row_run, 64, 0};
