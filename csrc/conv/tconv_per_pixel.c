/* act_quant = 3 (OBX_ACT_INT8_PIXEL, tconv.h): one int8 scale per input pixel
 * over all its channels, as a QAT CNN fake-quantizes activations before a
 * Conv (torch's amax over dim 1 spans every channel whatever the conv's
 * groups). Per call, each image is copied once to channels-last and every
 * pixel quantized once: s = 127 * (1 / max(absmax, 1e-5)),
 * q = clamp(rint(x * s), -128, 127), r = 1 / s (NaN when the pixel holds NaN
 * or Inf, so every window reading it gives NaN). An output position is
 *     acc = 0; for each tap in (kh, kw) order, padding skipped:
 *         acc = acc + (float)dot(q_tap, codes_tap) * r_tap
 *     y = acc * weight_scale + bias
 * The per-tap integer dots run on the TernaryMatMul integer kernels: the
 * weights are prepacked as one K = C / group matrix per (group, tap) with
 * scale 1, and a row scale of 1 makes the kernels' float epilogue return
 * (float)dot exactly (|dot| <= 128 K < 2^24). The per-pixel quantization is
 * the saving against act_quant = 1, which quantizes each value once per
 * window it falls in (kH * kW times). */
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

enum { PP_COPY_PIXELS = 64, PP_TILE_ROWS = 256, PP_PARALLEL_TILES = 4 };

