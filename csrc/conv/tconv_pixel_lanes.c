/* The pixel-lanes path (tconv_pixel_lanes.h): TernaryConv with act_quant 1
 * or 2, or 3 without groups, one weight scale group along K and stride 1
 * (act_quant 1 and 2 also 2-D stride 2),
 * where the platform has the kernel (AVX-512 VNNI); a grouped conv runs group
 * by group (each with window scales over its own channels), a depthwise one
 * keeps its direct kernel. Output pixels are the vector lanes, so X is read from its NCHW
 * planes and Y written to them, with no transposes (on 1x1 256->64 at 56x56
 * the channels-last path spent 36% of its time transposing).
 *
 * Stride 1 makes a kernel tap a constant shift on a flat plane: each image
 * is copied once into zero-padded planes of width flat_w = out_w + (kW - 1)
 * dW, the outputs are computed on that wider grid (the extra columns are
 * dropped when storing), and tap (i, j) of flat output p reads flat input
 * p + i dH flat_w + j dW. The same pass records each flat pixel's absmax over
 * the channels; a lane's window scale is the max over its taps, which is the
 * absmax of its im2col row (padding 0), so the quantization is the one
 * tmatmul.h defines for that row. A 1x1 conv without padding reads X in
 * place.
 *
 * Stride 2 (act_quant 1 and 2) runs on the input's four phase planes (even
 * and odd rows and columns, each out + (k - 1) / 2 wide and high), copied as
 * the padded plane is: tap (i, j) is then a constant shift in plane
 * 2 (i & 1) + (j & 1), and the tiles run unchanged. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "conv/tconv_internal.h"
#include "conv/tconv_pixel_lanes.h"
#include "isa/platform.h"
#include "obx_common.h"
#include "onnxbit/codec.h"

/* Copy tasks take this many padded rows. A tile task is one tile, the
 * tiles of an image as even as 16-pixel vectors allow and the larger ones
 * first: the pool hands tasks out in order, so the last ones, which decide
 * how long the other thread waits, are the small ones (1x1 at 14x14 is 13
 * vectors: tiles of 4, 4, 4, 1 left one thread 8 vectors against 5; 4, 3,
 * 3, 3 leave 7 against 6). An image with fewer than LANES_MIN_TASKS tiles
 * splits its output channels too, but only that far: each part quantizes its
 * tile again. */
enum { LANES_COPY_ROWS = 4, LANES_MIN_TASKS = 4, LANES_CHANNEL_STEP = 6 };
/* Output pixels per image below which 1x1 convs keep the channels-last path
 * (tconv_pixel_lanes_applies has the measurements; multi-tap convs: each
 * ISA's kernel table says; stride-2 ones: LANES_MIN_PHASE_OUTPUTS). */
enum { LANES_MIN_SINGLE_TAP_OUTPUTS = 16, LANES_MIN_PHASE_OUTPUTS = 256 };
/* Kernel taps and padded K (taps x channels rounded up to 4) the path takes:
 * the tile of 64 pixels is 64 K bytes, at most 2 MiB. */
enum { LANES_MAX_TAPS = 64, LANES_MAX_K = 32768 };

static atomic_size_t lanes_runs;

OBX_API size_t obx_tconv_pixel_lanes_runs(void) { return atomic_load(&lanes_runs); }

