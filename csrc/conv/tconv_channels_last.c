/* The channels-last im2col path (tconv.h): the weights' K axis is reordered
 * at prepack from (c, kh, kw) to (kh, kw, c), so an im2col row is kH * kW
 * runs of C / group contiguous values of a channels-last copy of X, one run
 * per kernel tap. Per call, each image is copied once to channels-last (with
 * the absmax of every pixel over each group's channels when act_quant = 1);
 * then each task builds a tile of rows from those runs: as int8 straight
 * away for act_quant = 1 (the row's scale is the maximum of its taps'
 * pixel absmaxes, padding 0: the absmax over the row, as tmatmul.h defines
 * it) and 2 (the static act_scale; the pixel absmaxes still find the rows
 * holding NaN or Inf), as float copies otherwise (none at all for a pointwise conv, whose
 * rows are the channels-last pixels). Measured on a 64-channel 3x3 conv at
 * 56x56 the old per-value im2col and its float quantization cost twice the
 * integer kernel (perf); these runs are memcpy / one vector pass long.
 *
 * Only for weights with one scale group along K: the reorder would cut
 * K-groups apart. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv/tconv_internal.h"
#include "isa/platform.h"
#include "matmul/tmm_compute.h"
#include "obx_common.h"
#include "onnxbit/codec.h"
#include "onnxbit/formats.h"

/* Pixels per channels-last copy task: a block of 64 pixels of every channel
 * (64 * C * 4 bytes) stays in L2 while the channel planes stream in. */
enum { CL_COPY_PIXELS = 64, CL_TILE_BYTES = 256 * 1024, CL_MIN_TILE_ROWS = 16, CL_PARALLEL_TILES = 4 };

uint8_t *tconv_taps_first_2bit(const int8_t *codes, size_t m, size_t cg, size_t taps, char *err, size_t err_len) {
    const size_t k = cg * taps, row_bytes = OBX_DIV_UP(k, 4);
    int8_t *reordered = malloc(m * k + 1);
    uint8_t *packed = malloc(m * row_bytes + 1);
    if (!reordered || !packed) {
        obx_set_error(err, err_len, "out of memory");
        free(reordered);
        free(packed);
        return NULL;
    }
    for (size_t o = 0; o < m; o++) {
        const int8_t *src = codes + o * k;
        int8_t *row = reordered + o * k;
        for (size_t c = 0; c < cg; c++)
            for (size_t t = 0; t < taps; t++) row[t * cg + c] = src[c * taps + t];
    }
    size_t first_bad = 0;
    obx_encode_i8(OBX_FMT_2BIT, reordered, m, k, packed, &first_bad); /* decoded codes: all valid */
    free(reordered);
    return packed;
}

typedef struct ClJob {
    const obx_tconv_weights *w;
    const obx_conv_geometry *g;
    const struct obx_platform *platform;
    const float *x;   /* this image, NCHW */
    float *xt;        /* this image, [pixel][channel] */
    int32_t *amax;    /* act_quant: [group][pixel] absmax bit patterns */
    const float *bias;
    float *y;         /* this image, NCHW */
    int act_quant;
    float act_scale; /* act_quant 2: every row's scale */
    int fused;       /* pointwise with int8 rows: quantized from X directly (pointwise_rows) */
    size_t tile_rows, tiles_per_group, q_stride;
    obx_parallel_for_fn inner_par; /* used when the tiles are too few to share the threads */
    void *inner_runner;
    int failed;
    char err[256];
} ClJob;

static int is_pointwise(const obx_conv_geometry *g) {
    return g->kernel_h == 1 && g->kernel_w == 1 && g->stride_h == 1 && g->stride_w == 1 && g->pad_top == 0 &&
           g->pad_left == 0 && g->out_h == g->in_h && g->out_w == g->in_w;
}

