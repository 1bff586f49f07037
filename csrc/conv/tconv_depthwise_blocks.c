/* Depthwise convolution with float activations (or int8 ones per window,
 * tconv_window_quant) on small planes, 16 channels
 * at a time as the lanes of a vector (channel multiplier 1). A task
 * transposes its 16 planes to a channels-last tile with one pixel of zeros
 * after it, runs every output pixel over its taps with each tap's 16 weights
 * in one register (depthwise_block_f32 from a table of the tile pixel each
 * tap reads, a padding tap reading the zeros; with float activations the
 * outputs whose taps all lie inside go in runs along their row at constant
 * shifts instead, depthwise_block_run_f32), and transposes the 16 output
 * planes back. The tile stays in L1 or L2, at any
 * stride or dilation; which tile pixel each tap reads is worked out once a
 * call, for all blocks.
 *
 * The plane-as-lanes paths do not suit small planes: a 14x14 plane has 14
 * outputs a row, and a 7x7 output a quarter of a 16-lane grid. Before this
 * path, 512 x 14x14 at stride 2 took 0.12 ms against onnxruntime fp32 Conv's
 * 0.06 ms; the channels-last path transposed all channels at once, which
 * left the tile in L2 and took 83 us.
 *
 * Arithmetic: the documented float order (tconv_depthwise.c), a padding tap
 * adding x * w = +-0 (a sum that starts at +0 never becomes -0). */
#include <string.h>

#include "conv/tconv_internal.h"
#include "isa/platform.h"
#include "obx_common.h"

/* Input planes up to this many pixels (a 16-lane tile of 64 KiB); the size
 * rule (tconv_depthwise.c float_path) takes smaller ones still. */
enum { BLOCK_MAX_PIXELS = 1024, DW_BLOCK_LANES = 16 };

typedef struct BlockJob {
    const obx_tconv_weights *w;
    const obx_conv_geometry *g;
    const struct tconv_row_kernels *rows;
    tconv_image img; /* this image */
    const float *bias;
    const uint32_t *index; /* [output pixel][tap]: the tile pixel read, `pixels` (the zeros) in the padding */
    const tconv_window_quant *wq; /* int8 activations per window, or NULL */
    /* Float activations: the outputs whose taps all lie inside, rows
     * [inside_h0, inside_h1) x columns [inside_w0, inside_w1), run without the
     * table (depthwise_block_run_f32); delta[t]: tap t's tile pixel from the
     * window's corner. */
    size_t inside_h0, inside_h1, inside_w0, inside_w1;
    const size_t *delta;
    int failed;
} BlockJob;

/* The outputs along one axis whose taps all lie inside [0, in): [*first, *last). */
static void inside_range(size_t out, size_t in, size_t stride, size_t pad, size_t kernel, size_t dilation,
                         size_t *first, size_t *last) {
    const size_t reach = (kernel - 1) * dilation; /* the window's last tap from its first */
    *first = OBX_MIN(out, OBX_DIV_UP(pad, stride));
    *last = *first;
    if (in < reach + 1) return;
    /* o * stride - pad + reach <= in - 1 */
    const size_t limit = (in - 1 - reach + pad) / stride + 1;
    *last = OBX_MAX(*first, OBX_MIN(out, limit));
}

/* Output row oh's pixels [from, to) with the table. */
static void table_outputs(const BlockJob *job, float *out, const float *tile, size_t from, size_t to,
                          const float *weight, const float *scale, const float *bias) {
    const size_t taps = job->w->kernel_positions;
    if (to > from)
        job->rows->depthwise_block_f32(out + from * DW_BLOCK_LANES, tile, to - from, job->index + from * taps, weight,
                                       taps, scale, bias);
}

/* Float activations: each output row's inside run without the table, its
 * edges (and the rows with taps in the padding) with it. */
static void float_outputs(const BlockJob *job, float *out, const float *tile, const float *weight, const float *scale,
                          const float *bias) {
    const obx_conv_geometry *g = job->g;
    const size_t taps = job->w->kernel_positions, ow = g->out_w;
    for (size_t oh = 0; oh < g->out_h; oh++) {
        const size_t row = oh * ow;
        if (oh < job->inside_h0 || oh >= job->inside_h1 || job->inside_w1 == job->inside_w0) {
            table_outputs(job, out, tile, row, row + ow, weight, scale, bias);
            continue;
        }
        table_outputs(job, out, tile, row, row + job->inside_w0, weight, scale, bias);
        const size_t corner = (oh * g->stride_h - g->pad_top) * g->in_w + job->inside_w0 * g->stride_w - g->pad_left;
        job->rows->depthwise_block_run_f32(out + (row + job->inside_w0) * DW_BLOCK_LANES, tile + corner * DW_BLOCK_LANES,
                                           job->inside_w1 - job->inside_w0, g->stride_w, job->delta, weight, taps,
                                           scale, bias);
        table_outputs(job, out, tile, row + job->inside_w1, row + ow, weight, scale, bias);
    }
}

