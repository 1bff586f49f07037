/* Direct depthwise ternary convolution (C / group == 1): each output channel
 * reads one input plane in place, one kernel tap at a time over whole output
 * rows (contiguous for stride 1, so the compiler vectorizes the inner loops).
 * im2col would copy every input value kH * kW times for a K of only kH * kW.
 *
 * Arithmetic per output value, as obx_tmm_compute computes one im2col row:
 * float: (sum over taps of x * w) * scale + bias; act_quant: the window's
 * absmax scale s, q = clamp(rint(x * s)), exact int32 sum, then
 * (isum * scale) / s + bias, NaN when the window holds NaN or Inf. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "conv/tconv_internal.h"
#include "obx_common.h"

/* Output columns [lo, hi) whose input column ow * stride + offset is inside [0, in_w). */
static void valid_columns(ptrdiff_t offset, size_t stride, size_t in_w, size_t out_w, size_t *lo, size_t *hi) {
    ptrdiff_t s = (ptrdiff_t)stride;
    ptrdiff_t first = offset >= 0 ? 0 : (-offset + s - 1) / s;
    ptrdiff_t last = (ptrdiff_t)in_w - 1 - offset; /* ow * stride <= last */
    ptrdiff_t end = last < 0 ? 0 : last / s + 1;
    if (end > (ptrdiff_t)out_w) end = (ptrdiff_t)out_w;
    if (first > end) first = end;
    *lo = (size_t)first;
    *hi = (size_t)end;
}

/* The input row a tap reads for output row oh, or NULL when it is padding. */
static const float *tap_row(const obx_conv_geometry *g, const float *plane, size_t oh, size_t i) {
    ptrdiff_t ih = (ptrdiff_t)(oh * g->stride_h + i * g->dilation_h) - (ptrdiff_t)g->pad_top;
    return ih < 0 || ih >= (ptrdiff_t)g->in_h ? NULL : plane + ih * (ptrdiff_t)g->in_w;
}

static void depthwise_f32(const obx_conv_geometry *g, const float *plane, const int8_t *codes, float *out) {
    const size_t out_w = g->out_w, stride = g->stride_w;
    memset(out, 0, g->out_h * out_w * sizeof *out);
    for (size_t i = 0; i < g->kernel_h; i++) {
        for (size_t j = 0; j < g->kernel_w; j++) {
            const float wv = (float)codes[i * g->kernel_w + j];
            ptrdiff_t offset = (ptrdiff_t)(j * g->dilation_w) - (ptrdiff_t)g->pad_left;
            size_t lo, hi;
            valid_columns(offset, stride, g->in_w, out_w, &lo, &hi);
            for (size_t oh = 0; oh < g->out_h; oh++) {
                const float *row = tap_row(g, plane, oh, i);
                if (!row) continue;
                float *dst = out + oh * out_w;
                const float *src = row + offset;
                if (stride == 1) {
                    for (size_t ow = lo; ow < hi; ow++) dst[ow] += src[ow] * wv;
                } else {
                    for (size_t ow = lo; ow < hi; ow++) dst[ow] += src[ow * stride] * wv;
                }
            }
        }
    }
}

/* Per output position: the int8 scale of its window (scale) and whether the
 * window holds NaN or Inf (bad). */
static void window_scales(const obx_conv_geometry *g, const float *plane, float *scale, uint8_t *bad) {
    const size_t positions = g->out_h * g->out_w, stride = g->stride_w;
    for (size_t p = 0; p < positions; p++) scale[p] = 0.0f;
    memset(bad, 0, positions);
    for (size_t i = 0; i < g->kernel_h; i++) {
        for (size_t j = 0; j < g->kernel_w; j++) {
            ptrdiff_t offset = (ptrdiff_t)(j * g->dilation_w) - (ptrdiff_t)g->pad_left;
            size_t lo, hi;
            valid_columns(offset, stride, g->in_w, g->out_w, &lo, &hi);
            for (size_t oh = 0; oh < g->out_h; oh++) {
                const float *row = tap_row(g, plane, oh, i);
                if (!row) continue;
                float *amax = scale + oh * g->out_w;
                uint8_t *flag = bad + oh * g->out_w;
                for (size_t ow = lo; ow < hi; ow++) {
                    float a = fabsf(row[(ptrdiff_t)(ow * stride) + offset]);
                    flag[ow] |= !(a <= FLT_MAX);
                    amax[ow] = a > amax[ow] ? a : amax[ow];
                }
            }
        }
    }
    for (size_t p = 0; p < positions; p++) scale[p] = 127.0f * (1.0f / fmaxf(scale[p], 1e-5f));
}

static void depthwise_i8(const obx_conv_geometry *g, const float *plane, const int8_t *codes, float weight_scale,
                         const float *bias, float *out, void *scratch) {
    const size_t positions = g->out_h * g->out_w, stride = g->stride_w;
    float *scale = scratch;
    int32_t *isum = (int32_t *)(scale + positions);
    uint8_t *bad = (uint8_t *)(isum + positions);
    window_scales(g, plane, scale, bad);
    memset(isum, 0, positions * sizeof *isum);
    for (size_t i = 0; i < g->kernel_h; i++) {
        for (size_t j = 0; j < g->kernel_w; j++) {
            const int32_t code = codes[i * g->kernel_w + j];
            if (code == 0) continue; /* exact: the sum is integer */
            ptrdiff_t offset = (ptrdiff_t)(j * g->dilation_w) - (ptrdiff_t)g->pad_left;
            size_t lo, hi;
            valid_columns(offset, stride, g->in_w, g->out_w, &lo, &hi);
            for (size_t oh = 0; oh < g->out_h; oh++) {
                const float *row = tap_row(g, plane, oh, i);
                if (!row) continue;
                const float *s = scale + oh * g->out_w;
                int32_t *acc = isum + oh * g->out_w;
                for (size_t ow = lo; ow < hi; ow++) {
                    /* fmaxf/fminf also turn a NaN product into a defined value; such positions output NaN. */
                    float q = fminf(fmaxf(rintf(row[(ptrdiff_t)(ow * stride) + offset] * s[ow]), -128.0f), 127.0f);
                    acc[ow] += code * (int32_t)q;
                }
            }
        }
    }
    for (size_t p = 0; p < positions; p++) {
        float y = ((float)isum[p] * weight_scale) / scale[p];
        if (bias) y = y + *bias; /* only when given, as obx_tmm_compute (keeps -0.0f) */
        out[p] = bad[p] ? NAN : y;
    }
}

void obx_tconv_depthwise_plane(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                               const float *bias, int act_quant, float *y, size_t image, size_t channel,
                               void *scratch) {
    const size_t positions = g->out_h * g->out_w;
    const size_t input_channel = channel / w->m_per_group;
    const float *plane = x + (image * g->channels + input_channel) * g->in_h * g->in_w;
    const int8_t *codes = w->codes + channel * w->kernel_positions;
    float *out = y + (image * w->m + channel) * positions;
    const float b = bias ? bias[channel] : 0.0f;
    if (act_quant == OBX_ACT_INT8_TOKEN) {
        depthwise_i8(g, plane, codes, w->scales[channel], bias ? bias + channel : NULL, out, scratch);
        return;
    }
    depthwise_f32(g, plane, codes, out);
    const float s = w->scales[channel];
    if (bias) {
        for (size_t p = 0; p < positions; p++) out[p] = out[p] * s + b;
    } else {
        for (size_t p = 0; p < positions; p++) out[p] = out[p] * s;
    }
}