static void copy_task(void *arg, size_t index) {
    const ClJob *job = arg;
    const obx_conv_geometry *g = job->g;
    const size_t pixels = g->in_h * g->in_w, channels = g->channels;
    const size_t p0 = index * CL_COPY_PIXELS, n = OBX_MIN((size_t)CL_COPY_PIXELS, pixels - p0);
    /* NCHW planes [channels][pixels] -> [pixels][channels], one block of pixels */
    job->platform->conv_rows->transpose(job->x + p0, channels, n, pixels, job->xt + p0 * channels, channels);
    if (!job->act_quant) return;
    const size_t cg = job->w->cg;
    for (size_t grp = 0; grp < job->w->group; grp++) {
        int32_t *amax = job->amax + grp * pixels + p0;
        memset(amax, 0, n * sizeof *amax);
        job->platform->conv_rows->absmax_planes(amax, job->x + grp * cg * pixels + p0, pixels, cg, n);
    }
}

static void float_row(const ClJob *job, size_t grp, const ptrdiff_t *pixel, size_t taps, float *row) {
    const size_t cg = job->w->cg;
    for (size_t t = 0; t < taps; t++, row += cg) {
        if (pixel[t] < 0) memset(row, 0, cg * sizeof *row);
        else memcpy(row, job->xt + (size_t)pixel[t] * job->g->channels + grp * cg, cg * sizeof *row);
    }
}

/* Row r's scale and ok flag from the absmax bits of its values, as
 * tmm_prepare_rows sets them; returns the scale, 0 for a row holding NaN or
 * Inf (its q row is then cleared and its sum 0). */
static float row_scale(const ClJob *job, int32_t bits, const struct tmm_quantized_rows *rows, size_t r) {
    rows->qsum[r] = 0;
    rows->scale[r] = 1.0f;
    rows->ok[r] = bits < 0x7f800000; /* Inf or NaN somewhere in the row */
    if (!rows->ok[r]) {
        memset(rows->q + r * job->q_stride, 0, job->q_stride);
        return 0.0f;
    }
    float value;
    memcpy(&value, &bits, sizeof value);
    const float s = job->act_quant == OBX_ACT_INT8_STATIC
                        ? job->act_scale
                        : 127.0f * (1.0f / fmaxf(value, 1e-5f)); /* tmm_quantize_row_scalar's expression */
    rows->scale[r] = s;
    return s;
}

/* Row r of the tile as tmm_prepare_rows would quantize the float row. */
static void quantized_row(const ClJob *job, size_t grp, const ptrdiff_t *pixel, size_t taps,
                          const struct tmm_quantized_rows *rows, size_t r) {
    const obx_conv_geometry *g = job->g;
    const size_t cg = job->w->cg, pixels = g->in_h * g->in_w;
    const int32_t *amax = job->amax + grp * pixels;
    int32_t bits = 0; /* padding reads 0 */
    for (size_t t = 0; t < taps; t++)
        if (pixel[t] >= 0 && amax[pixel[t]] > bits) bits = amax[pixel[t]];
    const float s = row_scale(job, bits, rows, r);
    if (s == 0.0f) return;
    int8_t *q = rows->q + r * job->q_stride;
    rows->qsum[r] = job->platform->conv_rows->quantize_taps(q, job->xt + grp * cg, pixel, taps, g->channels, cg, s);
    memset(q + taps * cg, 0, job->q_stride - taps * cg); /* the zero padding up to the stride */
}

/* Pixels per block of pointwise_rows: the block's floats (pixels x C / group)
 * stay in L1 between its transpose and its quantization. */
static size_t pointwise_block_pixels(size_t cg) {
    enum { BLOCK_FLOATS = 8192, MIN_PIXELS = 8, MAX_PIXELS = 64 };
    size_t n = BLOCK_FLOATS / cg / 8 * 8;
    return OBX_MIN((size_t)MAX_PIXELS, OBX_MAX((size_t)MIN_PIXELS, n));
}

/* A pointwise conv's int8 rows are X's pixels: each block of pixels is
 * transposed from the NCHW planes into `block`, then each pixel's absmax
 * is taken and the pixel quantized straight into its tile row. X is read
 * once, with no channels-last copy of the image (measured: that copy and
 * its second read cost as much as the integer matmul on 256->64 at 56x56). */