int tconv_prepack_pixel_lanes(obx_tconv_weights *w, const int8_t *codes, const float *scales, size_t n_scales,
                              char *err, size_t err_len) {
    const size_t m = w->m, c = w->cg, taps = w->kernel_positions, quads = OBX_DIV_UP(c, 4);
    /* Not for kernels the path never takes, nor for K so long that a tile
     * (a byte per pixel and K value) outgrows L2: those keep the other paths
     * and skip this layout (a byte per weight). */
    if (taps > LANES_MAX_TAPS || taps * quads * 4 > LANES_MAX_K) return 0;
    int8_t *lanes = calloc(m * taps * quads * 4 + 1, 1);
    w->lane_correction = malloc(m * sizeof(int32_t) + 1);
    w->lane_tap_correction = calloc(m * taps + 1, sizeof(int32_t));
    w->lane_scales = malloc(m * sizeof(float) + 1);
    if (!lanes || !w->lane_correction || !w->lane_tap_correction || !w->lane_scales) {
        free(lanes);
        obx_set_error(err, err_len, "out of memory");
        return -1;
    }
    /* (c, tap) -> [tap][quad][4]: the kernel takes one dword per (tap, quad);
     * the channels past C stay 0 */
    for (size_t o = 0; o < m; o++) {
        int32_t sum = 0;
        for (size_t ch = 0; ch < c; ch++)
            for (size_t t = 0; t < taps; t++) {
                const int8_t code = codes[o * w->k + ch * taps + t];
                lanes[((o * taps + t) * quads + ch / 4) * 4 + ch % 4] = code;
                sum += code;
                w->lane_tap_correction[o * taps + t] += 128 * code; /* act_quant 3 sums tap by tap */
            }
        w->lane_correction[o] = 128 * sum; /* the activations go in as q + 128 */
        w->lane_scales[o] = scales[n_scales == 1 ? 0 : o];
    }
    w->lane_codes = (int32_t *)lanes; /* malloc alignment suits int32 */
    return 0;
}

typedef struct LanesJob {
    const obx_tconv_weights *w;
    const obx_conv_geometry *g;
    const struct tconv_lanes_kernels *kernels;
    const struct tconv_row_kernels *rows;
    const float *x; /* this image */
    const float *x_end; /* past the last image */
    float *y;
    const float *bias;
    float static_scale;
    int per_pixel; /* act_quant 3 */
    int in_place; /* 1x1 without padding: X's planes are the flat planes */
    int phases;   /* stride 2: each channel's flat plane is its four phase planes (phase floats each) */
    size_t phase;
    int prequantized; /* act_quant 3 with a padded plane: the image quantized once, not per tile */
    /* length: floats per flat plane, with the zero tail the last tile's shifted lanes read */
    size_t flat_w, flat_h, length, flat_outputs, parts, part_m;
    size_t tiles, tile_vectors, longer_tiles; /* the first longer_tiles tiles have one vector more */
    size_t offset[LANES_MAX_TAPS]; /* flat shift of each kernel tap, (kh, kw) order */
    float *planes;  /* [C][length] padded copy (not in_place nor prequantized) */
    int32_t *amax;  /* [group][length] pixel absmax bits over the group's channels (as planes) */
    struct tconv_lanes_image image; /* prequantized: the codes and r of every padded pixel */
    int failed;
} LanesJob;

/* The planes' and absmaxes' tail from `used` floats on, which the last
 * tile's shifted lanes read: zeros. */
static void zero_tail(const LanesJob *job, size_t used) {
    for (size_t grp = 0; grp < job->w->group; grp++)
        memset(job->amax + grp * job->length + used, 0, (job->length - used) * sizeof *job->amax);
    for (size_t c = 0; c < job->g->channels; c++)
        memset(job->planes + c * job->length + used, 0, (job->length - used) * sizeof(float));
}

/* Padded rows [r0, r1) of every channel, and their absmaxes over each
 * group's channels. */
