/* Conv attribute checks and output geometry (ONNX Conv rules, auto_pad included). */
#include "obx_common.h"
#include "onnxbit/tconv.h"

OBX_API int obx_conv_params_check(const obx_conv_params *p, char *err, size_t err_len) {
    if (p->spatial_rank != 1 && p->spatial_rank != 2) {
        obx_set_error(err, err_len, "only 1-D and 2-D convolutions are supported (weight rank 3 or 4), "
                      "got %zu spatial dimensions", p->spatial_rank);
        return -1;
    }
    for (size_t i = 0; i < p->spatial_rank + 2; i++) {
        if (p->weight_shape[i] <= 0 || p->weight_shape[i] > (int64_t)1 << 30) {
            obx_set_error(err, err_len, "weight_shape[%zu] = %lld must be in [1, 2^30]", i,
                          (long long)p->weight_shape[i]);
            return -1;
        }
    }
    if (p->group <= 0 || p->weight_shape[0] % p->group != 0) {
        obx_set_error(err, err_len, "group = %lld must be positive and divide M = %lld", (long long)p->group,
                      (long long)p->weight_shape[0]);
        return -1;
    }
    for (size_t i = 0; i < p->spatial_rank; i++) {
        if (p->strides[i] <= 0 || p->strides[i] > (int64_t)1 << 30 || p->dilations[i] <= 0 ||
            p->dilations[i] > (int64_t)1 << 30) {
            obx_set_error(err, err_len, "strides and dilations must be in [1, 2^30], got stride %lld "
                          "dilation %lld on axis %zu", (long long)p->strides[i], (long long)p->dilations[i], i);
            return -1;
        }
        if (p->pads[i] < 0 || p->pads[i + p->spatial_rank] < 0 || p->pads[i] > (int64_t)1 << 30 ||
            p->pads[i + p->spatial_rank] > (int64_t)1 << 30) {
            obx_set_error(err, err_len, "pads must be in [0, 2^30], got %lld and %lld on axis %zu",
                          (long long)p->pads[i], (long long)p->pads[i + p->spatial_rank], i);
            return -1;
        }
    }
    if (p->auto_pad < OBX_AUTO_PAD_NOTSET || p->auto_pad > OBX_AUTO_PAD_VALID) {
        obx_set_error(err, err_len, "unknown auto_pad %d", p->auto_pad);
        return -1;
    }
    int64_t k = p->weight_shape[1];
    for (size_t i = 0; i < p->spatial_rank; i++) k *= p->weight_shape[2 + i];
    if (k > OBX_TMM_MAX_K) {
        obx_set_error(err, err_len, "the reduction C/group * kernel = %lld is too large (at most %d)",
                      (long long)k, OBX_TMM_MAX_K);
        return -1;
    }
    return 0;
}

/* One spatial axis: output length and leading pad. */
static int axis_geometry(int64_t in, int64_t kernel, int64_t stride, int64_t dilation, int64_t pad_begin,
                         int64_t pad_end, int auto_pad, size_t *out, size_t *lead, size_t axis, char *err,
                         size_t err_len) {
    int64_t span = (kernel - 1) * dilation + 1;
    if (auto_pad == OBX_AUTO_PAD_SAME_UPPER || auto_pad == OBX_AUTO_PAD_SAME_LOWER) {
        int64_t length = (in + stride - 1) / stride;
        int64_t total = (length - 1) * stride + span - in;
        if (total < 0) total = 0;
        *out = (size_t)length;
        *lead = (size_t)(auto_pad == OBX_AUTO_PAD_SAME_UPPER ? total / 2 : (total + 1) / 2);
        return 0;
    }
    if (auto_pad == OBX_AUTO_PAD_VALID) pad_begin = pad_end = 0;
    int64_t padded = in + pad_begin + pad_end;
    if (padded < span) {
        obx_set_error(err, err_len, "spatial axis %zu: the dilated kernel spans %lld but the padded input is "
                      "%lld long", axis, (long long)span, (long long)padded);
        return -1;
    }
    *out = (size_t)((padded - span) / stride + 1);
    *lead = (size_t)pad_begin;
    return 0;
}

