/* Row kernels of the channels-last conv paths: the direct depthwise kernel
 * (tconv_depthwise.c), where a row is one output pixel's run of channels and
 * each call handles one kernel tap of it, and the im2col rows
 * (tconv_channels_last.c). Elementwise only (no float reductions), so every
 * ISA build of tconv_rows_body.h computes bit-identical results; the
 * platform table (isa/platform.h) picks the build for the active ISA. */
#ifndef ONNXBIT_TCONV_ROWS_H
#define ONNXBIT_TCONV_ROWS_H

#include <stddef.h>
#include <stdint.h>

/* Input rows the pair kernels take: at stride 2 up to 16 columns, at stride 1 up to 8 (a row a half). */
enum { TCONV_DIRECT_PAIR_MAX_WIDTH = 16, TCONV_DIRECT_PAIR_MAX_WIDTH_STRIDE1 = 8, TCONV_DIRECT_PAIRS_MAX = 4 };

/* A depthwise_direct kernel (struct tconv_row_kernels direct_f32). */
typedef void (*tconv_direct_fn)(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, const float *scale,
                                const float *inverse, size_t ih0, size_t ih1, size_t in_w, size_t pad_top,
                                size_t pad_left, const float *w, float channel_scale, const float *bias);

/* A direct_pairs_3x3_stride2 kernel: direct_f32[0][1] on `count` channels
 * (2 or TCONV_DIRECT_PAIRS_MAX) at once, channel j's output plane out[j],
 * input rows x[j], tap t at w[t * w_stride + j], channel_scale[j] and
 * bias[j] (bias NULL: none), the pixel scales shared. */
typedef void (*tconv_direct_pairs_fn)(size_t count, float *const *out, size_t out_w, size_t oh0, size_t oh1,
                                      const float *const *x, const float *scale, const float *inverse, size_t ih0,
                                      size_t ih1, size_t in_w, size_t pad_top, size_t pad_left, const float *w,
                                      size_t w_stride, const float *channel_scale, const float *bias);

/* A direct_i8 kernel: act_quant 1 or 2 (static_scale > 0) on a 3x3 plane
 * read straight from its input rows, direct_f32's geometry, each output the
 * arithmetic of depthwise_pixel_i8 over its window (padding taps neither
 * raise the absmax nor add), codes w[t] as floats, one weight_scale. */
typedef void (*tconv_direct_i8_fn)(float *out, size_t out_w, size_t oh0, size_t oh1, const float *x, size_t ih0,
                                   size_t ih1, size_t in_w, size_t pad_top, size_t pad_left, const float *w,
                                   float static_scale, float weight_scale, const float *bias);

/* direct_pairs_3x3_stride2 with int8 activations per window (direct_i8's
 * arithmetic), two channels: channel j's weight_scale[j] and bias[j]. */
typedef void (*tconv_direct_i8_pair_fn)(float *const *out, size_t out_w, size_t oh0, size_t oh1,
                                        const float *const *x, size_t ih0, size_t ih1, size_t in_w, size_t pad_top,
                                        size_t pad_left, const float *w, size_t w_stride, float static_scale,
                                        const float *weight_scale, const float *bias);

/* Where stage_phases puts an input plane's rows (all sizes in floats). */
struct tconv_phase_layout {
    size_t rows, in_w, pad_top;
    size_t phase_w, plane;
    size_t even_at, n_even, odd_at, n_odd;
};

/* An ISA's stage_phases taking 2 * lanes input columns a step (lanes even
 * ones, lanes odd ones): the whole steps every row takes, then one masked
 * step when tail, from column tail_c (left columns on) to output tail_k.
 * n_even and n_odd differ by at most one, so one step takes what is left. */
struct tconv_phase_steps {
    size_t steps, tail_c, tail_k, left;
    int tail;
};
static inline struct tconv_phase_steps tconv_phase_steps(const struct tconv_phase_layout *l, size_t lanes) {
    size_t steps = l->in_w / (2 * lanes);
    if (steps > l->n_even / lanes) steps = l->n_even / lanes;
    if (steps > l->n_odd / lanes) steps = l->n_odd / lanes;
    const size_t tail_k = lanes * steps;
    return (struct tconv_phase_steps){steps, 2 * tail_k, tail_k, l->in_w - 2 * tail_k,
                                      l->n_even > tail_k || l->n_odd > tail_k};
}