static void copy_task(void *arg, size_t index) {
    const LanesJob *job = arg;
    const obx_conv_geometry *g = job->g;
    const size_t fw = job->flat_w, r0 = index * LANES_COPY_ROWS;
    const size_t r1 = OBX_MIN(job->flat_h, r0 + LANES_COPY_ROWS);
    for (size_t grp = 0; grp < job->w->group; grp++)
        memset(job->amax + grp * job->length + r0 * fw, 0, (r1 - r0) * fw * sizeof *job->amax);
    /* the image rows among [r0, r1) */
    const size_t i0 = OBX_MAX(r0, g->pad_top), i1 = OBX_MIN(r1, g->pad_top + g->in_h);
    for (size_t c = 0; c < g->channels; c++) {
        /* the rows cleared whole, then the image's rows over them: two calls a
         * channel (a memcpy and two memsets a row were a tenth of 3x3 64
         * @56x56, most of it in the calls) */
        float *plane = job->planes + c * job->length;
        memset(plane + r0 * fw, 0, (r1 - r0) * fw * sizeof *plane);
        if (i1 > i0)
            job->rows->copy_rows(plane + i0 * fw + g->pad_left, fw, job->x + (c * g->in_h + i0 - g->pad_top) * g->in_w,
                                 g->in_w, i1 - i0, g->in_w, NULL, NULL);
    }
    /* each group's absmaxes over its copied rows, a few planes a pass (one
     * plane at a time reloaded and stored the running maxima per channel) */
    const size_t cg = job->w->cg;
    for (size_t grp = 0; grp < job->w->group; grp++)
        job->rows->absmax_planes(job->amax + grp * job->length + r0 * fw, job->planes + grp * cg * job->length + r0 * fw,
                                 job->length, cg, (r1 - r0) * fw);
    if (r1 == job->flat_h) zero_tail(job, job->flat_h * fw); /* past the padded image */
}

/* Stride 2: phase rows [u0, u1) of every channel's four phase planes
 * (padded rows 2 u + a, columns 2 v + b in phase plane 2 a + b, row u,
 * column v), and their absmaxes over each group's channels. */
static void copy_phases_task(void *arg, size_t index) {
    const LanesJob *job = arg;
    const obx_conv_geometry *g = job->g;
    const size_t pw = job->flat_w, u0 = index * LANES_COPY_ROWS, u1 = OBX_MIN(job->flat_h, u0 + LANES_COPY_ROWS);
    /* the image rows among padded rows [2 u0, 2 u1) */
    const size_t ih0 = 2 * u0 > g->pad_top ? 2 * u0 - g->pad_top : 0;
    const size_t ih1 = OBX_MIN(g->in_h, 2 * u1 > g->pad_top ? 2 * u1 - g->pad_top : 0);
    const struct tconv_phase_layout layout =
        tconv_phase_layout_at(g, ih0, ih1 > ih0 ? ih1 - ih0 : 0, 2 * u0, pw, job->phase, NULL);
    for (size_t c = 0; c < g->channels; c++) {
        float *plane = job->planes + c * job->length + u0 * pw;
        for (size_t ph = 0; ph < 4; ph++) memset(plane + ph * job->phase, 0, (u1 - u0) * pw * sizeof *plane);
        if (layout.rows)
            job->rows->stage_phases(plane, job->x + (c * g->in_h + ih0) * g->in_w, &layout, NULL, NULL);
    }
    const size_t cg = job->w->cg;
    for (size_t grp = 0; grp < job->w->group; grp++)
        for (size_t ph = 0; ph < 4; ph++) {
            const size_t at = ph * job->phase + u0 * pw;
            int32_t *amax = job->amax + grp * job->length + at;
            memset(amax, 0, (u1 - u0) * pw * sizeof *amax);
            job->rows->absmax_planes(amax, job->planes + grp * cg * job->length + at, job->length, cg, (u1 - u0) * pw);
        }
    if (u1 == job->flat_h) zero_tail(job, 4 * job->phase); /* past the phase planes */
}

/* act_quant 3: the pixels of padded rows [r0, r1) quantized (the last task
 * also the zero tail the last tile's shifted lanes read). */
