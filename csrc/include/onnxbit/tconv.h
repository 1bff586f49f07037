/* Ternary convolution: Y = conv(X, W * scale) (+ bias), ONNX Conv semantics
 * for 1-D and 2-D inputs (a 1-D conv is a 2-D one with height 1).
 *
 * W has the logical shape [M, C / group, kH, kW] and arrives as M packed rows
 * of K = (C / group) * kH * kW codes in (c, kh, kw) order: the [N, K] layout
 * TernaryMatMul reads, with N = M. Scales as in tmatmul.h: 1, M, or
 * M * ceil(K / group_size).
 *
 * Each output value is one row of the im2col matrix (the K input values its
 * window reads in its group, padding as 0) times one weight row, computed
 * exactly as obx_tmm_compute computes a row: with act_quant =
 * OBX_ACT_INT8_TOKEN one activation scale is shared by the K values of one
 * im2col row, i.e. per (image, group, output position) over that group's
 * channels and kernel window; with OBX_ACT_INT8_STATIC (obx_tconv_compute_scaled)
 * every row uses the fixed act_scale instead, as obx_tmm_compute_scaled does.
 *
 * act_quant = OBX_ACT_INT8_PIXEL (3) quantizes each input pixel once instead,
 * one scale per (image, pixel) over all C channels (whatever the groups: a
 * QAT CNN's per-pixel fake-quant before a grouped conv spans every channel):
 * s = 127 * (1 / max(absmax, 1e-5)), q = clamp(rint(x * s), -128, 127); an
 * output value is acc = 0, then for each kernel tap in (kh, kw) order
 * (padding taps skipped) acc = acc + (float)(integer dot of the tap pixel's q
 * with the tap's codes) * (1 / s_pixel), then acc * scale (+ bias); a pixel
 * holding NaN or Inf makes every window reading it NaN. Its weights must be
 * prepacked for it (obx_tconv_prepack_act) and have one scale group along K.
 *
 * Paths: with one scale group along K and C / group >= 8, channels-last im2col (the weights' K
 * reordered to (kh, kw, c) at prepack, X copied once per call to
 * channels-last, each tile's rows built from whole channel runs, int8 rows
 * quantized straight from X) over the TernaryMatMul kernels; with K-grouped
 * scales or fewer channels, im2col in (c, kh, kw) order; when C / group == 1 (depthwise) and
 * scales are not grouped along K, a direct kernel (channels-last, or plane by
 * plane for float activations on rows of 32 outputs or more). With
 * act_quant 1 or 2, one scale group along K and stride 1 (depthwise
 * excepted), x86 CPUs take the pixel-lanes path instead (16 output pixels
 * per vector with AVX-512 VNNI, 8 with AVX2, straight from the NCHW planes
 * to the NCHW output; ungrouped multi-tap convs only on planes of 64 outputs
 * or more, 256 on AVX2, 1x1 ones on planes of 16 or more;
 * the environment variable
 * ONNXBIT_CONV_PATH=pixel_lanes or channels_last overrides that choice, for
 * tests and measurements). Every path computes the arithmetic above; the
 * order of a float sum may differ. */
#ifndef ONNXBIT_TCONV_H
#define ONNXBIT_TCONV_H

#include <stddef.h>
#include <stdint.h>

#include "onnxbit/tmatmul.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { OBX_AUTO_PAD_NOTSET = 0, OBX_AUTO_PAD_SAME_UPPER = 1, OBX_AUTO_PAD_SAME_LOWER = 2,
       OBX_AUTO_PAD_VALID = 3 };

/* Every size of one convolution, 1-D folded into 2-D (in_h = kernel_h = 1). */
typedef struct obx_conv_geometry {
    size_t batch, channels, in_h, in_w;
    size_t out_channels, group;
    size_t kernel_h, kernel_w;
    size_t stride_h, stride_w, dilation_h, dilation_w;
    size_t pad_top, pad_left; /* leading pads; trailing ones only shape out_h / out_w */
    size_t out_h, out_w;
} obx_conv_geometry;

/* The fixed part of a convolution (from the node's attributes). */
typedef struct obx_conv_params {
    size_t spatial_rank; /* 1 or 2 */
    int64_t weight_shape[4]; /* [M, C / group, kH, kW]; 1-D: [M, C / group, kW] */
    int64_t group;
    int64_t strides[2], dilations[2];
    int64_t pads[4]; /* begins then ends, as ONNX orders them */
    int auto_pad;
} obx_conv_params;

/* Checks params (positive sizes, pads >= 0, group divides M) and fills in
 * defaults already chosen by the caller. Returns 0, or -1 with a message. */
int obx_conv_params_check(const obx_conv_params *params, char *err, size_t err_len);

/* The geometry of params applied to an input of shape x_dims (rank
 * spatial_rank + 2). Returns 0, or -1 with a message (channel mismatch, a
 * window larger than the padded input). */
int obx_conv_geometry_init(obx_conv_geometry *geometry, const obx_conv_params *params,
                           const int64_t *x_dims, size_t x_rank, char *err, size_t err_len);

