/* The direct depthwise kernels with int8 activations per window (act_quant
 * 1, 2) on AVX-512 (tconv_rows.h direct_i8, direct_i8_pair_stride2; the
 * planes: tconv_depthwise_direct.c): 3x3 at stride 1 and 2, a strip of 16
 * outputs down the rows, and rows of at most 16 columns at stride 2 two
 * channels a vector. */
#include "conv/tconv_avx512.h"

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
            __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(t[3 * r + c], s),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
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
void tconv_direct_i8_stride1_avx512(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, size_t ih0,
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
void tconv_direct_i8_stride2_avx512(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, size_t ih0,
                                    size_t ih1, size_t in_w, size_t pad_top, size_t pad_left, const float *w,
                                    float static_scale, float weight_scale, const float *bias) {
    const struct window_i8 k = window_constants(w, static_scale, weight_scale, bias);
    for (size_t ow0 = 0; ow0 < out_w; ow0 += 16) {
        int ragged;
        const struct stride2_group sg = stride2_group_at(ow0, 1, out_w, in_w, pad_left, &ragged);
#define I8_S2(fx, pl, rg) \
    i8_stride2_strip(&k, fx, pl, rg, out, out_w, ow0, oh0, oh1, x, (ptrdiff_t)ih0, (ptrdiff_t)ih1, in_w, \
                     (ptrdiff_t)pad_top, &sg)
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
void tconv_direct_i8_pair_stride2_avx512(float *const *out, size_t out_w, size_t oh0, size_t oh1, const float *const *x,
                                         size_t ih0, size_t ih1, size_t in_w, size_t pad_top, size_t pad_left,
                                         const float *w, size_t w_stride, float static_scale, const float *weight_scale,
                                         const float *bias) {
    if (oh0 >= oh1) return;
    const struct pair_split2 split = pair_split2_at(in_w, pad_left);
    const __mmask16 stored = first_lanes(out_w);
    const ptrdiff_t extent = (ptrdiff_t)((ih1 - ih0) * in_w);
    struct window_i8 k;
    for (int t = 0; t < 9; t++) k.w[t] = pair_halves(w[t * w_stride], w[t * w_stride + 1]);
    k.weight_scale = pair_halves(weight_scale[0], weight_scale[1]);
    k.fixed = static_scale > 0.0f;
    k.static_scale = _mm512_set1_ps(static_scale);
    k.has_bias = bias != NULL;
    k.bias = bias ? pair_halves(bias[0], bias[1]) : _mm512_setzero_ps();
    const float *xa = x[0], *xb = x[1];
    float *ya = out[0] + oh0 * out_w, *yb = out[1] + oh0 * out_w;
    /* plain loads where the rows given go on (pair_split2) */
#define PAIR_I8_ROW(ih, slot)                                                                              \
    do {                                                                                                   \
        if ((ih) >= (ptrdiff_t)ih0 && (ih) < (ptrdiff_t)ih1) {                                             \
            const ptrdiff_t at_ = ((ih) - (ptrdiff_t)ih0) * (ptrdiff_t)in_w;                               \
            if (at_ + 16 <= extent)                                                                        \
                pair_split2_taps(&split, (int)pad_left, _mm512_loadu_ps(xa + at_), _mm512_loadu_ps(xb + at_),  \
                                 t + 3 * (slot));                                                          \
            else                                                                                           \
                pair_split2_taps(&split, (int)pad_left, _mm512_maskz_loadu_ps(split.lanes, xa + at_),       \
                                 _mm512_maskz_loadu_ps(split.lanes, xb + at_), t + 3 * (slot));           \
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