static void quantize_task(void *arg, size_t index) {
    const LanesJob *job = arg;
    const size_t fw = job->flat_w, r0 = index * LANES_COPY_ROWS, r1 = OBX_MIN(job->flat_h, r0 + LANES_COPY_ROWS);
    const size_t p1 = r1 == job->flat_h ? job->length : r1 * fw;
    for (size_t p = r0 * fw; p < p1;) { /* runs of up to a tile within a row */
        const size_t row = p / fw, col = p % fw, n = OBX_MIN(OBX_MIN(p1 - p, fw - col), (size_t)TCONV_LANES_TILE);
        job->kernels->quantize_run(&job->image, p, row, col, n);
        p += n;
    }
}

/* Output channels [m0, m0 + m) of group grp over one tile. */
static int run_tile(LanesJob *job, size_t grp, size_t tile, size_t m0, size_t m, int prefetch_next) {
    const obx_tconv_weights *w = job->w;
    const obx_conv_geometry *g = job->g;
    const size_t quads = OBX_DIV_UP(w->cg, 4), taps = w->kernel_positions;
    const size_t p0 = 16 * (tile * job->tile_vectors + OBX_MIN(tile, job->longer_tiles));
    const size_t pixels = OBX_MIN(16 * (job->tile_vectors + (tile < job->longer_tiles)), job->flat_outputs - p0);
    const size_t k4 = taps * quads, cg = w->cg;
    struct tconv_lanes_task task = {
        .offset = job->offset,
        .taps = taps,
        .quads = quads,
        .channels = cg,
        .static_scale = job->static_scale,
        .pixels = pixels,
        .p0 = p0,
        .flat_w = job->flat_w,
        .out_w = g->out_w,
        .plane = g->out_h * g->out_w,
        .codes = w->lane_codes + m0 * k4,
        .correction = w->lane_correction + m0,
        .weight_scale = w->lane_scales + m0,
        .bias = job->bias ? job->bias + m0 : NULL,
        .m = m,
        .y = job->y + m0 * g->out_h * g->out_w,
        .per_pixel = job->per_pixel,
        .tap_correction = w->lane_tap_correction + m0 * taps,
    };
    if (job->prequantized) {
        task.quantized = job->image.q + p0;
        task.pixel_r = job->image.r + p0;
        task.quantized_stride = job->length;
        job->kernels->tile(&task);
        return 0;
    }
    /* A partial last tile of an in-place conv reads on into the next
     * plane (its lanes there are dropped), but past X's last runs there may
     * be no memory: the runs that would end past it come from zero-padded
     * copies (those of the last channels of the last image). */
    const size_t c0 = grp * cg; /* the group's channels */
    size_t first_copied = cg;
    if (job->in_place) {
        const size_t available = (size_t)(job->x_end - job->x);
        while (first_copied > 0 && (c0 + first_copied - 1) * job->flat_outputs + p0 + TCONV_LANES_TILE > available)
            first_copied--;
    }
    /* a byte per (pixel, tap, channel); act_quant 3: per (pixel, channel) of the span, and its r */
    const size_t tile_bytes = job->per_pixel ? tconv_lanes_span(job->offset[taps - 1]) * (4 * quads + 4)
                                             : TCONV_LANES_TILE * 4 * taps * quads;
    const size_t bytes = 64 + tile_bytes + 4 * quads * sizeof(float *) +
                         (cg - first_copied) * TCONV_LANES_TILE * sizeof(float);
    float *buffer = tconv_thread_buffer(TCONV_BUFFER_TILE, OBX_DIV_UP(bytes, sizeof(float)));
    if (!buffer) return -1;
    uint8_t *aligned = (uint8_t *)(OBX_DIV_UP((uintptr_t)buffer, 64) * 64);
    const float **src = (const float **)(aligned + tile_bytes); /* tile_bytes is a multiple of 64 */
    float *copies = (float *)(src + 4 * quads);
    for (size_t c = 0; c < cg; c++)
        src[c] = (job->in_place ? job->x + (c0 + c) * job->flat_outputs : job->planes + (c0 + c) * job->length) + p0;
    for (size_t c = first_copied; c < cg; c++) {
        float *copy = copies + (c - first_copied) * TCONV_LANES_TILE;
        memcpy(copy, src[c], pixels * sizeof(float));
        memset(copy + pixels, 0, (TCONV_LANES_TILE - pixels) * sizeof(float));
        src[c] = copy;
    }
    for (size_t c = cg; c < 4 * quads; c++) src[c] = src[0]; /* codes 0: any finite data */
    task.src = src;
    task.window_amax = job->in_place ? NULL : job->amax + grp * job->length + p0;
    task.prefetch_next = prefetch_next;
    task.tile = aligned;
    job->kernels->tile(&task);
    return 0;
}