/* Input row r's place in the stacked planes (its even and odd columns at even_at and odd_at on). */
static inline float *tconv_phase_row(float *dst, const struct tconv_phase_layout *l, size_t r) {
    const size_t u = r + l->pad_top;
    return dst + (u & 1) * 2 * l->plane + (u / 2) * l->phase_w;
}

struct tconv_row_kernels {
    /* acc[i] += code[i] * clamp(rint(src[i] * scale[i]), -128, 127), code in {-1, 0, 1} */
    void (*accumulate_i8)(int32_t *acc, const float *src, const float *scale, const int32_t *code, size_t n);
    /* magnitude[i] = max(magnitude[i], bits of |src[i * stride]|) */
    void (*absmax_bits)(int32_t *magnitude, const float *src, size_t stride, size_t n);
    /* magnitude[i] = max(magnitude[i], bits of |src[c * plane_stride + i]| for c < planes):
     * each pixel's absmax over NCHW planes, the planes taken a few at a time */
    void (*absmax_planes)(int32_t *magnitude, const float *src, size_t plane_stride, size_t planes, size_t n);
    /* max over i < n of the bits of |src[i]| (0 when n = 0): a pixel row's absmax */
    int32_t (*absmax_run)(const float *src, size_t n);
    /* In place: absmax bit patterns -> scale[i] = 127 * (1 / max(absmax, 1e-5)), and
     * bad[i] = 1 where the absmax is Inf or NaN (then scale[i] = 127) */
    void (*window_scales)(float *scale_bits, uint8_t *bad, size_t n);
    /* inverse[i] = 1 / scale[i], NaN where bad[i] (a pixel's dequantization step) */
    void (*pixel_inverses)(float *inverse, const float *scale, const uint8_t *bad, size_t n);
    /* out[i] = ((float)isum[i] * weight_scale[i]) / scale[i] (+ bias[i] when bias), NaN where bad[i] */
    void (*finish_i8)(float *out, const int32_t *isum, const float *scale, const uint8_t *bad,
                      const float *weight_scale, const float *bias, size_t n);
    /* q[i] = clamp(rint(src[i] * scale), -128, 127) (round half to even, as
     * tmm_quantize_row_scalar); returns the sum of q (|sum| <= 128 n) */
    int32_t (*quantize_run)(int8_t *q, const float *src, float scale, size_t n);
    /* one im2col row: taps runs of n values, run t at src + pixel[t] * pixel_stride or
     * zeros where pixel[t] < 0, quantized as quantize_run does each; returns their sum */
    int32_t (*quantize_taps)(int8_t *q, const float *src, const ptrdiff_t *pixel, size_t taps, size_t pixel_stride,
                             size_t n, float scale);
    /* One output row of a depthwise plane, float activations: for ow < out_w,
     *   out[ow] = (sum over taps t in order, skipping those whose row src[t] is
     *   NULL or whose column ow * stride + column[t] is outside [0, in_w), of
     *   src[t][ow * stride + column[t]] * w[t]) * scale (+ *bias when bias) */
    void (*depthwise_row_f32)(float *out, size_t out_w, const float *const *src, const ptrdiff_t *column,
                              const float *w, size_t taps, size_t stride, size_t in_w, float scale,
                              const float *bias);
    /* The rows x cols output plane of a 16-channel block of a depthwise conv, float
     * activations, from its channels-last tile x ([pixel][16], padded so that every tap
     * lies inside, rows row_pitch pixels apart): output (r, c)'s tap t reads tile pixel
     * r * row_pitch + c * stride + delta[t]:
     *   out[(r * cols + c) * 16 + l] = (sum over taps t in order of
     *   x[(r * row_pitch + c * stride + delta[t]) * 16 + l] * w[t * 16 + l]) * scale[l]
     *   (+ bias[l] when bias) */
    void (*depthwise_block_plane_f32)(float *out, const float *x, size_t rows, size_t cols, size_t row_pitch,
                                      size_t stride, const size_t *delta, const float *w, size_t taps,
                                      const float *scale, const float *bias);
    /* A depthwise plane's outputs, float activations, from a zero-padded copy x
     * whose taps are constant shifts: for r < rows, c < cols,
     *   out[r * out_stride + c] = (sum over taps t in order of
     *   x[r * x_stride + c + offset[t]] * w[t]) * scale (+ *bias when bias),
     * with x readable up to (rows - 1) * x_stride + cols + 15 + offset[taps - 1]
     * (a row's last vector reads past cols; those lanes are not stored) */
    void (*depthwise_rows_f32)(float *out, size_t out_stride, const float *x, size_t x_stride, size_t rows,
                               size_t cols, const size_t *offset, const float *w, size_t taps, float scale,
                               const float *bias);
    /* One output pixel of the channels-last depthwise path, float activations:
     * for c < m, out[c] = (sum over t < taps in order of src[t][c] * w[t][c]) * scale[c]
     * (+ bias[c] when bias), w[t] = weights + tap[t] * m */
    void (*depthwise_pixel_f32)(float *out, const float *const *src, const float *weights, const size_t *tap,
                                size_t taps, size_t m, const float *scale, const float *bias);
    /* The same with act_quant = 1 (the arithmetic of absmax_bits, window_scales,
     * accumulate_i8 and finish_i8 over the pixel's taps, codes [.][m]):
     * out[c] = ((float)isum * weight_scale[c]) / s + bias[c], NaN for a window with NaN or Inf;
     * static_scale > 0 (act_quant = 2) replaces every window's s (NaN windows stay NaN) */
    void (*depthwise_pixel_i8)(float *out, const float *const *src, const int32_t *codes, const size_t *tap,
                               size_t taps, size_t m, float static_scale, const float *weight_scale,
                               const float *bias);
    /* act_quant 1 or 2 on a depthwise plane, for p < n (a multiple of 16), out[p]
     * reading x[p + offset[t]] for each tap t (x readable up to n - 1 +
     * offset[taps - 1]), the arithmetic of
     * depthwise_pixel_i8 over each output's taps (a 0 read from the padding neither
     * raises the absmax nor adds), codes w[t] as floats, one weight_scale */
    void (*depthwise_plane_i8)(float *out, const float *x, size_t n, const size_t *offset, const float *w,
                               size_t taps, float static_scale, float weight_scale, const float *bias);
    /* The same for n output pixels of a 16-channel block, from its channels-last tile x
     * ([pixel][16]): index[p * taps + t] is the tile pixel tap t of output p reads (a pixel
     * of zeros for a padding tap, which neither raises the absmax nor adds); codes
     * w[t * 16 + l] as floats, 16 weight scales and biases */
    void (*depthwise_block_i8)(float *out, const float *x, size_t n, const uint32_t *index, const float *w,
                               size_t taps, float static_scale, const float *weight_scale, const float *bias);
    /* dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols:
     * NCHW <-> channels-last */
    void (*transpose)(const float *src, size_t rows, size_t cols, size_t src_stride, float *dst,
                      size_t dst_stride);
    /* out[i] = src[i] where mask[i] is all ones, +0 where it is 0 (bitwise: Inf and NaN
     * masked away too) */
    void (*masked_copy)(float *out, const float *src, const int32_t *mask, size_t n);
    /* One channel's input rows split into the four phase planes of a stride-2
     * depthwise conv (tconv_depthwise_phases.c), each value dequantized first
     * as dequantize_pixels does when scale (scale and inverse per pixel of the
     * plane): input row r < l->rows is padded row u = r + pad_top, written to
     * dst + (u & 1) * 2 * plane + (u / 2) * phase_w, its column 2k at even_at
     * + k (k < n_even) and its column 2k + 1 at odd_at + k (k < n_odd). */
    void (*stage_phases)(float *dst, const float *src, const struct tconv_phase_layout *l, const float *scale,
                         const float *inverse);
    /* act_quant = 3 on a depthwise conv: out[i] = (float)clamp(rint(src[i] * scale[i]), -128, 127)
     * * inverse[i], a channel's run of pixels quantized with each pixel's scale and dequantized.
     * The scales are the pixels' own absmax scales, so |src * scale| < 127.5 and the clamp never
     * acts: computed as rint(src * scale) * inverse (a -0 where the other form gives +0, which
     * no float path's sum can tell apart: each starts at +0). */
    void (*dequantize_pixels)(float *out, const float *src, const float *scale, const float *inverse, size_t n);
    /* dst[r * dst_stride + c] = src[r * src_stride + c] for r < rows, c < cols,
     * dequantized as dequantize_pixels does (scale and inverse indexed as src)
     * when scale: a plane's rows into a padded plane and back, in one call
     * (a memcpy per 56-float row took a tenth of a 144 @56x56 depthwise call) */
    void (*copy_rows)(float *dst, size_t dst_stride, const float *src, size_t src_stride, size_t rows,
                      size_t cols, const float *scale, const float *inverse);
    /* A same-size stride-1 depthwise plane (tconv_depthwise_same.c) read in
     * place, float activations, n outputs: for each vector v of 16,
     *   out[16 v + l] = (sum over taps t in order of (bit l of mask[t * V + v]
     *   ? x[16 v + l + shift[t]] : +0) * w[t]) * scale (+ *bias when bias),
     * V = ceil(n / 16), stored for 16 v + l < n; a clear bit's value is not
     * read. NULL where the ISA has no masked loads: the path stages copies. */
    void (*depthwise_masked_plane_f32)(float *out, const float *x, size_t n, const ptrdiff_t *shift,
                                       const uint16_t *mask, const float *w, size_t taps, float scale,
                                       const float *bias);
    /* Output rows [oh0, oh1) of one channel of a K x K depthwise conv, K 3
     * or 5 (direct_f32[K == 5]), at stride 1 or 2 ([.][stride - 1]),
     * dilation 1, pad_left at most K / 2 (tconv_depthwise_direct.c), read
     * straight from its input rows: row ih in [ih0, ih1) at x + (ih - ih0) *
     * in_w, every other row padding; with scale (act_quant 3), each value
     * read is first dequantized as dequantize_pixels does, with the scale and
     * inverse at the same place in those arrays. At stride s,
     * out[oh * out_w + ow] = (sum over taps (kh, kw) in order of
     * x[s oh - pad_top + kh][s ow - pad_left + kw] * w[K kh + kw], padding
     * taps left out) * channel_scale (+ *bias when bias). Plain loops where
     * the ISA has no kernel (direct_native[.][.] 0; for tests). */
    tconv_direct_fn direct_f32[2][2];
    uint8_t direct_native[2][2];
    /* The same with int8 activations per window (act_quant 1, 2), 3x3 at
     * stride 1 or 2 ([stride - 1]); plain loops where the ISA has no kernel. */
    tconv_direct_i8_fn direct_i8[2];
    uint8_t direct_i8_native[2];
    /* The rule's use of them (tconv_depthwise.c choose_path): the narrowest
     * output rows the ISA's kernels take (about half a strip). */
    size_t direct_min_width;
    /* direct_f32[0][1] and direct_i8[1] on channels two to a vector, for
     * input rows up to TCONV_DIRECT_PAIR_MAX_WIDTH wide (a strip a channel
     * would leave half its lanes empty); NULL where the ISA has none. */
    tconv_direct_pairs_fn direct_pairs_3x3_stride2;
    tconv_direct_i8_pair_fn direct_i8_pair_stride2;
    /* direct_f32[0][0] the same way, on rows up to
     * TCONV_DIRECT_PAIR_MAX_WIDTH_STRIDE1 wide */
    tconv_direct_pairs_fn direct_pairs_3x3_stride1;
    /* The channels-last tile of a 16-channel depthwise block (tconv_depthwise_blocks.c) from
     * `channels` (<= 16) NCHW planes of `pixels` pixels, plane_stride apart: for p < pixels,
     * l < 16, tile[at[p] + l] = x[l * plane_stride + p], dequantized as dequantize_pixels
     * does with scale[p] and inverse[p] when scale, and 0 for l >= channels (at: each pixel's
     * place in a padded tile, in floats, a multiple of 16) */
    void (*block_tile)(float *tile, const uint32_t *at, const float *x, size_t channels, size_t pixels,
                       size_t plane_stride, const float *scale, const float *inverse);
    /* y[i] = the activation `kind` (OBX_ACTIVATION_*, tconv.h) of y[i], in place */
    void (*activate)(float *y, size_t n, int kind, float alpha, float beta);
};

extern const struct tconv_row_kernels tconv_rows_scalar;
#if defined(ONNXBIT_X86)
extern const struct tconv_row_kernels tconv_rows_avx2;
extern const struct tconv_row_kernels tconv_rows_avx512;
/* The 8 x 8 register transpose of tconv_rows_avx2.c, also in the AVX-512 table. */
void tconv_transpose_avx2(const float *src, size_t rows, size_t cols, size_t src_stride, float *dst,
                          size_t dst_stride);
#endif

#endif
