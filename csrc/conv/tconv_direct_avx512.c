/* The direct depthwise kernels with float activations or act_quant 3 on
 * AVX-512 (tconv_rows.h direct_f32, direct_pairs_3x3_stride2; the planes
 * and their rule: tconv_depthwise_direct.c, tconv_depthwise.c): 3x3 at
 * stride 2 in groups of four strips of 16 outputs, rows of at most 16
 * columns two channels a vector, 3x3 and 5x5 at stride 1 in strips side by
 * side with rotating row sums. */
#include "conv/tconv_avx512.h"

/* Lane i of each 8-lane half taking lane i + d of it (d = kw - pad_left in
 * [-1, 2] for 3x3), and the lanes where that stays inside the half (the
 * others cleared: padding). Built in a stack array at every call, the
 * indices' stores and vector reload cost a 7x7 channel pair more than its
 * arithmetic (960 @7x7: 18.0 -> 15.3 us). */
static const int32_t half_shift_lanes[4][16] = {
    {0, 0, 1, 2, 3, 4, 5, 6, 8, 8, 9, 10, 11, 12, 13, 14},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {1, 2, 3, 4, 5, 6, 7, 7, 9, 10, 11, 12, 13, 14, 15, 15},
    {2, 3, 4, 5, 6, 7, 7, 7, 10, 11, 12, 13, 14, 15, 15, 15},
};

static inline __m512i half_shift(int d) { return _mm512_loadu_si512(half_shift_lanes[d + 1]); }

static inline __mmask16 half_shift_inside(int d) {
    const unsigned half = d >= 0 ? (0xffu >> d) : (0xffu << -d) & 0xffu;
    return (__mmask16)(half * 0x101);
}

/* The 3x3 taps, channel scales and biases (zero without) of P vectors of
 * channel pairs, tap t of channel j at w[t * w_stride + j]. */
static inline __attribute__((always_inline)) void pair_constants(int P, const float *w, size_t w_stride,
                                                                 const float *channel_scale, const float *bias,
                                                                 __m512 (*wv)[9], __m512 *cs, __m512 *b) {
    for (int k = 0; k < P; k++) {
        for (int t = 0; t < 9; t++) wv[k][t] = pair_halves(w[t * w_stride + 2 * k], w[t * w_stride + 2 * k + 1]);
        cs[k] = pair_halves(channel_scale[2 * k], channel_scale[2 * k + 1]);
        b[k] = bias ? pair_halves(bias[2 * k], bias[2 * k + 1]) : _mm512_setzero_ps();
    }
}

/* Weight kh * 3 + kw. */
#define STRIDE2_FMA3(acc, t0, t1, t2, kh)                \
    do {                                                 \
        acc = _mm512_fmadd_ps(t0, wv[3 * (kh)], acc);     \
        acc = _mm512_fmadd_ps(t1, wv[3 * (kh) + 1], acc); \
        acc = _mm512_fmadd_ps(t2, wv[3 * (kh) + 2], acc); \
    } while (0)
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
            if (g + 1 < G)
                stride2_split(g + 1 == G - 1, ragged, row + 32 * (g + 1), STRIDE2_AT(g + 1), sg, &even_after,
                              &odd_after);
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
/* tconv_rows.h direct_f32[0][1] (3x3, stride 2): groups of four strips of
 * 16 outputs down the rows, then single strips; masked loads and stores
 * only on a row's last strip where it crosses the row's end, an edge column
 * a group. */
