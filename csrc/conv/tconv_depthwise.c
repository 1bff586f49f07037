/* Direct depthwise ternary convolution (C / group == 1), channels-last: X is
 * copied once per image to [pixel][output channel] (an output channel reads
 * input channel o / multiplier), then each output pixel is its kernel taps'
 * channel runs combined elementwise (tconv_rows.h), a tile of pixels at a
 * time, and the tile is transposed back to NCHW. Across channels every
 * kernel tap is one long vector operation; the earlier plane-at-a-time
 * kernel ran one short row call per tap and output row (14 values at 14x14)
 * and was 0.26x onnxruntime's fp32 Conv on 576 channels at 14x14.
 *
 * Arithmetic per output value, as obx_tmm_compute computes one im2col row:
 * float: (sum over taps, in (kh, kw) order, of x * w) * scale + bias;
 * act_quant: the window's absmax scale s, q = clamp(rint(x * s)), exact int32
 * sum, then (isum * scale) / s + bias, NaN when the window holds NaN or Inf;
 * act_quant 2: the same with s = act_scale for every window.
 * Taps in the padding are skipped (they add 0 and do not raise the absmax).
 *
 * Other paths take most shapes (choose_path): 16-channel blocks on small
 * planes (tconv_depthwise_blocks.c), and NCHW paths without copies to
 * channels-last: 3x3 and 5x5 convs read straight from the planes where the
 * ISA has those kernels (tconv_depthwise_direct.c); at stride 2 the phase planes
 * (tconv_depthwise_phases.c); at stride 1 flat planes (flat_task); with
 * float activations, for larger planes with rows of 32 outputs or more, row
 * by row (plane_task). */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "conv/tconv_internal.h"
#include "isa/platform.h"
#include "obx_common.h"

/* Output pixels per task: their tile (32 x M floats) stays in L2 and is
 * transposed back in whole cache lines. */
enum { DW_TILE_PIXELS = 32, DW_COPY_PIXELS = 64, DW_PLANE_MIN_WIDTH = 32 };
/* Flat planes (flat_task, stride 1), up to 16384 grid outputs (the padded
 * plane and the grid stay in L2; measured faster than plane_task's rows at
 * 56x56 by 2x and at 112x112 by 1.3x). About 4096 outputs a task (a task
 * per 14x14 channel costs more in hand-offs than its arithmetic). */
enum { DW_FLAT_MAX_GRID = 16384, DW_FLAT_TASK_VALUES = 4096 };
enum { DW_LINE_FLOATS = OBX_CACHE_LINE / sizeof(float) };
/* Channel blocks (tconv_depthwise_blocks.c) up to these input pixels: 14x14
 * at stride 1; at stride 2 18x18 with float activations, 24x24 with int8
 * ones (see choose_path). */
enum { DW_BLOCKS_MAX_PIXELS = 196, DW_BLOCKS_MAX_PIXELS_STRIDE2 = 324, DW_BLOCKS_MAX_PIXELS_STRIDE2_INT8 = 576 };
/* Same-size planes (tconv_depthwise_same.c) at stride 1 from 11x11 to 20x20
 * (see choose_path). */
enum { DW_SAME_MIN_PIXELS = 100, DW_SAME_MAX_PIXELS = 400 };


typedef struct DwJob {
    const obx_tconv_weights *w;
    const obx_conv_geometry *g;
    const struct tconv_row_kernels *rows;
    tconv_image img; /* this image */
    float *xt;       /* this image, [pixel][output channel] */
    const float *bias;
    const tconv_window_quant *wq; /* int8 activations per window (channels-last tiles, flat planes), or NULL */
    int failed;
    const size_t *offset;    /* flat planes: each tap's offset in the padded plane from its output's corner */
    size_t padded_w;         /* flat planes: the padded row: pad_left + in_w, or more for the last output's taps */
    size_t band_rows;        /* flat planes: output rows a band (all of them without per_pixel) */
    size_t staged;           /* flat planes: floats of a band's padded plane and the reads past its end */
    size_t lead;             /* flat planes: floats before the padded plane, so its inside rows start on a line */
    size_t grid;             /* flat planes: a band's rows of padded_w outputs, rounded up to 16 */
    size_t channels_per_task;
    int per_pixel;           /* flat planes, act_quant 3: a task is a band of all channels, with its own scales */
} DwJob;

static void copy_task(void *arg, size_t index) {
    const DwJob *job = arg;
    const obx_conv_geometry *g = job->g;
    const size_t pixels = g->in_h * g->in_w, m = job->w->m, multiplier = job->w->m_per_group;
    const size_t p0 = index * DW_COPY_PIXELS, n = OBX_MIN((size_t)DW_COPY_PIXELS, pixels - p0);
    if (multiplier == 1) {
        job->rows->transpose(job->img.x + p0, m, n, pixels, job->xt + p0 * m, m);
        return;
    }
    for (size_t o = 0; o < m; o++) {
        const float *plane = job->img.x + (o / multiplier) * pixels + p0;
        for (size_t p = 0; p < n; p++) job->xt[(p0 + p) * m + o] = plane[p];
    }
}