OBX_API int obx_conv_geometry_init(obx_conv_geometry *g, const obx_conv_params *p, const int64_t *x_dims,
                                   size_t x_rank, char *err, size_t err_len) {
    if (x_rank != p->spatial_rank + 2) {
        obx_set_error(err, err_len, "X has rank %zu; a %zu-D convolution needs rank %zu", x_rank,
                      p->spatial_rank, p->spatial_rank + 2);
        return -1;
    }
    for (size_t i = 0; i < x_rank; i++) {
        if (x_dims[i] < 0 || x_dims[i] > (int64_t)1 << 31) {
            obx_set_error(err, err_len, "X dimension %zu = %lld is out of range", i, (long long)x_dims[i]);
            return -1;
        }
    }
    int64_t cg = p->weight_shape[1];
    if (x_dims[1] != cg * p->group) {
        obx_set_error(err, err_len, "X has %lld channels; weight_shape C/group = %lld times group = %lld "
                      "needs %lld", (long long)x_dims[1], (long long)cg, (long long)p->group,
                      (long long)(cg * p->group));
        return -1;
    }
    int two_d = p->spatial_rank == 2;
    g->batch = (size_t)x_dims[0];
    g->channels = (size_t)x_dims[1];
    g->in_h = two_d ? (size_t)x_dims[2] : 1;
    g->in_w = (size_t)x_dims[x_rank - 1];
    g->out_channels = (size_t)p->weight_shape[0];
    g->group = (size_t)p->group;
    g->kernel_h = two_d ? (size_t)p->weight_shape[2] : 1;
    g->kernel_w = (size_t)p->weight_shape[p->spatial_rank + 1];
    g->stride_h = two_d ? (size_t)p->strides[0] : 1;
    g->stride_w = (size_t)p->strides[p->spatial_rank - 1];
    g->dilation_h = two_d ? (size_t)p->dilations[0] : 1;
    g->dilation_w = (size_t)p->dilations[p->spatial_rank - 1];
    size_t w_axis = p->spatial_rank - 1;
    if (axis_geometry((int64_t)g->in_w, (int64_t)g->kernel_w, (int64_t)g->stride_w, (int64_t)g->dilation_w,
                      p->pads[w_axis], p->pads[w_axis + p->spatial_rank], p->auto_pad, &g->out_w, &g->pad_left,
                      w_axis, err, err_len) != 0)
        return -1;
    if (two_d) {
        if (axis_geometry((int64_t)g->in_h, (int64_t)g->kernel_h, (int64_t)g->stride_h, (int64_t)g->dilation_h,
                          p->pads[0], p->pads[2], p->auto_pad, &g->out_h, &g->pad_top, 0, err, err_len) != 0)
            return -1;
    } else {
        g->out_h = 1;
        g->pad_top = 0;
    }
    return 0;
}

size_t tconv_tap_pixels(const obx_conv_geometry *g, size_t p, ptrdiff_t *pixel) {
    const ptrdiff_t h0 = (ptrdiff_t)((p / g->out_w) * g->stride_h) - (ptrdiff_t)g->pad_top;
    const ptrdiff_t w0 = (ptrdiff_t)((p % g->out_w) * g->stride_w) - (ptrdiff_t)g->pad_left;
    size_t t = 0;
    for (size_t i = 0; i < g->kernel_h; i++) {
        const ptrdiff_t ih = h0 + (ptrdiff_t)(i * g->dilation_h);
        const int row_inside = ih >= 0 && ih < (ptrdiff_t)g->in_h;
        for (size_t j = 0; j < g->kernel_w; j++, t++) {
            const ptrdiff_t iw = w0 + (ptrdiff_t)(j * g->dilation_w);
            pixel[t] = row_inside && iw >= 0 && iw < (ptrdiff_t)g->in_w ? ih * (ptrdiff_t)g->in_w + iw : -1;
        }
    }
    return t;
}
