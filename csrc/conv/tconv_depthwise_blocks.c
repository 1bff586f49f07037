/* Depthwise convolution with float activations (or int8 ones per window,
 * tconv_window_quant) on small planes, 16 channels at a time as the lanes
 * of a vector (channel multiplier 1). A task transposes its 16 planes to a
 * channels-last tile, runs every output pixel over its taps with each tap's
 * 16 weights in one register, and transposes the 16 output planes back. The
 * tile stays in L1 or L2, at any stride or dilation.
 *
 * With float activations the tile is padded with zeros, so that every tap
 * of every output lies inside it, and one call runs the block's whole
 * output plane, each tap at a constant shift (depthwise_block_plane_f32).
 * Before, a table of the tile pixel each tap reads (one pixel of zeros for
 * the padding) took the outputs at the edges, a quarter of them on 512 x
 * 14x14 at stride 2, and runs along each row the rest. The int8 kernel
 * (depthwise_block_i8) keeps the table and an unpadded tile.
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
 * rule (tconv_depthwise.c choose_path) takes smaller ones still. */
enum { BLOCK_MAX_PIXELS = 1024, DW_BLOCK_LANES = 16 };

typedef struct BlockJob {
    const obx_tconv_weights *w;
    const obx_conv_geometry *g;
    const struct tconv_row_kernels *rows;
    tconv_image img; /* this image */
    const float *bias;
    const tconv_window_quant *wq; /* int8 activations per window, or NULL */
    /* Float activations: the tile is padded (tile_h x tile_w pixels, the
     * input at pad_top, pad_left), so every output's taps lie inside it and
     * every output reads its taps at constant shifts (depthwise_block_plane_f32);
     * delta[t]: tap t's tile pixel from the window's corner. */
    size_t tile_h, tile_w;
    const size_t *delta;
    /* int8 activations: the tile unpadded with one pixel of zeros after it,
     * [output pixel][tap]: the tile pixel read, `pixels` (the zeros) in the padding */
    const uint32_t *index;
    const uint32_t *at; /* [input pixel]: its place in the tile, in floats */
    int failed;
} BlockJob;

/* The padded tile of the float path: its rows and columns reach the input's
 * far edge and the last output's last tap, whichever is further. (Rows
 * rounded up to an odd number of pixels, in one process against this on
 * 512 x 14x14 stride 2: 6-8% slower on AVX-512, 5% faster on AVX2 with
 * float activations, the same with act_quant 3.) */
static void padded_tile(const obx_conv_geometry *g, size_t *tile_h, size_t *tile_w) {
    *tile_h = OBX_MAX(g->pad_top + g->in_h, (g->out_h - 1) * g->stride_h + (g->kernel_h - 1) * g->dilation_h + 1);
    *tile_w = OBX_MAX(g->pad_left + g->in_w, (g->out_w - 1) * g->stride_w + (g->kernel_w - 1) * g->dilation_w + 1);
}

int tconv_depthwise_blocks_fit(const obx_tconv_weights *w, const obx_conv_geometry *g) {
    /* outputs and the padded tile bounded too: large pads make more of them
     * than pixels (a tile row each) */
    size_t tile_h, tile_w;
    padded_tile(g, &tile_h, &tile_w);
    return w->m_per_group == 1 && g->in_h * g->in_w <= BLOCK_MAX_PIXELS &&
           g->out_h * g->out_w <= 2 * BLOCK_MAX_PIXELS && tile_h * tile_w <= 2 * BLOCK_MAX_PIXELS;
}