void tconv_direct_3x3_stride2_avx512(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x,
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
 * tconv_direct_3x3_stride2_avx512 goes, kh = 0 sums started one row early, P
 * vectors side by side (their chains of 9 FMAs overlap). One strip a
 * channel filled 7 of 16 lanes at 14x14 stride 2. */
static inline __attribute__((always_inline)) void pairs_stride2(int P, float *const *out, size_t out_w, size_t oh0,
                                                               size_t oh1, const float *const *x,
                                                               const float *scale, const float *inverse, size_t ih0,
                                                               size_t ih1, size_t in_w, size_t pad_top,
                                                               size_t pad_left, const float *w, size_t w_stride,
                                                               const float *channel_scale, const float *bias) {
    const struct pair_split2 split = pair_split2_at(in_w, pad_left);
    const __mmask16 stored = first_lanes(out_w);
    const ptrdiff_t extent = (ptrdiff_t)((ih1 - ih0) * in_w);
    __m512 wv[2][9], cs[2], b[2];
    pair_constants(P, w, w_stride, channel_scale, bias, wv, cs, b);
#define PAIR_ROW(ih) ((ih) >= (ptrdiff_t)ih0 && (ih) < (ptrdiff_t)ih1 ? ((ih) - (ptrdiff_t)ih0) * (ptrdiff_t)in_w : -1)
    /* one input row's taps, kernel row kh's FMA'd into acc[k] (kh 1, 2), row 0's into next[k] from zero (kh 0, 2) */
#define PAIR_TAPS(at, kh)                  \
    do {                                   \
        if ((at) + 16 <= extent)           \
            PAIR_ROW_TAPS(at, kh, 0xffff); \
        else                               \
            PAIR_ROW_TAPS(at, kh, split.lanes); \
    } while (0)
#define PAIR_ROW_TAPS(at, kh, read_)                                                                        \
    do {                                                                                                    \
        const float *s_ = scale ? scale + (at) : NULL, *i_ = scale ? inverse + (at) : NULL;               \
        for (int k = 0; k < P; k++) {                                                                       \
            __m512 t_[3];                                                                                   \
            pair_split2_taps(&split, (int)pad_left, load_dequantized(xs[2 * k] + (at), s_, i_, read_),      \
                             load_dequantized(xs[2 * k + 1] + (at), s_, i_, read_), t_);                    \
            if (kh) {                                                                                       \
                acc[k] = _mm512_fmadd_ps(t_[0], wv[k][3 * (kh)], acc[k]);                                  \
                acc[k] = _mm512_fmadd_ps(t_[1], wv[k][3 * (kh) + 1], acc[k]);                              \
                acc[k] = _mm512_fmadd_ps(t_[2], wv[k][3 * (kh) + 2], acc[k]);                              \
            }                                                                                               \
            if ((kh) != 1) {                                                                                \
                next[k] = _mm512_fmadd_ps(t_[0], wv[k][0], _mm512_setzero_ps());                           \
                next[k] = _mm512_fmadd_ps(t_[1], wv[k][1], next[k]);                                       \
                next[k] = _mm512_fmadd_ps(t_[2], wv[k][2], next[k]);                                       \
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

void tconv_direct_pairs_stride2_avx512(size_t count, float *const *out, size_t out_w, size_t oh0, size_t oh1,
                                       const float *const *x, const float *scale, const float *inverse, size_t ih0,
                                       size_t ih1, size_t in_w, size_t pad_top, size_t pad_left, const float *w,
                                       size_t w_stride, const float *channel_scale, const float *bias) {
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

/* tconv_rows.h direct_pairs_3x3_stride1: 3x3 at stride 1 on rows of at
 * most 8 columns (7x7 and 8x8 planes), channels 2 p and 2 p + 1 in one
 * vector's halves. An input row of both channels is one permute of their
 * two loads (the lanes past the row cleared), and tap kw that vector with
 * its halves moved kw - pad_left lanes (the lane moved in cleared:
 * padding); each row's taps go into the three output rows that read it, as
 * stride1_strip_rows does (an output's taps still add in (kh, kw) order).
 * One thread against fp32 Conv, float: 960 @7x7 1.35x, 128 @8x8 1.18x, on
 * the channel blocks 0.95x and 1.01x. Not for 5x5 (512 @7x7 0.75x against
 * the blocks' 0.81x: 25 weights a vector wait in memory) nor act_quant 3
 * (960 @7x7 0.86x against 0.89x), where the blocks stay. */
static inline __attribute__((always_inline)) void pairs_stride1(int P, float *const *out, size_t out_w, size_t oh0,
                                                               size_t oh1, const float *const *x,
                                                               const float *scale, const float *inverse, size_t ih0,
                                                               size_t ih1, size_t in_w, size_t pad_top,
                                                               size_t pad_left, const float *w, size_t w_stride,
                                                               const float *channel_scale, const float *bias) {
    enum { K = 3 };
    const __m512i halves = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    const __mmask16 stored = first_lanes(out_w);
    const __mmask16 in_row = (__mmask16)(first_lanes(in_w) * 0x101);
    const ptrdiff_t extent = (ptrdiff_t)((ih1 - ih0) * in_w);
    /* tap kw: lane i of a half takes lane i + kw - pad_left of it, cleared where that leaves the half */
    __m512i shift[K];
    __mmask16 moved[K];
    for (int kw = 0; kw < K; kw++) {
        shift[kw] = half_shift(kw - (int)pad_left);
        moved[kw] = half_shift_inside(kw - (int)pad_left);
    }
    __m512 wv[2][K * K], cs[2], b[2];
    pair_constants(P, w, w_stride, channel_scale, bias, wv, cs, b);
    const float *xs[4];
    float *ys[4];
    for (int j = 0; j < 2 * P; j++) {
        xs[j] = x[j];
        ys[j] = out[j];
    }
    __m512 sums[2][K];
    for (int k = 0; k < P; k++)
        for (int d = 0; d < K; d++) sums[k][d] = _mm512_setzero_ps();
    for (ptrdiff_t ih = (ptrdiff_t)oh0 - (ptrdiff_t)pad_top; ih < (ptrdiff_t)oh1 - (ptrdiff_t)pad_top + K - 1; ih++) {
        if (ih >= (ptrdiff_t)ih0 && ih < (ptrdiff_t)ih1) {
            const ptrdiff_t at = (ih - (ptrdiff_t)ih0) * (ptrdiff_t)in_w;
            const __mmask16 read = at + 16 <= extent ? 0xffff : first_lanes(in_w); /* the rows given go on */
            const float *s_ = scale ? scale + at : NULL, *i_ = scale ? inverse + at : NULL;
            for (int k = 0; k < P; k++) {
                const __m512 a = load_dequantized(xs[2 * k] + at, s_, i_, read);
                const __m512 c = load_dequantized(xs[2 * k + 1] + at, s_, i_, read);
                const __m512 row = _mm512_maskz_permutex2var_ps(in_row, a, halves, c);
                for (int kw = 0; kw < K; kw++) {
                    const __m512 t =
                        kw == (int)pad_left ? row : _mm512_maskz_permutexvar_ps(moved[kw], shift[kw], row);
                    for (int d = K - 1; d >= 0; d--) sums[k][d] = _mm512_fmadd_ps(t, wv[k][d * K + kw], sums[k][d]);
                }
            }
        }
        const ptrdiff_t o = ih + (ptrdiff_t)pad_top - (K - 1);
        if (o >= (ptrdiff_t)oh0)
            for (int k = 0; k < P; k++) {
                __m512 v = _mm512_mul_ps(sums[k][K - 1], cs[k]);
                if (bias) v = _mm512_add_ps(v, b[k]);
                _mm512_mask_storeu_ps(ys[2 * k] + (size_t)o * out_w, stored, v);
                _mm512_mask_storeu_ps(ys[2 * k + 1] + (size_t)o * out_w, stored, _mm512_shuffle_f32x4(v, v, 0x4e));
            }
        for (int k = 0; k < P; k++) {
            for (int d = K - 1; d > 0; d--) sums[k][d] = sums[k][d - 1];
            sums[k][0] = _mm512_setzero_ps();
        }
    }
}

void tconv_direct_pairs_3x3_stride1_avx512(size_t count, float *const *out, size_t out_w, size_t oh0, size_t oh1,
                                           const float *const *x, const float *scale, const float *inverse,
                                           size_t ih0, size_t ih1, size_t in_w, size_t pad_top, size_t pad_left,
                                           const float *w, size_t w_stride, const float *channel_scale,
                                           const float *bias) {
    if (count == 4)
        pairs_stride1(2, out, out_w, oh0, oh1, x, scale, inverse, ih0, ih1, in_w, pad_top, pad_left, w, w_stride,
                      channel_scale, bias);
    else
        pairs_stride1(1, out, out_w, oh0, oh1, x, scale, inverse, ih0, ih1, in_w, pad_top, pad_left, w, w_stride,
                      channel_scale, bias);
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
    void name(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, const float *scale,           \
              const float *inverse, size_t ih0, size_t ih1, size_t in_w, size_t pad_top, size_t pad_left,     \
              const float *w, float channel_scale, const float *bias) {                                       \
        (scale ? dequantized : f32)(out, out_w, oh0, oh1, x, scale, inverse, ih0, ih1, in_w, pad_top, pad_left, \
                                    w, channel_scale, bias);                                                   \
    }
STRIDE1_DISPATCH(tconv_direct_3x3_stride1_avx512, depthwise_3x3_stride1_f32, depthwise_3x3_stride1_dequantized)
STRIDE1_DISPATCH(tconv_direct_5x5_stride1_avx512, depthwise_5x5_stride1_f32, depthwise_5x5_stride1_dequantized)
#undef STRIDE1_DISPATCH