/* The input pixel each tap of output position p reads, in (kh, kw) order;
 * padding taps left out. Returns how many there are. */
static size_t window_pixels(const obx_conv_geometry *g, size_t p, size_t *tap, size_t *pixel) {
    const ptrdiff_t h0 = (ptrdiff_t)((p / g->out_w) * g->stride_h) - (ptrdiff_t)g->pad_top;
    const ptrdiff_t w0 = (ptrdiff_t)((p % g->out_w) * g->stride_w) - (ptrdiff_t)g->pad_left;
    size_t n = 0;
    for (size_t i = 0; i < g->kernel_h; i++) {
        const ptrdiff_t ih = h0 + (ptrdiff_t)(i * g->dilation_h);
        if (ih < 0 || ih >= (ptrdiff_t)g->in_h) continue;
        for (size_t j = 0; j < g->kernel_w; j++) {
            const ptrdiff_t iw = w0 + (ptrdiff_t)(j * g->dilation_w);
            if (iw < 0 || iw >= (ptrdiff_t)g->in_w) continue;
            tap[n] = i * g->kernel_w + j;
            pixel[n++] = (size_t)(ih * (ptrdiff_t)g->in_w + iw);
        }
    }
    return n;
}

static void tile_task(void *arg, size_t index) {
    DwJob *job = arg;
    const obx_tconv_weights *w = job->w;
    const obx_conv_geometry *g = job->g;
    const struct tconv_row_kernels *rows = job->rows;
    const size_t m = w->m, taps = w->kernel_positions, positions = g->out_h * g->out_w;
    const size_t first = index * DW_TILE_PIXELS, count = OBX_MIN((size_t)DW_TILE_PIXELS, positions - first);
    /* tap and pixel indices, source pointers, the tile */
    size_t floats = 3 * taps * sizeof(size_t) / sizeof(float) + count * m;
    size_t *tap = (size_t *)tconv_thread_buffer(TCONV_BUFFER_TILE, floats);
    if (!tap) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    size_t *pixel = tap + taps;
    const float **src = (const float **)(pixel + taps);
    float *tile = (float *)(src + taps);
    for (size_t r = 0; r < count; r++) {
        const size_t n = window_pixels(g, first + r, tap, pixel);
        float *out = tile + r * m;
        for (size_t t = 0; t < n; t++) src[t] = job->xt + pixel[t] * m;
        if (!job->wq) {
            rows->depthwise_pixel_f32(out, src, w->weights, tap, n, m, w->scales, job->bias);
            continue;
        }
        rows->depthwise_pixel_i8(out, src, w->codes, tap, n, m, job->wq->static_scale, w->scales, job->bias);
    }
    rows->transpose(tile, count, m, m, job->img.y + first, positions);
}

/* Float activations on wide planes: one output row at a time straight from
 * the NCHW plane (tconv_rows.h depthwise_row_f32), no copies. */
static void plane_task(void *arg, size_t index) {
    DwJob *job = arg;
    const obx_tconv_weights *w = job->w;
    const obx_conv_geometry *g = job->g;
    const size_t taps = w->kernel_positions, o = index, pixels = g->in_h * g->in_w;
    const float *plane = job->img.x + (o / w->m_per_group) * pixels;
    float *out = job->img.y + o * g->out_h * g->out_w;
    const float **src = (const float **)tconv_thread_buffer(
        TCONV_BUFFER_TILE, taps * (sizeof(float *) + sizeof(ptrdiff_t) + sizeof(float)) / sizeof(float) + 1);
    if (!src) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    ptrdiff_t *column = (ptrdiff_t *)(src + taps);
    float *weight = (float *)(column + taps);
    for (size_t t = 0; t < taps; t++) {
        column[t] = (ptrdiff_t)((t % g->kernel_w) * g->dilation_w) - (ptrdiff_t)g->pad_left;
        weight[t] = w->weights[t * w->m + o];
    }
    const float *bias = job->bias ? job->bias + o : NULL;
    for (size_t oh = 0; oh < g->out_h; oh++) {
        for (size_t t = 0; t < taps; t++) {
            ptrdiff_t ih = (ptrdiff_t)(oh * g->stride_h + (t / g->kernel_w) * g->dilation_h) - (ptrdiff_t)g->pad_top;
            src[t] = ih < 0 || ih >= (ptrdiff_t)g->in_h ? NULL : plane + ih * (ptrdiff_t)g->in_w;
        }
        job->rows->depthwise_row_f32(out + oh * g->out_w, g->out_w, src, column, weight, taps, g->stride_w, g->in_w,
                                     w->scales[o], bias);
    }
}