int tconv_depthwise_blocks_fit(const obx_tconv_weights *w, const obx_conv_geometry *g) {
    /* outputs bounded too: large pads make more of them than pixels (a tile row each) */
    return w->m_per_group == 1 && g->in_h * g->in_w <= BLOCK_MAX_PIXELS &&
           g->out_h * g->out_w <= 2 * BLOCK_MAX_PIXELS;
}

static void block_task(void *arg, size_t index) {
    BlockJob *job = arg;
    const obx_tconv_weights *w = job->w;
    const obx_conv_geometry *g = job->g;
    const size_t lanes = DW_BLOCK_LANES, taps = w->kernel_positions;
    const size_t pixels = g->in_h * g->in_w, positions = g->out_h * g->out_w;
    const size_t o0 = index * lanes, count = OBX_MIN(lanes, w->m - o0);
    /* weights, scales, bias; the tile and its pixel of zeros; the outputs */
    float *weight = tconv_thread_buffer(TCONV_BUFFER_TILE, (taps + 3 + pixels + positions) * lanes);
    if (!weight) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    float *scale = weight + taps * lanes, *bias = scale + lanes, *tile = bias + lanes, *out = tile + (pixels + 1) * lanes;
    /* Lanes past the last channel compute on zeros and are not written back. */
    if (count < lanes) memset(weight, 0, (taps + 2) * lanes * sizeof(float));
    memset(tile + pixels * lanes, 0, lanes * sizeof(float));
    for (size_t t = 0; t < taps; t++) memcpy(weight + t * lanes, w->weights + t * w->m + o0, count * sizeof(float));
    memcpy(scale, w->scales + o0, count * sizeof(float));
    if (job->bias) memcpy(bias, job->bias + o0, count * sizeof(float));
    const float *planes = job->img.x + o0 * pixels;
    /* act_quant 3: each pixel's 16 channels share its scale, so the tile is
     * dequantized as it is transposed (tconv_rows.h); dequantizing each plane
     * first wrote and reread a copy of them and cost a fifth of a 512 @14x14
     * stride-2 call. */
    if (job->img.dq_scale) {
        job->rows->block_tile_dequantized(tile, planes, count, pixels, pixels, job->img.dq_scale, job->img.dq_inverse);
    } else {
        if (count < lanes) memset(tile, 0, pixels * lanes * sizeof(float));
        job->rows->transpose(planes, count, pixels, pixels, tile, lanes);
    }
    if (job->wq)
        job->rows->depthwise_block_i8(out, tile, positions, job->index, weight, taps, job->wq->static_scale, scale,
                                      job->bias ? bias : NULL);
    else
        float_outputs(job, out, tile, weight, scale, job->bias ? bias : NULL);
    job->rows->transpose(out, positions, count, lanes, job->img.y + o0 * positions, positions);
}

int tconv_compute_depthwise_blocks(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                   const float *bias, const tconv_pixel_dequant *dq,
                                   const tconv_window_quant *wq, float *y, obx_parallel_for_fn par, void *runner,
                                   char *err, size_t err_len) {
    const size_t taps = w->kernel_positions, pixels = g->in_h * g->in_w, positions = g->out_h * g->out_w;
    if (positions > SIZE_MAX / sizeof(ptrdiff_t) / (taps + 1)) {
        obx_set_error(err, err_len, "the output is too large for its depthwise tap table");
        return -1;
    }
    /* the tap table, then one output's pixels (tconv_tap_pixels), then the inside taps' deltas */
    uint32_t *table = (uint32_t *)tconv_thread_buffer(
        TCONV_BUFFER_IMAGE, positions * taps + 2 * taps * sizeof(ptrdiff_t) / sizeof(float) + 2);
    if (!table) {
        obx_set_error(err, err_len, "out of memory for the depthwise tap table");
        return -1;
    }
    ptrdiff_t *pixel = (ptrdiff_t *)(table + OBX_DIV_UP(positions * taps, 2) * 2);
    for (size_t p = 0; p < positions; p++) {
        tconv_tap_pixels(g, p, pixel);
        for (size_t t = 0; t < taps; t++) table[p * taps + t] = (uint32_t)(pixel[t] < 0 ? pixels : (size_t)pixel[t]);
    }
    size_t *delta = (size_t *)(pixel + taps);
    for (size_t t = 0; t < taps; t++)
        delta[t] = (t / g->kernel_w) * g->dilation_h * g->in_w + (t % g->kernel_w) * g->dilation_w;
    BlockJob job = {.w = w, .g = g, .rows = obx_platform()->conv_rows, .bias = bias, .index = table, .wq = wq,
                    .delta = delta};
    inside_range(g->out_h, g->in_h, g->stride_h, g->pad_top, g->kernel_h, g->dilation_h, &job.inside_h0, &job.inside_h1);
    inside_range(g->out_w, g->in_w, g->stride_w, g->pad_left, g->kernel_w, g->dilation_w, &job.inside_w0, &job.inside_w1);
    const size_t tasks = OBX_DIV_UP(w->m, (size_t)DW_BLOCK_LANES);
    tconv_run_images(g, w->m, x, y, dq, &job.img, &job.failed, par, runner, block_task, &job, tasks);
    if (job.failed) {
        obx_set_error(err, err_len, "out of memory for a depthwise channel block");
        return -1;
    }
    return 0;
}