static void block_task(void *arg, size_t index) {
    BlockJob *job = arg;
    const obx_tconv_weights *w = job->w;
    const obx_conv_geometry *g = job->g;
    const size_t lanes = DW_BLOCK_LANES, taps = w->kernel_positions;
    const size_t pixels = g->in_h * g->in_w, positions = g->out_h * g->out_w;
    const size_t tile_pixels = job->wq ? pixels + 1 : job->tile_h * job->tile_w;
    const size_t o0 = index * lanes, count = OBX_MIN(lanes, w->m - o0);
    /* weights, scales, bias; the tile; the outputs */
    float *weight = tconv_thread_buffer(TCONV_BUFFER_TILE, (taps + 2 + tile_pixels + positions) * lanes);
    if (!weight) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    float *scale = weight + taps * lanes, *bias = scale + lanes, *tile = bias + lanes, *out = tile + tile_pixels * lanes;
    /* Lanes past the last channel compute on zeros and are not written back. */
    if (count < lanes) memset(weight, 0, (taps + 2) * lanes * sizeof(float));
    for (size_t t = 0; t < taps; t++) memcpy(weight + t * lanes, w->weights + t * w->m + o0, count * sizeof(float));
    memcpy(scale, w->scales + o0, count * sizeof(float));
    if (job->bias) memcpy(bias, job->bias + o0, count * sizeof(float));
    const float *planes = job->img.x + o0 * pixels;
    const float *bias_or_null = job->bias ? bias : NULL;
    if (job->wq) {
        memset(tile + pixels * lanes, 0, lanes * sizeof(float));
        job->rows->block_tile(tile, job->at, planes, count, pixels, pixels, NULL, NULL);
        job->rows->depthwise_block_i8(out, tile, positions, job->index, weight, taps, job->wq->static_scale, scale,
                                      bias_or_null);
    } else {
        /* act_quant 3: each pixel's 16 channels share its scale, so the tile is
         * dequantized as it is transposed (tconv_rows.h); dequantizing each plane
         * first wrote and reread a copy of them and cost a fifth of a 512 @14x14
         * stride-2 call. The padding stays 0: only the inside is written. */
        tconv_zero_margins(tile, tile_pixels * lanes, job->tile_w * lanes, g->pad_top, g->pad_left * lanes, g->in_h,
                           g->in_w * lanes);
        job->rows->block_tile(tile, job->at, planes, count, pixels, pixels, job->img.dq_scale, job->img.dq_inverse);
        job->rows->depthwise_block_plane_f32(out, tile, g->out_h, g->out_w, g->stride_h * job->tile_w, g->stride_w,
                                             job->delta, weight, taps, scale, bias_or_null);
    }
    job->rows->transpose(out, positions, count, lanes, job->img.y + o0 * positions, positions);
}

int tconv_compute_depthwise_blocks(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                   const float *bias, const tconv_pixel_dequant *dq,
                                   const tconv_window_quant *wq, float *y, obx_parallel_for_fn par, void *runner,
                                   char *err, size_t err_len) {
    const size_t taps = w->kernel_positions, pixels = g->in_h * g->in_w, positions = g->out_h * g->out_w;
    const size_t lanes = DW_BLOCK_LANES;
    BlockJob job = {.w = w, .g = g, .rows = obx_platform()->conv_rows, .bias = bias, .wq = wq};
    padded_tile(g, &job.tile_h, &job.tile_w);
    if (wq && positions > SIZE_MAX / sizeof(ptrdiff_t) / (taps + 1)) {
        obx_set_error(err, err_len, "the output is too large for its depthwise tap table");
        return -1;
    }
    /* each input pixel's place in the tile; then the tap shifts (float activations) or
     * the tap table and one output's pixels (tconv_tap_pixels, int8 activations) */
    const size_t words = pixels + (wq ? positions * taps + taps * sizeof(ptrdiff_t) / sizeof(uint32_t) + 2
                                      : taps * sizeof(size_t) / sizeof(uint32_t) + 2);
    uint32_t *at = (uint32_t *)tconv_thread_buffer(TCONV_BUFFER_IMAGE, words);
    if (!at) {
        obx_set_error(err, err_len, "out of memory for the depthwise tap table");
        return -1;
    }
    /* row by row: a division per pixel was a serial microsecond of a 14x14 call */
    for (size_t r = 0, p = 0; r < g->in_h; r++)
        for (size_t c = 0; c < g->in_w; c++, p++)
            at[p] = (uint32_t)(lanes * (wq ? p : (g->pad_top + r) * job.tile_w + g->pad_left + c));
    job.at = at;
    void *rest = at + OBX_DIV_UP(pixels, 2) * 2; /* 8-byte aligned */
    if (!wq) {
        size_t *delta = rest;
        for (size_t t = 0; t < taps; t++)
            delta[t] = (t / g->kernel_w) * g->dilation_h * job.tile_w + (t % g->kernel_w) * g->dilation_w;
        job.delta = delta;
    } else {
        uint32_t *table = rest;
        ptrdiff_t *pixel = (ptrdiff_t *)(table + OBX_DIV_UP(positions * taps, 2) * 2);
        for (size_t p = 0; p < positions; p++) {
            tconv_tap_pixels(g, p, pixel);
            for (size_t t = 0; t < taps; t++)
                table[p * taps + t] = (uint32_t)(pixel[t] < 0 ? pixels : (size_t)pixel[t]);
        }
        job.index = table;
    }
    const size_t tasks = OBX_DIV_UP(w->m, (size_t)DW_BLOCK_LANES);
    tconv_run_images(g, w->m, x, y, dq, &job.img, &job.failed, par, runner, block_task, &job, tasks);
    if (job.failed) {
        obx_set_error(err, err_len, "out of memory for a depthwise channel block");
        return -1;
    }
    return 0;
}