void tconv_zero_margins(float *plane, size_t n, size_t width, size_t top, size_t left, size_t rows, size_t cols) {
    if (!rows || !cols) {
        memset(plane, 0, n * sizeof(float));
        return;
    }
    const size_t right = width - left - cols, end = (top + rows) * width - right;
    memset(plane, 0, (top * width + left) * sizeof(float));
    for (size_t r = 0; r + 1 < rows; r++) /* right margin of row r, left one of row r + 1 */
        memset(plane + (top + r) * width + left + cols, 0, (right + left) * sizeof(float));
    memset(plane + end, 0, (n - end) * sizeof(float));
}

/* Float activations at stride 1 on planes up to DW_FLAT_MAX_GRID, a few channels a task,
 * NCHW to NCHW with no transposes (at 576 x 14x14 the channels-last path's
 * two transposes took as long as its arithmetic). Each plane is copied into
 * a zero-padded plane, then computed flat: output (r, c) of a grid with the
 * padded plane's row width reads padded (r, c) + the tap's offset, so every
 * tap of a block of 16 outputs is one vector load, with no masks and no
 * edge cases; every grid row's first out_w are the outputs.
 * A padding tap adds x * w = +-0, as the documented order says (a sum that
 * starts at +0 never becomes -0, so that is the skipped tap too).
 *
 * act_quant 3 (per_pixel) goes in bands of output rows instead, a task each:
 * the band's input rows get their pixel scales over all channels, then each
 * channel's band is dequantized as it is staged and computed the same way.
 * The band's input stays in L2 between the two passes, so X is read from
 * memory once; with one absmax pass over the whole image first it was read
 * twice (the image is larger than L2 on these planes: 144 x 56x56 is 1.8 MB). */
static void flat_task(void *arg, size_t index) {
    DwJob *job = arg;
    const obx_tconv_weights *w = job->w;
    const obx_conv_geometry *g = job->g;
    const size_t taps = w->kernel_positions, pixels = g->in_h * g->in_w, positions = g->out_h * g->out_w;
    const size_t pw = job->padded_w, reach_h = (g->kernel_h - 1) * g->dilation_h;
    size_t oh0, oh1, o0, o1; /* this task's output rows and channels */
    tconv_task_range(job->per_pixel, index, job->band_rows, g->out_h, job->channels_per_task, w->m, &oh0, &oh1, &o0,
                     &o1);
    /* the input rows the band reads: padded rows [oh0, oh1 + reach_h), band row k being padded row oh0 + k */
    const size_t ih0 = oh0 > g->pad_top ? oh0 - g->pad_top : 0;
    const size_t ih1 = OBX_MIN(g->in_h, oh1 + reach_h > g->pad_top ? oh1 + reach_h - g->pad_top : 0);
    const size_t in_rows = ih1 > ih0 ? ih1 - ih0 : 0, band_pixels = in_rows * g->in_w;
    /* tap weights, the band's padded plane, its grid; per_pixel: the band's scales, inverses and flags */
    const size_t scales = job->per_pixel ? tconv_band_scales_floats(band_pixels) : 0;
    const size_t weights = OBX_DIV_UP(taps, DW_LINE_FLOATS) * DW_LINE_FLOATS;
    float *weight = tconv_thread_buffer(TCONV_BUFFER_TILE, weights + job->lead + job->staged + job->grid + scales);
    if (!weight) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    float *padded = weight + weights + job->lead, *grid = padded + job->staged;
    const float *scale = NULL, *inverse = NULL;
    if (job->per_pixel)
        tconv_band_scales(job->rows, job->img.x + ih0 * g->in_w, pixels, g->channels, band_pixels, grid + job->grid,
                          &scale, &inverse);
    else if (job->img.dq_scale)
        scale = job->img.dq_scale + ih0 * g->in_w, inverse = job->img.dq_inverse + ih0 * g->in_w;
    /* The padding stays 0: every channel rewrites the same inside positions. */
    const size_t top = ih0 + g->pad_top - oh0;
    tconv_zero_margins(padded, job->staged, pw, top, g->pad_left, in_rows, g->in_w);
    float *inside = padded + top * pw + g->pad_left;
    for (size_t o = o0; o < o1; o++) {
        for (size_t t = 0; t < taps; t++) weight[t] = w->weights[t * w->m + o];
        const float *plane = job->img.x + (o / w->m_per_group) * pixels + ih0 * g->in_w;
        job->rows->copy_rows(inside, pw, plane, g->in_w, in_rows, g->in_w, scale, inverse);
        tconv_depthwise_band(job->rows, job->wq, job->img.y + o * positions + oh0 * g->out_w, oh1 - oh0, g->out_w,
                             grid, padded, pw, job->grid, job->offset, weight, taps, w->scales[o],
                             job->bias ? job->bias + o : NULL);
    }
}