/* One tile for one part of one group's output channels; it reads the next
 * tile's input ahead, which the same thread often computes next. */
static void tile_task(void *arg, size_t index) {
    LanesJob *job = arg;
    const size_t mg = job->w->m_per_group, parts = job->parts * job->w->group;
    const size_t tile = index / parts, grp = index % parts / job->parts, part = index % job->parts;
    const size_t m0 = part * job->part_m, m = OBX_MIN(job->part_m, mg - m0);
    if (run_tile(job, grp, tile, grp * mg + m0, m, tile + 1 < job->tiles) != 0)
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
}

static int is_in_place(const obx_conv_geometry *g) {
    return g->kernel_h == 1 && g->kernel_w == 1 && g->pad_top == 0 && g->pad_left == 0 && g->out_h == g->in_h &&
           g->out_w == g->in_w;
}

/* 1 (pixel lanes), 0 (the channels-last path) or -1 (no preference) from
 * ONNXBIT_CONV_PATH, which tests use to run both paths on any shape. */
static int path_override(void) {
    const char *name = getenv("ONNXBIT_CONV_PATH");
    if (!name) return -1;
    if (strcmp(name, "pixel_lanes") == 0) return 1;
    if (strcmp(name, "channels_last") == 0) return 0;
    return -1;
}