static void pointwise_rows(const ClJob *job, size_t grp, size_t first, size_t rows, float *block,
                           const struct tmm_quantized_rows *q) {
    const struct tconv_row_kernels *k = job->platform->conv_rows;
    const size_t cg = job->w->cg, pixels = job->g->in_h * job->g->in_w;
    const size_t step = pointwise_block_pixels(cg);
    const float *x = job->x + grp * cg * pixels + first;
    for (size_t b0 = 0; b0 < rows; b0 += step) {
        const size_t n = OBX_MIN(step, rows - b0);
        k->transpose(x + b0, cg, n, pixels, block, cg);
        for (size_t i = 0; i < n; i++) {
            const size_t r = b0 + i;
            const float *row = block + i * cg;
            const float s = row_scale(job, k->absmax_run(row, cg), q, r);
            if (s == 0.0f) continue;
            int8_t *dst = q->q + r * job->q_stride;
            q->qsum[r] = k->quantize_run(dst, row, s, cg);
            memset(dst + cg, 0, job->q_stride - cg); /* the zero padding up to the stride */
        }
    }
}

static void fail(ClJob *job, const char *message) {
    if (!__atomic_exchange_n(&job->failed, 1, __ATOMIC_RELAXED)) snprintf(job->err, sizeof job->err, "%s", message);
}

static void tile_task(void *arg, size_t index) {
    ClJob *job = arg;
    const obx_tconv_weights *w = job->w;
    const obx_conv_geometry *g = job->g;
    const size_t positions = g->out_h * g->out_w, mg = w->m_per_group;
    const size_t grp = index / job->tiles_per_group;
    const size_t first = (index % job->tiles_per_group) * job->tile_rows;
    const size_t rows = OBX_MIN(job->tile_rows, positions - first);
    const size_t in_bytes = job->act_quant ? rows * (job->q_stride + 2 * sizeof(float) + 1) : rows * w->k * sizeof(float);
    const size_t block_floats = job->fused ? pointwise_block_pixels(w->cg) * w->cg : 0;
    /* + TMM_ALIGN: the int8 rows start 64-byte aligned */
    float *buffer = tconv_thread_buffer(
        TCONV_BUFFER_TILE, block_floats + rows * mg +
                               OBX_DIV_UP(w->kernel_positions * sizeof(ptrdiff_t) + in_bytes + TMM_ALIGN, sizeof(float)));
    if (!buffer) {
        fail(job, "out of memory for an im2col tile");
        return;
    }
    float *block = buffer; /* pointwise_rows' pixel block (fused only) */
    ptrdiff_t *pixel = (ptrdiff_t *)(buffer + block_floats); /* malloc alignment suits every type */
    float *out = (float *)(pixel + w->kernel_positions);
    uint8_t *in = (uint8_t *)(out + rows * mg);
    const float *bias = job->bias ? job->bias + grp * mg : NULL;
    const obx_tmm_weights *weights = w->groups[grp];
    float *y = job->y + grp * mg * positions + first; /* this tile's run of each output plane */
    if (job->act_quant) {
        uint8_t *aligned = (uint8_t *)(OBX_DIV_UP((uintptr_t)in, TMM_ALIGN) * TMM_ALIGN);
        struct tmm_quantized_rows q = {(int8_t *)aligned, (int32_t *)(aligned + rows * job->q_stride), NULL, NULL};
        q.scale = (float *)(q.qsum + rows);
        q.ok = (uint8_t *)(q.scale + rows);
        if (job->fused)
            pointwise_rows(job, grp, first, rows, block, &q);
        else
            for (size_t r = 0; r < rows; r++)
                quantized_row(job, grp, pixel, tconv_tap_pixels(g, first + r, pixel), &q, r);
        if (!job->fused) { /* straight into the NCHW planes */
            tmm_compute_quantized(job->platform->tmm, weights, &q, rows, bias, y, 1, positions, job->inner_par,
                                  job->inner_runner);
            return;
        }
        /* Pointwise: rows into the tile, then one blocked transpose to the
         * NCHW planes (storing each output straight into its plane, a stride
         * of `positions` floats per column, cost more there). */
        tmm_compute_quantized(job->platform->tmm, weights, &q, rows, bias, out, mg, 1, job->inner_par,
                              job->inner_runner);
        job->platform->conv_rows->transpose(out, rows, mg, mg, y, positions);
        return;
    }
    const float *a = job->xt + first * g->channels;
    if (!(is_pointwise(g) && w->group == 1)) {
        float *tile = (float *)in;
        for (size_t r = 0; r < rows; r++) float_row(job, grp, pixel, tconv_tap_pixels(g, first + r, pixel), tile + r * w->k);
        a = tile;
    }
    char err[256] = "";
    if (obx_tmm_compute(weights, a, rows, bias, OBX_ACT_NONE, out, job->inner_par, job->inner_runner, err,
                        sizeof err) != 0) {
        fail(job, err);
        return;
    }
    job->platform->conv_rows->transpose(out, rows, mg, mg, y, positions);
}