/* The depthwise paths (choose_path picks one; rows have no int8 kernel). */
enum dw_path { DW_CHANNELS_LAST, DW_ROWS, DW_FLAT, DW_PHASES, DW_BLOCKS, DW_SAME, DW_DIRECT, DW_PATH_COUNT };
static const char *const dw_path_names[DW_PATH_COUNT] = {"channels_last", "rows",  "flat",   "phases",
                                                         "blocks",        "same",  "direct"};

static atomic_size_t path_runs[DW_PATH_COUNT], banded_runs;

OBX_API size_t obx_tconv_depthwise_path_runs(const char *path) {
    if (path && strcmp(path, "banded") == 0) return atomic_load(&banded_runs);
    for (int p = 0; p < DW_PATH_COUNT; p++)
        if (path && strcmp(path, dw_path_names[p]) == 0) return atomic_load(&path_runs[p]);
    return 0;
}

/* The flat grid (flat_task, stride 1): out_h rows of the padded width (at least pad_left + in_w). */
static size_t flat_padded_w(const obx_conv_geometry *g) {
    return OBX_MAX(g->out_w + (g->kernel_w - 1) * g->dilation_w, g->pad_left + g->in_w);
}

static int path_fits(enum dw_path path, const obx_tconv_weights *w, const obx_conv_geometry *g) {
    switch (path) {
    case DW_CHANNELS_LAST: return 1;
    case DW_ROWS: return g->stride_w <= 2;
    case DW_FLAT: return g->stride_h == 1 && g->stride_w == 1 && g->out_h * flat_padded_w(g) <= DW_FLAT_MAX_GRID;
    case DW_PHASES: return tconv_depthwise_phases_fit(g);
    case DW_BLOCKS: return tconv_depthwise_blocks_fit(w, g);
    case DW_SAME: return tconv_depthwise_same_fits(g);
    case DW_DIRECT: return tconv_depthwise_direct_fits(g);
    default: return 0;
    }
}

/* What the path computes on: float activations, int8 ones per window (act_quant 1 and 2; no rows
 * or same-size planes), or int8 ones per pixel (act_quant 3: a float path on X dequantized). */
enum dw_activations { DW_FLOAT, DW_INT8_WINDOWS, DW_INT8_PIXELS };