int tconv_prepack_per_pixel(obx_tconv_weights *w, int fmt, const uint8_t *b, const float *scales, size_t n_scales,
                            char *err, size_t err_len) {
    const size_t taps = w->kernel_positions, cg = w->cg, mg = w->m_per_group, row_bytes = OBX_DIV_UP(cg, 4);
    int8_t *codes = tconv_decode_codes(fmt, b, w->m, w->k, err, err_len), *tap_codes = malloc(mg * cg + 1);
    uint8_t *packed = malloc(mg * row_bytes + 1);
    w->taps = calloc(w->group * taps, sizeof *w->taps);
    w->scales = malloc(w->m * sizeof(float) + 1);
    int rc = -1;
    size_t first_bad = 0;
    if (!codes) goto done; /* its message is set */
    if (!tap_codes || !packed || !w->taps || !w->scales) {
        obx_set_error(err, err_len, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < w->m; i++) {
        float s = scales[n_scales == 1 ? 0 : i];
        if (!(isfinite(s) && s > 0.0f)) {
            obx_set_error(err, err_len, "scale %zu = %g must be finite and > 0", n_scales == 1 ? 0 : i, (double)s);
            goto done;
        }
        w->scales[i] = s;
    }
    const float one = 1.0f;
    for (size_t grp = 0; grp < w->group; grp++)
        for (size_t t = 0; t < taps; t++) {
            for (size_t o = 0; o < mg; o++) { /* this tap's codes: [output channel][input channel] */
                const int8_t *row = codes + (grp * mg + o) * w->k;
                for (size_t c = 0; c < cg; c++) tap_codes[o * cg + c] = row[c * taps + t];
            }
            obx_encode_i8(OBX_FMT_2BIT, tap_codes, mg, cg, packed, &first_bad); /* checked by the decode above */
            char inner[384] = "";
            w->taps[grp * taps + t] = obx_tmm_prepack(OBX_FMT_2BIT, packed, mg * row_bytes, (int64_t)cg,
                                                      (int64_t)mg, &one, 1, 0, inner, sizeof inner);
            if (!w->taps[grp * taps + t]) {
                obx_set_error(err, err_len, "group %zu, tap %zu: %s", grp, t, inner);
                goto done;
            }
        }
    rc = 0;
done:
    free(codes);
    free(tap_codes);
    free(packed);
    return rc;
}

typedef struct PixelJob {
    const obx_tconv_weights *w;
    const obx_conv_geometry *g;
    const struct obx_platform *platform;
    const float *x;  /* this image, NCHW */
    float *xt;       /* this image, [pixel][channel] */
    int8_t *q;       /* [pixel][channel] */
    int32_t *qsum;   /* [pixel][group] */
    float *inverse;  /* [pixel]: 1 / s, NaN for a pixel holding NaN or Inf */
    const float *bias;
    float *y;        /* this image, NCHW */
    size_t tile_rows, tiles_per_group, q_stride;
    obx_parallel_for_fn inner_par;
    void *inner_runner;
    int failed;
    char err[256];
} PixelJob;

static void quantize_task(void *arg, size_t index) {
    const PixelJob *job = arg;
    const obx_conv_geometry *g = job->g;
    const struct tconv_row_kernels *rows = job->platform->conv_rows;
    const size_t pixels = g->in_h * g->in_w, channels = g->channels, cg = job->w->cg, groups = job->w->group;
    const size_t p0 = index * PP_COPY_PIXELS, n = OBX_MIN((size_t)PP_COPY_PIXELS, pixels - p0);
    rows->transpose(job->x + p0, channels, n, pixels, job->xt + p0 * channels, channels);
    int32_t amax_bits[PP_COPY_PIXELS] = {0}; /* the block's pixel absmaxes, one NCHW plane at a time */
    rows->absmax_planes(amax_bits, job->x + p0, pixels, channels, n);
    for (size_t p = p0; p < p0 + n; p++) {
        const float *src = job->xt + p * channels;
        int8_t *q = job->q + p * channels;
        const int32_t bits = amax_bits[p - p0];
        if (bits >= 0x7f800000) { /* Inf or NaN in the pixel */
            memset(q, 0, channels);
            for (size_t grp = 0; grp < groups; grp++) job->qsum[p * groups + grp] = 0;
            job->inverse[p] = NAN;
            continue;
        }
        float amax;
        memcpy(&amax, &bits, sizeof amax);
        const float s = 127.0f * (1.0f / fmaxf(amax, 1e-5f)); /* act_quant = 1's expression */
        for (size_t grp = 0; grp < groups; grp++) /* each group's sum: the integer kernels' correction */
            job->qsum[p * groups + grp] = rows->quantize_run(q + grp * cg, src + grp * cg, s, cg);
        job->inverse[p] = 1.0f / s;
    }
}

static void fail(PixelJob *job, const char *message) {
    if (!__atomic_exchange_n(&job->failed, 1, __ATOMIC_RELAXED)) snprintf(job->err, sizeof job->err, "%s", message);
}

static void tile_task(void *arg, size_t index) {
    PixelJob *job = arg;
    const obx_tconv_weights *w = job->w;
    const obx_conv_geometry *g = job->g;
    const size_t positions = g->out_h * g->out_w, mg = w->m_per_group, taps = w->kernel_positions;
    const size_t cg = w->cg, groups = w->group, channels = g->channels;
    const size_t grp = index / job->tiles_per_group;
    const size_t first = (index % job->tiles_per_group) * job->tile_rows;
    const size_t rows = OBX_MIN(job->tile_rows, positions - first);
    /* pixel indices, acc, the per-tap sums, then the int8 rows (aligned) with their sums, scales, flags */
    const size_t bytes = rows * taps * sizeof(ptrdiff_t) + 2 * rows * mg * sizeof(float) + TMM_ALIGN +
                         rows * (job->q_stride + sizeof(int32_t) + sizeof(float) + 1);
    float *buffer = tconv_thread_buffer(TCONV_BUFFER_TILE, OBX_DIV_UP(bytes, sizeof(float)));
    if (!buffer) {
        fail(job, "out of memory for a per-pixel conv tile");
        return;
    }
    ptrdiff_t *pixel = (ptrdiff_t *)buffer;
    float *acc = (float *)(pixel + rows * taps);
    float *dots = acc + rows * mg;
    uint8_t *aligned = (uint8_t *)(OBX_DIV_UP((uintptr_t)(dots + rows * mg), TMM_ALIGN) * TMM_ALIGN);
    struct tmm_quantized_rows q = {(int8_t *)aligned, (int32_t *)(aligned + rows * job->q_stride), NULL, NULL};
    q.scale = (float *)(q.qsum + rows);
    q.ok = (uint8_t *)(q.scale + rows);
    memset(q.q, 0, rows * job->q_stride); /* the padding past cg stays 0 */
    for (size_t r = 0; r < rows; r++) {
        tconv_tap_pixels(g, first + r, pixel + r * taps);
        q.scale[r] = 1.0f;
        q.ok[r] = 1;
    }
    memset(acc, 0, rows * mg * sizeof *acc);
    for (size_t t = 0; t < taps; t++) {
        size_t used = 0;
        for (size_t r = 0; r < rows; r++) {
            const ptrdiff_t p = pixel[r * taps + t];
            int8_t *dst = q.q + r * job->q_stride;
            if (p < 0) {
                memset(dst, 0, cg);
                q.qsum[r] = 0;
                continue;
            }
            memcpy(dst, job->q + (size_t)p * channels + grp * cg, cg);
            q.qsum[r] = job->qsum[(size_t)p * groups + grp];
            used++;
        }
        if (!used) continue; /* every row's tap is padding */
        tmm_compute_quantized(job->platform->tmm, w->taps[grp * taps + t], &q, rows, NULL, dots, mg, 1,
                              job->inner_par, job->inner_runner);
        for (size_t r = 0; r < rows; r++) {
            const ptrdiff_t p = pixel[r * taps + t];
            if (p < 0) continue;
            const float inverse = job->inverse[p];
            float *a = acc + r * mg;
            const float *d = dots + r * mg;
            for (size_t o = 0; o < mg; o++) a[o] = a[o] + d[o] * inverse;
        }
    }
    const float *scale = w->scales + grp * mg;
    const float *bias = job->bias ? job->bias + grp * mg : NULL;
    for (size_t r = 0; r < rows; r++) {
        float *a = acc + r * mg;
        if (bias)
            for (size_t o = 0; o < mg; o++) a[o] = a[o] * scale[o] + bias[o];
        else
            for (size_t o = 0; o < mg; o++) a[o] = a[o] * scale[o];
    }
    job->platform->conv_rows->transpose(acc, rows, mg, mg, job->y + grp * mg * positions + first, positions);
}

int tconv_compute_per_pixel(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                            const float *bias, float *y, obx_parallel_for_fn par, void *runner, char *err,
                            size_t err_len) {
    const size_t pixels = g->in_h * g->in_w, positions = g->out_h * g->out_w, channels = g->channels;
    /* xt floats, qsum per (pixel, group), 1 / s per pixel, q bytes */
    if (pixels > SIZE_MAX / sizeof(float) / (2 * channels + 2 * w->group + 1)) {
        obx_set_error(err, err_len, "the input is too large for its channels-last copy");
        return -1;
    }
    float *xt = tconv_thread_buffer(TCONV_BUFFER_IMAGE, pixels * channels + OBX_DIV_UP(pixels * channels, 4) +
                                                            2 * pixels * w->group + 1);
    if (!xt) {
        obx_set_error(err, err_len, "out of memory for the channels-last copy of X");
        return -1;
    }
    PixelJob job;
    memset(&job, 0, sizeof job);
    job.w = w;
    job.g = g;
    job.platform = obx_platform();
    job.xt = xt;
    job.qsum = (int32_t *)(xt + pixels * channels);
    job.inverse = (float *)(job.qsum + pixels * w->group);
    job.q = (int8_t *)(job.inverse + pixels * w->group);
    job.bias = bias;
    job.q_stride = tmm_quantized_row_stride(w->taps[0]);
    size_t rows = PP_TILE_ROWS;
    if (w->group < PP_PARALLEL_TILES) rows = OBX_MIN(rows, OBX_MAX((size_t)16, OBX_DIV_UP(positions, PP_PARALLEL_TILES / w->group)));
    job.tile_rows = OBX_MIN(rows, positions);
    job.tiles_per_group = OBX_DIV_UP(positions, job.tile_rows);
    const size_t tiles = w->group * job.tiles_per_group;
    if (!par || tiles < 2) {
        job.inner_par = par;
        job.inner_runner = runner;
    }
    for (size_t image = 0; image < g->batch && !job.failed; image++) {
        job.x = x + image * channels * pixels;
        job.y = y + image * w->m * positions;
        obx_run_tasks(par, runner, quantize_task, &job, OBX_DIV_UP(pixels, PP_COPY_PIXELS));
        obx_run_tasks(par, runner, tile_task, &job, tiles);
    }
    if (job.failed) {
        obx_set_error(err, err_len, "%s", job.err);
        return -1;
    }
    return 0;
}