int tconv_compute_channels_last(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                const float *bias, int act_quant, float act_scale, float *y,
                                obx_parallel_for_fn par, void *runner, char *err, size_t err_len) {
    const size_t pixels = g->in_h * g->in_w, positions = g->out_h * g->out_w;
    if (pixels > SIZE_MAX / sizeof(float) / (g->channels + w->group)) {
        obx_set_error(err, err_len, "the input is too large for its channels-last copy");
        return -1;
    }
    /* A pointwise conv with int8 rows needs no channels-last copy. */
    const int fused = act_quant != OBX_ACT_NONE && is_pointwise(g);
    float *xt = NULL;
    int32_t *amax = NULL;
    if (!fused) {
        /* xt, then (act_quant) the pixel absmaxes: int32 and float share alignment */
        xt = tconv_thread_buffer(TCONV_BUFFER_IMAGE, pixels * (g->channels + (act_quant ? w->group : 0)) + 1);
        if (!xt) {
            obx_set_error(err, err_len, "out of memory for the channels-last copy of X");
            return -1;
        }
        amax = act_quant ? (int32_t *)(xt + pixels * g->channels) : NULL;
    }
    ClJob job;
    memset(&job, 0, sizeof job);
    job.w = w;
    job.g = g;
    job.platform = obx_platform();
    job.xt = xt;
    job.amax = amax;
    job.act_quant = act_quant;
    job.act_scale = act_scale;
    job.fused = fused;
    job.q_stride = tmm_quantized_row_stride(w->groups[0]);
    size_t row_bytes = act_quant ? job.q_stride : w->k * sizeof(float);
    size_t rows = OBX_MAX((size_t)1, CL_TILE_BYTES / row_bytes);
    /* Enough tiles for the threads to share when the groups are few. */
    if (w->group < CL_PARALLEL_TILES)
        rows = OBX_MIN(rows, OBX_MAX((size_t)CL_MIN_TILE_ROWS, OBX_DIV_UP(positions, CL_PARALLEL_TILES / w->group)));
    job.tile_rows = OBX_MIN(rows, positions);
    job.tiles_per_group = OBX_DIV_UP(positions, job.tile_rows);
    size_t tiles = w->group * job.tiles_per_group;
    if (!par || tiles < 2) {
        job.inner_par = par;
        job.inner_runner = runner;
    }
    for (size_t image = 0; image < g->batch && !job.failed; image++) {
        job.x = x + image * g->channels * pixels;
        job.y = y + image * w->m * positions;
        job.bias = bias;
        if (!fused) obx_run_tasks(par, runner, copy_task, &job, OBX_DIV_UP(pixels, CL_COPY_PIXELS));
        obx_run_tasks(par, runner, tile_task, &job, tiles);
    }
    if (job.failed) {
        obx_set_error(err, err_len, "%s", job.err);
        return -1;
    }
    return 0;
}