/* ONNXBIT_DEPTHWISE_PATH names a path to take wherever it fits (tests run
 * every path on every shape, benchmarks compare them). The rule, from
 * one-thread times of each path on MobileNet shapes (3x3, us, blocks against
 * the next choice): channel blocks on small planes (stride 1: 960 @7x7 50
 * against flat 95, 576 @14x14 76 / 126, but 256 @16x16 69 / 68 and 192
 * @28x28 229 / 126; stride 2, where the phase planes' staging is aligned
 * (tconv_depthwise_phases.c), as speed-ups over fp32 Conv, blocks / phases
 * at one thread (two): float 256 @16x16 1.23 / 1.02 (1.37 / 1.31), 256
 * @18x18 1.17 / 1.15 (1.13 / 1.15), 384 @20x20 1.30 / 1.54 (1.28 / 1.35);
 * act_quant 3 384 @20x20 1.01 / 0.94 (1.08 / 0.85), 256 @24x24 0.98 / 1.09
 * (1.03 / 0.88), 192 @28x28 0.92 / 1.16 (0.90 / 0.97), act_quant 1 alike),
 * then phase planes at stride 2, flat planes at stride 1, rows on wide
 * planes past those. Before all of them,
 * same-size planes at stride 1 from 11x11 to 20x20 (one thread, same / blocks
 * / flat, float and act_quant 3: 576 @14x14 107 / 106 / 103 and 122 / 141 /
 * 148, 256 @16x16 64 / 71 / 67 and 65 / 79 / 74; not on 7x7, 960 channels
 * 83 / 56 / 76, where a quarter of the last vector is past the plane, nor
 * past 28x28, 192 channels 120 / 116 / 122 and 231 / 249 / 232, where the
 * copies outgrow L1: at 56x56 same is 1.2-1.3x flat). int8 activations per
 * window (act_quant 1 and 2) take the same rule with the rows left out (they
 * have no int8 kernel). One thread against onnxruntime's fp32 Conv
 * (`onnxbit bench conv` shapes), the channels-last tiles, their only path
 * before / these: 144 @56x56 0.24-0.40x / 0.65x, 96 @112x112 stride 2
 * 0.36-0.41x / 0.97-1.01x, 576 @14x14 0.29-0.49x / 0.60-0.61x, 512 @14x14
 * stride 2 0.27-0.40x / 0.68x. What remains is mostly the two divisions
 * per output the definition asks for (1 / absmax and the final / s).
 * Before all of them, 3x3 convs at stride 1 and 2 and 5x5 ones at stride 1
 * read straight from the planes (tconv_depthwise_direct.c) where the ISA has
 * those kernels (AVX-512, AVX2), on output rows of at least the ISA's
 * direct_min_width, and at stride 2 with float activations on any. Speed-ups
 * over fp32 Conv on a Zen 5 core, one thread (two), direct / the earlier rule's path: float, stride 1, 144
 * @56x56 1.35 / 1.06 flat (2.60 / 1.79), 576 @14x14 1.93 / 1.05 same (2.47 /
 * 1.61), 192 @28x28 2.09 / 1.10 flat (2.25 / 1.24), 384 @20x20 1.63 / 1.08
 * same, 160 @10x10 1.15 / 1.00 blocks, but 128 @8x8 0.97 / 1.01 and 960
 * @7x7 0.81 / 0.95 blocks (a strip of 16 outputs half empty); stride 2, 96
 * @112x112 1.53 / 1.02 phases (1.60 / 1.14), 240 @28x28 1.73 / 1.15 (2.61 /
 * 1.79), 384 @20x20 1.36 / 0.91 blocks (1.97 / 1.26), 512 @14x14 0.95 / 0.91
 * blocks (1.55 / 1.32). act_quant 3: stride 1, 144 @56x56 0.93 / 0.71 flat
 * (1.62 / 1.22), 576 @14x14 1.25 / 0.94 same (1.65 / 1.33), 192 @28x28 1.15
 * / 0.77 flat (1.42 / 1.10); stride 2, 96 @112x112 0.77 / 0.72 phases (0.73
 * / 0.64), 144 @56x56 0.77 / 0.62 (1.41 / 1.13), 192 @28x28 0.96 / 0.83
 * (1.28 / 1.04), but 512 @14x14 0.58 / 0.85 blocks (1.01 / 1.15): on small
 * planes the blocks' dequantization in the transpose costs less than one at
 * every load. 5x5 at stride 1, float, direct / flat: 128 @22x22 1.25 /
 * 0.67, 256 @44x44 1.32 / 0.69, 128 @88x88 1.37 / 0.65. Forced AVX2 on the
 * same core (its fp32 Conv still AVX-512), direct / the earlier rule's path,
 * microseconds: float 144 @56x56 104 / 184 flat, 576 @14x14 35 / 69 same,
 * 960 @7x7 23 / 27 blocks, 96 @112x112 stride 2 173 / 199 phases, 5x5 256
 * @44x44 297 / 434 flat; act_quant 3 144 @56x56 177 / 226 flat, 192 @28x28
 * 69 / 86, and stride 2 96 @112x112 250 / 283 phases (323 before AVX2's strips
 * went in pairs). */