int tconv_pixel_lanes_applies(const obx_tconv_weights *w, const obx_conv_geometry *g, int act_quant) {
    if (!w->lane_codes || !obx_platform()->conv_lanes) return 0;
    if (act_quant != OBX_ACT_INT8_TOKEN && act_quant != OBX_ACT_INT8_STATIC && act_quant != OBX_ACT_INT8_PIXEL)
        return 0;
    /* Stride 2 runs on the input's four phase planes (act_quant 1 and 2, dilation 1), where a tap is a
     * stride-1 shift in one of them. */
    const int phases = g->stride_h == 2 && g->stride_w == 2;
    if (phases ? act_quant == OBX_ACT_INT8_PIXEL || g->dilation_h != 1 || g->dilation_w != 1
               : g->stride_h != 1 || g->stride_w != 1)
        return 0;
    /* The padded plane holds the input: trailing pads are >= 0 (the phase planes take what the outputs read). */
    if (!phases && (g->out_h + (g->kernel_h - 1) * g->dilation_h < g->pad_top + g->in_h ||
                    g->out_w + (g->kernel_w - 1) * g->dilation_w < g->pad_left + g->in_w))
        return 0;
    /* act_quant 3 scales a pixel over all channels: one group's absmaxes. A
     * tile quantizes the span its taps read, which a tall dilated window on a
     * wide plane makes larger than its taps' windows (taps x 64 pixels): the
     * per-tap matmuls quantize less there. */
    if (act_quant == OBX_ACT_INT8_PIXEL) {
        const size_t flat_w = g->out_w + (g->kernel_w - 1) * g->dilation_w;
        const size_t last = (g->kernel_h - 1) * g->dilation_h * flat_w + (g->kernel_w - 1) * g->dilation_w;
        if (w->group != 1 || tconv_lanes_span(last) > TCONV_LANES_TILE * w->kernel_positions) return 0;
    }
    int forced = path_override();
    if (forced >= 0) return forced;
    const struct tconv_lanes_kernels *kernels = obx_platform()->conv_lanes;
    const size_t outputs = g->out_h * g->out_w;
    /* act_quant 3 otherwise runs one small matmul per tap (tconv_per_pixel.c):
     * slower on AVX-512 everywhere measured (one thread, that path's time /
     * this one's: 3x3 64 @56 3.0 / 0.8 ms as act_quant 1 runs here, 1x1
     * 144->24 @56 1.0 / 0.32), and on AVX2 on planes of 256 outputs and more
     * (forced on a Sapphire Rapids, speed-up vs fp32 Conv, this path / that
     * one: 3x3 64 @56 0.93-0.98x / 0.52x, 128 @28 0.97-1.02x / 0.81x; 1x1
     * 256->64 @56 1.09-1.13x / 0.66-0.69x, 576->96 @14 1.19x / 0.86x; but 3x3
     * 256 @14 1.04-1.06x / 1.13x, 512 @7 1.14x / 1.21x). */
    if (act_quant == OBX_ACT_INT8_PIXEL)
        return w->kernel_positions == 1 || outputs >= kernels->min_multi_tap_outputs_per_pixel;
    /* The size rule, from one-thread CPU time against the channels-last path
     * (interleaved medians, this path's time / that one's): 1x1 convs win
     * everywhere measured (256->64 @56 0.48, 144->24 @56 0.43, 576->96 @14
     * 0.76, 1024->256 @14 0.79, 512->128 @7 0.88, 128->512 @7 0.48); 3x3
     * convs win on large planes (64 @56 0.60, 128 @28 0.73, 256 @14 0.92)
     * but not on small ones, where the padded columns are 2/9 of the lanes
     * and the few tiles are quantized once per channel part (512 @7 0.99,
     * 256 @7 1.11, 256 @10 0.99, 128 @10 0.98, 256 @12 1.03 and at two
     * threads 1.12; 256 @14 0.96 and 0.93 in the same runs). Measured again
     * as speed-ups over fp32 Conv, this path / that one, one thread, batch 1
     * (batch 128): 16 @8x8 1.02x / 0.77x (1.01x / 0.45x), 32 @8x8 1.16x /
     * 0.85x (1.25x / 0.73x), 64 @8x8 1.37x / 1.05x, 16 @12x12 1.16x / 0.70x,
     * 128 @10x10 2.06x / 1.80x, 256 @10x10 2.52x / 2.41x; at 7x7 even (64
     * 1.18x / 1.09x, at two threads 1.05x / 1.16x; 128 1.53x / 1.54x), at
     * 4x4 that one (64 0.90x / 1.11x): so from 8x8 on. Without the channels-last
     * layout (C / group < 8) the alternative is the generic im2col: always
     * slower (3->32 @112 8x, 16->16 @28 3x, 128 @28 in 32 groups 7.4x), and
     * so are grouped convs on the channels-last path, one small matmul per
     * group (256 @7 in 8 groups 1.33x, 512 @7 in 32 groups 2.1x, 128 @28 in
     * 4 groups 2.2x, 1x1 256 @28 in 8 groups 2.6x). 1x1 convs on planes of
     * a few pixels fill a 16-lane vector an image at a time, where the
     * channels-last path runs the whole batch as one matmul (batch 128, one
     * thread, against fp32 Conv, this path / that one: 384->256 @1x1 0.25x /
     * 1.55x, 384->128 @2x2 0.39x / 1.29x, 256->256 @3x3 0.90x / 1.11x,
     * 384->256 @4x4 1.50x / 1.48x, 128->128 @5x5 1.38x / 0.82x; batch 1 alike:
     * 3x3 0.95x / 1.08x, 5x5 1.13x / 0.91x). nudenet's YOLOv8n on a batch of
     * 128 32x32 images converted ternary ran 2.1x slower than the original.
     * On AVX2 (8 lanes, forced on the same machine, this path / that one):
     * 3x3 64 @56 1.06-1.10x / 0.80-0.84x, 128 @28 1.17x / 1.11-1.13x, but 256
     * @14 1.19-1.23x / 1.28x; 1x1 256->64 @56 1.26x / 0.91x, 1024->256 @14
     * 1.33x / 1.14-1.20x, 576->96 @14 1.36x / 0.98-1.03x: multi-tap convs from
     * 256 outputs on. */
    /* Stride 2, on the phase planes, against the channels-last path, speed-ups
     * over fp32 Conv on a Zen 5 core, one thread (two), 3x3 at input sizes:
     * 16->32 @112 1.44x / 0.62x (2.10x / 1.03x), 32->64 @56 1.91x / 1.16x
     * (1.60x / 1.25x), 64->128 @28 2.32x / 1.95x (1.91x / 2.18x), 128->256
     * @14 1.99x / 2.33x (1.00x / 1.68x), 64->64 @20 1.40x / 1.38x (0.47x /
     * 1.34x): from 256 outputs on (few tiles split their channels in parts,
     * each quantizing the tile again). */
    if (phases && w->channels_last && w->group == 1 && outputs < LANES_MIN_PHASE_OUTPUTS) return 0;
    if (w->channels_last && w->group == 1 &&
        outputs < (w->kernel_positions > 1 ? kernels->min_multi_tap_outputs : LANES_MIN_SINGLE_TAP_OUTPUTS))
        return 0;
    return 1;
}