typedef struct obx_tconv_weights obx_tconv_weights;

/* Validates and prepacks B and the scales for params' weight shape. */
obx_tconv_weights *obx_tconv_prepack(int fmt, const uint8_t *b, size_t b_bytes,
                                     const obx_conv_params *params, const float *scales,
                                     size_t n_scales, int64_t group_size, char *err,
                                     size_t err_len);
/* obx_tconv_prepack for the activation mode the weights will run with:
 * act_quant = OBX_ACT_INT8_PIXEL prepacks one matrix per (group, kernel tap)
 * and only that mode can compute with them; any other value is
 * obx_tconv_prepack. */
obx_tconv_weights *obx_tconv_prepack_act(int fmt, const uint8_t *b, size_t b_bytes,
                                         const obx_conv_params *params, const float *scales,
                                         size_t n_scales, int64_t group_size, int act_quant, char *err,
                                         size_t err_len);
void obx_tconv_free(obx_tconv_weights *w);
/* 1 when the direct depthwise kernel computes these weights. */
int obx_tconv_is_depthwise(const obx_tconv_weights *w);

/* x: [batch, channels, in_h, in_w]; y: [batch, out_channels, out_h, out_w];
 * bias: out_channels floats or NULL. Returns 0, or -1 with a message. A
 * batch of small images (under 4M multiply-adds each) runs one image a
 * task, each computed on one thread; larger images split across the
 * threads one after another. */
int obx_tconv_compute(const obx_tconv_weights *w, const obx_conv_geometry *geometry,
                      const float *x, const float *bias, int act_quant, float *y,
                      obx_parallel_for_fn par, void *runner, char *err, size_t err_len);
/* obx_tconv_compute with the static activation scale act_quant =
 * OBX_ACT_INT8_STATIC needs (finite, > 0; ignored by the other modes). */
int obx_tconv_compute_scaled(const obx_tconv_weights *w, const obx_conv_geometry *geometry,
                             const float *x, const float *bias, int act_quant, float act_scale,
                             float *y, obx_parallel_for_fn par, void *runner, char *err,
                             size_t err_len);

/* An activation applied to Y after the convolution (TernaryConv's
 * `activation` attribute), elementwise in float32, each product and sum
 * rounded on its own, a NaN staying NaN: Relu y < 0 ? 0 : y; LeakyRelu
 * y < 0 ? alpha * y : y; Clip y < alpha ? alpha : (y > beta ? beta : y);
 * HardSigmoid Clip(alpha * y + beta) to [0, 1]; HardSwish y * HardSigmoid(y)
 * (ONNX's alpha = 1/6, beta = 0.5, passed in alpha and beta); HardSwishRelu6
 * (y * Clip(y + 3) to [0, 6]) / 6, the form paddle2onnx writes, in that
 * order; Sigmoid 1 / (1 + exp(-y)) and Silu y * Sigmoid(y), with the
 * library's own exp (tconv_rows_body.h activation_exp_fn, within 3 ulp). */
enum { OBX_ACTIVATION_NONE = 0, OBX_ACTIVATION_RELU = 1, OBX_ACTIVATION_LEAKY_RELU = 2, OBX_ACTIVATION_CLIP = 3,
       OBX_ACTIVATION_HARD_SIGMOID = 4, OBX_ACTIVATION_HARD_SWISH = 5, OBX_ACTIVATION_HARD_SWISH_RELU6 = 6,
       OBX_ACTIVATION_SIGMOID = 7, OBX_ACTIVATION_SILU = 8 };
typedef struct obx_activation {
    int kind;
    float alpha, beta;
} obx_activation;
/* y[0, n) activated in place, in parallel chunks (par may be NULL): Y
 * straight after the conv, mostly still in cache, where onnxruntime's own
 * activation node would read and write it again (HardSwish: twice). */
void obx_activate(const obx_activation *activation, float *y, size_t n, obx_parallel_for_fn par, void *runner);
/* obx_tconv_compute_scaled, then the activation (NULL or NONE: none), a
 * few images at a time (or, small ones, each in its own task) so that Y is
 * activated while still in cache. */
int obx_tconv_compute_activated(const obx_tconv_weights *w, const obx_conv_geometry *geometry, const float *x,
                                const float *bias, int act_quant, float act_scale, const obx_activation *activation,
                                float *y, obx_parallel_for_fn par, void *runner, char *err, size_t err_len);

/* Calls the pixel-lanes path has computed in this process (a debug query:
 * tests check that the path they mean to cover really ran). */
size_t obx_tconv_pixel_lanes_runs(void);
/* Calls each depthwise path has computed in this process ("blocks",
 * "phases", "flat", "rows", "channels_last", "same"; "banded": act_quant 3
 * calls whose flat or phase planes took their pixel scales band by band; 0
 * for other names), a debug query as above. ONNXBIT_DEPTHWISE_PATH names the
 * float path to take wherever it fits. */
size_t obx_tconv_depthwise_path_runs(const char *path);

#ifdef __cplusplus
}
#endif
#endif