static enum dw_path choose_path(const obx_tconv_weights *w, const obx_conv_geometry *g, enum dw_activations act) {
    const int int8 = act == DW_INT8_WINDOWS;
    const char *name = getenv("ONNXBIT_DEPTHWISE_PATH");
    if (name)
        for (int p = 0; p < DW_PATH_COUNT; p++)
            if (strcmp(name, dw_path_names[p]) == 0 && path_fits((enum dw_path)p, w, g) &&
                !(int8 && (p == DW_ROWS || p == DW_SAME || (p == DW_DIRECT && !tconv_depthwise_direct_i8_fits(g)))))
                return (enum dw_path)p;
    const size_t pixels = g->in_h * g->in_w;
    const int stride2 = g->stride_h == 2 && g->stride_w == 2;
    const struct tconv_row_kernels *rows = obx_platform()->conv_rows;
    int direct_native = 0;
    if (!int8 && path_fits(DW_DIRECT, w, g)) tconv_depthwise_direct_kernel(rows, g, &direct_native);
    /* two channels a vector where their rows fill as many lanes as the narrowest strip: act_quant 3 at stride
     * 2 (one thread, against fp32 Conv, pairs / channel blocks: 512 @14x14 1.06 / 0.93, 64 @16x16 1.05 /
     * 0.95, 160 @10x10 0.92 / 0.92, but 1024 @8x8 0.72 / 0.84), float at stride 1 too (960 @7x7 1.35 / 0.95,
     * 128 @8x8 1.18 / 1.01; act_quant 3 there 0.86 / 0.89) */
    const int pairs = !int8 && path_fits(DW_DIRECT, w, g) && tconv_depthwise_direct_pairs_kernel(rows, g) &&
                      2 * g->out_w >= rows->direct_min_width && (stride2 || act == DW_FLOAT);
    /* int8 activations per window: 3x3 at stride 1 and 2 on the direct planes where the ISA has kernels
     * (one thread against fp32 Conv, direct / the earlier rule's path: stride 1 144 @56x56 0.62 / 0.54 flat,
     * 576 @14x14 0.78 / 0.59, 192 @28x28 0.72 / 0.58, 160 @10x10 0.61 / 0.57 blocks; stride 2 96 @112x112
     * 1.09 / 0.80 phases, 144 @56x56 1.15 / 0.89, 240 @28x28 0.95 / 0.69, 64 @32x32 1.12 / 0.54 blocks;
     * but 960 @7x7 0.24 / 0.50 blocks: half-empty strips); rows of at most 16 columns at stride 2 two
     * channels a vector where they fill as many lanes as the narrowest strip: 512 @14x14 0.97 / 0.62
     * blocks, 64 @16x16 1.03 / 0.68, 160 @10x10 0.86 / 0.76 */
    const int i8_pairs = tconv_depthwise_direct_i8_pair_kernel(rows, g) && 2 * g->out_w >= rows->direct_min_width;
    if (int8 && tconv_depthwise_direct_i8_fits(g) && rows->direct_i8_native[g->stride_h - 1] &&
        (i8_pairs || g->out_w >= rows->direct_min_width))
        return DW_DIRECT;
    if (direct_native &&
        (act == DW_FLOAT ? stride2 || pairs || g->out_w >= rows->direct_min_width
                         : pairs || g->out_w >= rows->direct_min_width))
        return DW_DIRECT;
    if (!int8 && path_fits(DW_SAME, w, g) && pixels > DW_SAME_MIN_PIXELS && pixels <= DW_SAME_MAX_PIXELS)
        return DW_SAME;
    const size_t blocks_max = !stride2          ? DW_BLOCKS_MAX_PIXELS
                              : act == DW_FLOAT ? DW_BLOCKS_MAX_PIXELS_STRIDE2
                                                : DW_BLOCKS_MAX_PIXELS_STRIDE2_INT8;
    if (path_fits(DW_BLOCKS, w, g) && pixels <= blocks_max)
        return DW_BLOCKS;
    if (path_fits(DW_PHASES, w, g)) return DW_PHASES;
    if (path_fits(DW_FLAT, w, g)) return DW_FLAT;
    if (!int8 && path_fits(DW_ROWS, w, g) && g->out_w >= DW_PLANE_MIN_WIDTH) return DW_ROWS;
    return DW_CHANNELS_LAST;
}

static int compute_rows(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x, const float *bias,
                        float *y, obx_parallel_for_fn par, void *runner, char *err, size_t err_len) {
    DwJob job = {.w = w, .g = g, .rows = obx_platform()->conv_rows, .bias = bias};
    tconv_run_images(g, w->m, x, y, NULL, &job.img, &job.failed, par, runner, plane_task, &job, w->m);
    if (job.failed) {
        obx_set_error(err, err_len, "out of memory for a depthwise row");
        return -1;
    }
    return 0;
}

/* The output rows of a flat band with per_pixel, and the rows its windows
 * reach past them (*reach_h). */
static size_t flat_band_rows(const obx_conv_geometry *g, size_t *reach_h) {
    *reach_h = (g->kernel_h - 1) * g->dilation_h;
    /* an output row reads one input row over all channels */
    return tconv_band_rows(g->out_h, g->in_w * g->channels * sizeof(float), *reach_h);
}

static int compute_flat(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x, const float *bias,
                        int per_pixel, const tconv_pixel_dequant *dq, const tconv_window_quant *wq, float *y,
                        obx_parallel_for_fn par, void *runner, char *err, size_t err_len) {
    /* The plane placed so that its inside rows start on a cache line, with
     * rows of whole lines for float outputs: staging stores whole lines and
     * the taps of column 0 load them (144 @56x56, one thread: 205 -> 193 us
     * float, 275 -> 260 us act_quant 3). The int8 kernel computes every
     * column of its grid and keeps the narrow rows (its 58 -> 64 columns
     * took 5% more). */
    const size_t taps = w->kernel_positions;
    const size_t padded_w = wq ? flat_padded_w(g) : OBX_DIV_UP(flat_padded_w(g), DW_LINE_FLOATS) * DW_LINE_FLOATS;
    size_t *offset = (size_t *)tconv_thread_buffer(TCONV_BUFFER_IMAGE, taps * sizeof(size_t) / sizeof(float) + 1);
    if (!offset) {
        obx_set_error(err, err_len, "out of memory for the depthwise tap offsets");
        return -1;
    }
    size_t reach_h;
    const size_t rows_a_band = flat_band_rows(g, &reach_h), band_rows = per_pixel ? rows_a_band : g->out_h;
    const size_t padded_h = OBX_MAX(g->out_h + reach_h, g->pad_top + g->in_h);
    for (size_t t = 0; t < taps; t++)
        offset[t] = (t / g->kernel_w) * g->dilation_h * padded_w + (t % g->kernel_w) * g->dilation_w;
    const size_t bands = OBX_DIV_UP(g->out_h, band_rows);
    const size_t grid = OBX_DIV_UP(band_rows * padded_w, 16) * 16;
    /* A band's plane: its padded rows (all of them for a single band), and the
     * last vector's reads, up to grid + 15 + the last tap's offset. */
    const size_t band_h = bands == 1 ? padded_h : band_rows + reach_h;
    const size_t staged = OBX_MAX(band_h * padded_w, grid + 16 + offset[taps - 1]);
    DwJob job = {.w = w, .g = g, .rows = obx_platform()->conv_rows, .bias = bias, .wq = wq, .offset = offset,
                 .padded_w = padded_w, .band_rows = band_rows, .staged = staged, .grid = grid,
                 .lead = (DW_LINE_FLOATS - g->pad_left % DW_LINE_FLOATS) % DW_LINE_FLOATS,
                 .channels_per_task = OBX_MAX((size_t)1, DW_FLAT_TASK_VALUES / grid), .per_pixel = per_pixel};
    const size_t tasks = per_pixel ? bands : OBX_DIV_UP(w->m, job.channels_per_task);
    tconv_run_images(g, w->m, x, y, dq, &job.img, &job.failed, par, runner, flat_task, &job, tasks);
    if (job.failed) {
        obx_set_error(err, err_len, "out of memory for a depthwise plane");
        return -1;
    }
    return 0;
}