int tconv_compute_pixel_lanes(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                              const float *bias, int act_quant, float act_scale, float *y,
                              obx_parallel_for_fn par, void *runner, char *err, size_t err_len) {
    LanesJob job;
    memset(&job, 0, sizeof job);
    job.w = w;
    job.g = g;
    job.kernels = obx_platform()->conv_lanes;
    job.rows = obx_platform()->conv_rows;
    job.bias = bias;
    job.static_scale = act_quant == OBX_ACT_INT8_STATIC ? act_scale : 0.0f;
    job.per_pixel = act_quant == OBX_ACT_INT8_PIXEL;
    job.in_place = is_in_place(g);
    job.prequantized = job.per_pixel && !job.in_place;
    job.x_end = x + g->batch * g->channels * g->in_h * g->in_w;
    job.phases = g->stride_h == 2;
    if (job.phases) {
        /* phase planes of out + (k - 1) / 2 rows and columns: tap (i, j) of output (oh, ow) reads row oh + i / 2,
         * column ow + j / 2 of plane 2 (i & 1) + (j & 1) */
        job.flat_w = g->out_w + (g->kernel_w - 1) / 2;
        job.flat_h = g->out_h + (g->kernel_h - 1) / 2;
        job.phase = job.flat_h * job.flat_w;
        for (size_t i = 0, t = 0; i < g->kernel_h; i++)
            for (size_t j = 0; j < g->kernel_w; j++)
                job.offset[t++] = ((i & 1) * 2 + (j & 1)) * job.phase + (i / 2) * job.flat_w + j / 2;
    } else {
        job.flat_w = g->out_w + (g->kernel_w - 1) * g->dilation_w;
        job.flat_h = g->out_h + (g->kernel_h - 1) * g->dilation_h;
        for (size_t i = 0, t = 0; i < g->kernel_h; i++)
            for (size_t j = 0; j < g->kernel_w; j++)
                job.offset[t++] = i * g->dilation_h * job.flat_w + j * g->dilation_w;
    }
    size_t reach = 0; /* the farthest tap (not the last at stride 2) */
    for (size_t t = 0; t < w->kernel_positions; t++) reach = OBX_MAX(reach, job.offset[t]);
    /* The last row's padding columns are not outputs: the grid ends at its last output. */
    job.flat_outputs = (g->out_h - 1) * job.flat_w + g->out_w;
    const size_t vectors = OBX_DIV_UP(job.flat_outputs, 16);
    job.tiles = OBX_DIV_UP(vectors, TCONV_LANES_VECTORS);
    job.tile_vectors = vectors / job.tiles;
    job.longer_tiles = vectors % job.tiles;
    /* the last tile starts at vector (tiles - 1) tile_vectors + longer_tiles and reads a whole tile on */
    const size_t last_p0 = 16 * ((job.tiles - 1) * job.tile_vectors + job.longer_tiles);
    const size_t last_read = last_p0 + TCONV_LANES_TILE + reach;
    job.length = OBX_DIV_UP(OBX_MAX(last_read, (job.phases ? 4 : 1) * job.flat_h * job.flat_w), 16) * 16;
    const size_t quads = OBX_DIV_UP(w->cg, 4);
    if (job.prequantized) { /* act_quant 3 has no groups: codes [quads][length], then r */
        if (job.length > SIZE_MAX / sizeof(float) / (quads + 1)) {
            obx_set_error(err, err_len, "the input is too large for its quantized copy");
            return -1;
        }
        job.image.q = (int32_t *)tconv_thread_buffer(TCONV_BUFFER_IMAGE, job.length * (quads + 1));
        if (!job.image.q) {
            obx_set_error(err, err_len, "out of memory for the quantized copy of X");
            return -1;
        }
        job.image.r = (float *)(job.image.q + job.length * quads);
        job.image.channels = g->channels;
        job.image.in_h = g->in_h;
        job.image.in_w = g->in_w;
        job.image.pad_top = g->pad_top;
        job.image.pad_left = g->pad_left;
        job.image.flat_w = job.flat_w;
        job.image.quads = quads;
        job.image.stride = job.length;
    } else if (!job.in_place) {
        if (job.length > SIZE_MAX / sizeof(float) / (g->channels + w->group)) {
            obx_set_error(err, err_len, "the input is too large for its padded copy");
            return -1;
        }
        job.planes = tconv_thread_buffer(TCONV_BUFFER_IMAGE, job.length * (g->channels + w->group));
        if (!job.planes) {
            obx_set_error(err, err_len, "out of memory for the padded copy of X");
            return -1;
        }
        /* then each group's pixel absmaxes: int32 and float share alignment */
        job.amax = (int32_t *)(job.planes + job.length * g->channels);
    }
    const size_t mg = w->m_per_group;
    job.parts = 1; /* per group */
    if (job.tiles * w->group < LANES_MIN_TASKS)
        job.parts = OBX_MIN(OBX_DIV_UP(LANES_MIN_TASKS, job.tiles * w->group), OBX_DIV_UP(mg, LANES_CHANNEL_STEP));
    job.part_m = OBX_DIV_UP(OBX_DIV_UP(mg, job.parts), LANES_CHANNEL_STEP) * LANES_CHANNEL_STEP;
    job.parts = OBX_DIV_UP(mg, job.part_m);
    for (size_t image = 0; image < g->batch && !job.failed; image++) {
        job.x = x + image * g->channels * g->in_h * g->in_w;
        job.y = y + image * w->m * g->out_h * g->out_w;
        job.image.x = job.x;
        if (job.prequantized)
            obx_run_tasks(par, runner, quantize_task, &job, OBX_DIV_UP(job.flat_h, LANES_COPY_ROWS));
        else if (!job.in_place)
            obx_run_tasks(par, runner, job.phases ? copy_phases_task : copy_task, &job,
                          OBX_DIV_UP(job.flat_h, LANES_COPY_ROWS));
        obx_run_tasks(par, runner, tile_task, &job, job.tiles * w->group * job.parts);
    }
    if (job.failed) {
        obx_set_error(err, err_len, "out of memory for a pixel-lanes tile");
        return -1;
    }
    atomic_fetch_add(&lanes_runs, 1);
    return 0;
}
