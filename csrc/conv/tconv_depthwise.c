/* Direct depthwise ternary convolution (C / group == 1): each output channel
 * reads one input plane in place, one kernel tap at a time over whole output
 * rows (the row kernels of tconv_rows.h, built per ISA). im2col would copy
 * every input value kH * kW times for a K of only kH * kW.
 *
 * Arithmetic per output value, as obx_tmm_compute computes one im2col row:
 * float: (sum over taps, in (kh, kw) order, of x * w) * scale + bias;
 * act_quant: the window's absmax scale s (act_quant = 2: s = act_scale for
 * every window), q = clamp(rint(x * s)), exact int32 sum, then
 * (isum * scale) / s + bias, NaN when the window holds NaN or Inf. */
#include <math.h>
#include <string.h>

#include "conv/tconv_internal.h"
#include "isa/platform.h"
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

/* One tap over every output row: fn(context, destination offset, source row, count). */
typedef void (*tap_visit_fn)(void *context, size_t out_offset, const float *src, size_t count);

static void for_each_tap_row(const obx_conv_geometry *g, const float *plane, size_t i, size_t j, tap_visit_fn fn,
                             void *context) {
    ptrdiff_t offset = (ptrdiff_t)(j * g->dilation_w) - (ptrdiff_t)g->pad_left;
    size_t lo, hi;
    valid_columns(offset, g->stride_w, g->in_w, g->out_w, &lo, &hi);
    if (lo >= hi) return;
    for (size_t oh = 0; oh < g->out_h; oh++) {
        const float *row = tap_row(g, plane, oh, i);
        if (row) fn(context, oh * g->out_w + lo, row + offset + (ptrdiff_t)(lo * g->stride_w), hi - lo);
    }
}

typedef struct TapContext {
    const struct tconv_row_kernels *rows;
    size_t stride;
    float weight;
    int32_t code;
    float *out;
    int32_t *ints;
    const float *scale;
} TapContext;

static void visit_f32(void *context, size_t at, const float *src, size_t count) {
    TapContext *c = context;
    c->rows->accumulate_f32(c->out + at, src, c->stride, c->weight, count);
}

static void visit_absmax(void *context, size_t at, const float *src, size_t count) {
    TapContext *c = context;
    c->rows->absmax_bits(c->ints + at, src, c->stride, count);
}

static void visit_i8(void *context, size_t at, const float *src, size_t count) {
    TapContext *c = context;
    c->rows->accumulate_i8(c->ints + at, src, c->stride, c->scale + at, c->code, count);
}

static void depthwise_f32(const obx_conv_geometry *g, const float *plane, const int8_t *codes, float *out) {
    TapContext c = {obx_platform()->conv_rows, g->stride_w, 0.0f, 0, out, NULL, NULL};
    memset(out, 0, g->out_h * g->out_w * sizeof *out);
    for (size_t i = 0; i < g->kernel_h; i++) {
        for (size_t j = 0; j < g->kernel_w; j++) {
            c.weight = (float)codes[i * g->kernel_w + j]; /* zero codes too: Inf * 0 is NaN, as in a matmul */
            for_each_tap_row(g, plane, i, j, visit_f32, &c);
        }
    }
}

/* Per output position: the int8 scale of its window (scale) and whether the
 * window holds NaN or Inf (bad). The absmax runs on IEEE bit patterns: for
 * non-negative floats they order as the values do, with Inf above every
 * finite value and NaN above Inf. */
static void window_scales(const obx_conv_geometry *g, const float *plane, float *scale, uint8_t *bad) {
    const size_t positions = g->out_h * g->out_w;
    int32_t *magnitude = (int32_t *)scale; /* bit patterns first, scales after */
    memset(magnitude, 0, positions * sizeof *magnitude);
    TapContext c = {obx_platform()->conv_rows, g->stride_w, 0.0f, 0, NULL, magnitude, NULL};
    for (size_t i = 0; i < g->kernel_h; i++)
        for (size_t j = 0; j < g->kernel_w; j++) for_each_tap_row(g, plane, i, j, visit_absmax, &c);
    c.rows->window_scales(scale, bad, positions);
}

static void depthwise_i8(const obx_conv_geometry *g, const float *plane, const int8_t *codes, float weight_scale,
                         float act_scale, const float *bias, float *out, void *scratch) {
    const size_t positions = g->out_h * g->out_w;
    float *scale = scratch;
    int32_t *isum = (int32_t *)(scale + positions);
    uint8_t *bad = (uint8_t *)(isum + positions);
    window_scales(g, plane, scale, bad);
    /* Static scale: the absmax pass above still flags windows holding NaN or Inf. */
    if (act_scale > 0.0f)
        for (size_t p = 0; p < positions; p++) scale[p] = act_scale;
    memset(isum, 0, positions * sizeof *isum);
    TapContext c = {obx_platform()->conv_rows, g->stride_w, 0.0f, 0, NULL, isum, scale};
    for (size_t i = 0; i < g->kernel_h; i++) {
        for (size_t j = 0; j < g->kernel_w; j++) {
            c.code = codes[i * g->kernel_w + j];
            if (c.code != 0) for_each_tap_row(g, plane, i, j, visit_i8, &c); /* exact: the sum is integer */
        }
    }
    /* The bias is added only when given, as obx_tmm_compute does (keeps -0.0f). */
    c.rows->finish_i8(out, isum, scale, bad, weight_scale, bias, positions);
}

void obx_tconv_depthwise_plane(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                               const float *bias, int act_quant, float act_scale, float *y, size_t image,
                               size_t channel, void *scratch) {
    const size_t positions = g->out_h * g->out_w;
    const size_t input_channel = channel / w->m_per_group;
    const float *plane = x + (image * g->channels + input_channel) * g->in_h * g->in_w;
    const int8_t *codes = w->codes + channel * w->kernel_positions;
    float *out = y + (image * w->m + channel) * positions;
    if (act_quant != OBX_ACT_NONE) {
        depthwise_i8(g, plane, codes, w->scales[channel], act_quant == OBX_ACT_INT8_STATIC ? act_scale : 0.0f,
                     bias ? bias + channel : NULL, out, scratch);
        return;
    }
    depthwise_f32(g, plane, codes, out);
    const float s = w->scales[channel];
    if (bias) {
        const float b = bias[channel];
        for (size_t p = 0; p < positions; p++) out[p] = out[p] * s + b;
    } else {
        for (size_t p = 0; p < positions; p++) out[p] = out[p] * s;
    }
}