/* Where no other path fits (and where forced): X copied to
 * [pixel][channel], tiles of output pixels, transposed back. */
static int compute_channels_last(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                 const float *bias, const tconv_window_quant *wq, float *y,
                                 obx_parallel_for_fn par, void *runner, char *err, size_t err_len) {
    const size_t pixels = g->in_h * g->in_w, positions = g->out_h * g->out_w;
    if (pixels > SIZE_MAX / sizeof(float) / w->m) {
        obx_set_error(err, err_len, "the input is too large for its channels-last copy");
        return -1;
    }
    float *xt = tconv_thread_buffer(TCONV_BUFFER_IMAGE, pixels * w->m + 1);
    if (!xt) {
        obx_set_error(err, err_len, "out of memory for the channels-last copy of X");
        return -1;
    }
    DwJob job = {.w = w, .g = g, .rows = obx_platform()->conv_rows, .xt = xt, .bias = bias, .wq = wq};
    for (size_t image = 0; image < g->batch && !job.failed; image++) {
        job.img.x = x + image * g->channels * pixels;
        job.img.y = y + image * w->m * positions;
        obx_run_tasks(par, runner, copy_task, &job, OBX_DIV_UP(pixels, DW_COPY_PIXELS));
        obx_run_tasks(par, runner, tile_task, &job, OBX_DIV_UP(positions, DW_TILE_PIXELS));
    }
    if (job.failed) {
        obx_set_error(err, err_len, "out of memory for a depthwise tile");
        return -1;
    }
    return 0;
}

/* The paths that can dequantize X as they read it: the staging ones as they
 * copy it into their own layout, the direct planes as their taps load it
 * (the flat, phase and direct planes on large images take their pixel
 * scales band by band instead: tconv_compute_depthwise_banded). */
static int stages_x(enum dw_path path) {
    return path == DW_BLOCKS || path == DW_SAME || path == DW_FLAT || path == DW_PHASES || path == DW_DIRECT;
}

/* act_quant 3 on the flat, phase and direct planes: in bands of output rows, each
 * taking its own pixel scales, or from one pass over the image for all of
 * them, staging X dequantized with those. A band restages the rows its
 * windows reach past its outputs (3x3: 2 rows, 1 phase row), which a whole
 * pass does not, but the pass reads X twice. So one pass on images up to
 * DW_PIXEL_PASS_MAX_BYTES, and up to DW_PIXEL_PASS_RESTAGED_MAX_BYTES where
 * the bands would restage a quarter of their rows or more. One thread (two),
 * against fp32 Conv, bands / one pass: 144 @28x28 (451 KiB, bands of 4 rows)
 * 0.74x / 1.11x; 96 @56x56 stride 2 (1.2 MiB, 4 rows) 0.92x / 1.11x (0.57x /
 * 0.71x); 144 @56x56 (1.8 MiB, 7 rows) 1.18x / 1.22x, at stride 2 1.05x /
 * 1.15x (0.82x / 0.97x); but 32 @112x112 (1.6 MiB, 14 rows) 1.33x / 1.21x,
 * 64 @112x112 stride 2 (3.1 MiB, 7 rows) 1.11x / 1.03x. */
enum { DW_PIXEL_PASS_MAX_BYTES = 1 << 20, DW_PIXEL_PASS_RESTAGED_MAX_BYTES = 4 << 20 };

