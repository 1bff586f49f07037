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

struct tconv_row_kernels {
    /* dst[i] += src[i] * w[i] */
    void (*accumulate_f32)(float *dst, const float *src, const float *w, size_t n);
    /* out[i] = out[i] * scale[i] (+ bias[i] when bias) */
    void (*finish_f32)(float *out, const float *scale, const float *bias, size_t n);
    /* acc[i] += code[i] * clamp(rint(src[i] * scale[i]), -128, 127), code in {-1, 0, 1} */
    void (*accumulate_i8)(int32_t *acc, const float *src, const float *scale, const int8_t *code, size_t n);
    /* magnitude[i] = max(magnitude[i], bits of |src[i * stride]|) */
    void (*absmax_bits)(int32_t *magnitude, const float *src, size_t stride, size_t n);
    /* In place: absmax bit patterns -> scale[i] = 127 * (1 / max(absmax, 1e-5)), and
     * bad[i] = 1 where the absmax is Inf or NaN (then scale[i] = 127) */
    void (*window_scales)(float *scale_bits, uint8_t *bad, size_t n);
    /* out[i] = ((float)isum[i] * weight_scale[i]) / scale[i] (+ bias[i] when bias), NaN where bad[i] */
    void (*finish_i8)(float *out, const int32_t *isum, const float *scale, const uint8_t *bad,
                      const float *weight_scale, const float *bias, size_t n);
    /* q[i] = clamp(rint(src[i] * scale), -128, 127) (round half to even, as
     * tmm_quantize_row_scalar); returns the sum of q (|sum| <= 128 n) */
    int32_t (*quantize_run)(int8_t *q, const float *src, float scale, size_t n);
    /* dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols:
     * NCHW <-> channels-last */
    void (*transpose)(const float *src, size_t rows, size_t cols, size_t src_stride, float *dst,
                      size_t dst_stride);
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