static int takes_bands(enum dw_path path, const obx_conv_geometry *g) {
    if (path != DW_FLAT && path != DW_PHASES && path != DW_DIRECT) return 0;
    const size_t bytes = g->channels * g->in_h * g->in_w * sizeof(float);
    if (bytes <= DW_PIXEL_PASS_MAX_BYTES) return 0;
    size_t reach;
    const size_t rows = path == DW_FLAT     ? flat_band_rows(g, &reach)
                        : path == DW_PHASES ? tconv_depthwise_phases_band_rows(g, &reach)
                                            : tconv_depthwise_direct_band_rows(g, &reach);
    return 4 * reach < rows || bytes > DW_PIXEL_PASS_RESTAGED_MAX_BYTES;
}

tconv_depthwise_plan tconv_depthwise_pixel_plan(const obx_tconv_weights *w, const obx_conv_geometry *g) {
    const enum dw_path path = choose_path(w, g, DW_INT8_PIXELS);
    const enum tconv_pixel_staging staging = !stages_x(path)       ? TCONV_PIXEL_COPIED
                                             : takes_bands(path, g) ? TCONV_PIXEL_BANDED
                                                                    : TCONV_PIXEL_STAGED;
    return (tconv_depthwise_plan){(int)path, staging};
}

int tconv_compute_depthwise_banded(const tconv_depthwise_plan *plan, const obx_tconv_weights *w,
                                   const obx_conv_geometry *g, const float *x, const float *bias, float *y,
                                   obx_parallel_for_fn par, void *runner, char *err, size_t err_len) {
    if (plan->staging != TCONV_PIXEL_BANDED) {
        obx_set_error(err, err_len, "the depthwise path chosen does not take pixel scales band by band");
        return -1;
    }
    atomic_fetch_add(&path_runs[plan->path], 1);
    atomic_fetch_add(&banded_runs, 1);
    if (plan->path == DW_PHASES)
        return tconv_compute_depthwise_phases(w, g, x, bias, 1, NULL, NULL, y, par, runner, err, err_len);
    if (plan->path == DW_DIRECT)
        return tconv_compute_depthwise_direct(w, g, x, bias, 1, NULL, NULL, y, par, runner, err, err_len);
    return compute_flat(w, g, x, bias, 1, NULL, NULL, y, par, runner, err, err_len);
}

/* One path on X as it is, dequantized per pixel as it is staged (dq), or
 * with int8 activations per window (wq). */
static int compute_path(enum dw_path path, const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                        const float *bias, const tconv_pixel_dequant *dq, const tconv_window_quant *wq, float *y,
                        obx_parallel_for_fn par, void *runner, char *err, size_t err_len) {
    atomic_fetch_add(&path_runs[path], 1);
    switch (path) {
    case DW_BLOCKS: return tconv_compute_depthwise_blocks(w, g, x, bias, dq, wq, y, par, runner, err, err_len);
    case DW_PHASES: return tconv_compute_depthwise_phases(w, g, x, bias, 0, dq, wq, y, par, runner, err, err_len);
    case DW_FLAT: return compute_flat(w, g, x, bias, 0, dq, wq, y, par, runner, err, err_len);
    case DW_SAME: return tconv_compute_depthwise_same(w, g, x, bias, dq, y, par, runner, err, err_len);
    case DW_ROWS: return compute_rows(w, g, x, bias, y, par, runner, err, err_len);
    case DW_DIRECT: return tconv_compute_depthwise_direct(w, g, x, bias, 0, dq, wq, y, par, runner, err, err_len);
    default: return compute_channels_last(w, g, x, bias, wq, y, par, runner, err, err_len);
    }
}

int tconv_compute_depthwise_dequantized(const tconv_depthwise_plan *plan, const obx_tconv_weights *w,
                                        const obx_conv_geometry *g, const float *x, const float *bias,
                                        const tconv_pixel_dequant *dq, float *y, obx_parallel_for_fn par,
                                        void *runner, char *err, size_t err_len) {
    if (plan->staging == TCONV_PIXEL_BANDED || (dq && plan->staging != TCONV_PIXEL_STAGED)) {
        obx_set_error(err, err_len, "the depthwise path chosen does not dequantize as it stages X");
        return -1;
    }
    return compute_path((enum dw_path)plan->path, w, g, x, bias, dq, NULL, y, par, runner, err, err_len);
}

int tconv_compute_depthwise(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                            const float *bias, int act_quant, float act_scale, float *y, obx_parallel_for_fn par,
                            void *runner, char *err, size_t err_len) {
    if (!act_quant) return compute_path(choose_path(w, g, DW_FLOAT), w, g, x, bias, NULL, NULL, y, par, runner, err, err_len);
    const tconv_window_quant wq = {act_quant == OBX_ACT_INT8_STATIC ? act_scale : 0.0f};
    return compute_path(choose_path(w, g, DW_INT8_WINDOWS), w, g, x, bias, NULL, &wq, y, par, runner, err, err_len);
}
