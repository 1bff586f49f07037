/* act_quant = 3 (one int8 scale per input pixel over all its channels,
 * tconv_per_pixel.c) on a depthwise conv. There each tap's integer dot is a
 * single product code * q, so a tap adds (float)(code * q) * r, with
 * r = 1 / s the pixel's inverse scale; for code in {-1, 0, 1} that is
 * code * ((float)q * r) to the bit (negation is exact, 0 * r = +0, and a
 * NaN r makes every product NaN). So X is quantized and dequantized once,
 * x' = (float)q * r, and the float depthwise path runs on x': the same sum
 * over taps in the same order, the same scale and bias. The float paths
 * that stage X anyway (channel blocks, phase and flat planes) dequantize it
 * as they stage it, from each pixel's s and 1 / s; the others get a
 * dequantized copy. */
#include <string.h>

#include "conv/tconv_internal.h"
#include "isa/platform.h"
#include "obx_common.h"

/* Pixels per task: at most DP_MAX_PIXELS, so that with a copy to make their
 * values over all channels (C x 4 KiB) stay in L2 between the absmax pass
 * and the dequantize pass and X is read from memory once there; and at
 * least DP_TASKS tasks where a plane has the pixels (whole vectors each), so
 * that a small plane's absmax over many channels does not run on one thread
 * (512 x 14x14 was one task of 196 pixels). */
enum { DP_MAX_PIXELS = 1024, DP_TASKS = 8, DP_VECTOR = 16 };
/* Planes up to DP_SMALL_PLANE pixels (14x14, 16x16) on a path that stages X
 * itself take their absmaxes in DP_CHANNEL_TASKS runs of whole channels
 * instead, each read front to back (pixel blocks of a 14x14 plane are 128
 * bytes a channel, strided: the absmax pass took a tenth of a 576 @14x14
 * call), into partial maxima the caller then merges. */
enum { DP_SMALL_PLANE = 256, DP_CHANNEL_TASKS = 8 };

typedef struct DequantizeJob {
    const struct tconv_row_kernels *rows;
    const float *x;  /* one image, NCHW */
    float *xq;       /* its dequantized copy, or NULL: only the scales */
    float *scale;    /* [pixel]: s, from the absmax bits in place */
    float *inverse;  /* [pixel]: 1 / s, NaN where the pixel holds NaN or Inf */
    uint8_t *bad;    /* [pixel] */
    size_t channels, pixels;
    size_t task_pixels;
    int32_t *partial;     /* small planes: [task][pixel] absmax bits, or NULL */
    size_t task_channels; /* small planes: channels per task */
} DequantizeJob;

/* The pixels' absmax bits, held in scale, into s in place, 1 / s and the flags. */
static void scales_from_bits(const struct tconv_row_kernels *rows, size_t n, float *scale, float *inverse,
                             uint8_t *bad) {
    rows->window_scales(scale, bad, n);
    rows->pixel_inverses(inverse, scale, bad, n);
}

void tconv_pixel_scales(const struct tconv_row_kernels *rows, const float *x, size_t plane_stride, size_t channels,
                        size_t n, float *scale, float *inverse, uint8_t *bad) {
    int32_t *bits = (int32_t *)scale;
    memset(bits, 0, n * sizeof *bits);
    rows->absmax_planes(bits, x, plane_stride, channels, n);
    scales_from_bits(rows, n, scale, inverse, bad);
}

/* Small planes: a run of channels' absmax bits over every pixel. */
static void channel_absmax_task(void *arg, size_t index) {
    const DequantizeJob *job = arg;
    const size_t c0 = index * job->task_channels, c1 = OBX_MIN(job->channels, c0 + job->task_channels);
    int32_t *bits = job->partial + index * job->pixels;
    memset(bits, 0, job->pixels * sizeof *bits);
    job->rows->absmax_planes(bits, job->x + c0 * job->pixels, job->pixels, c1 - c0, job->pixels);
}

/* The partial maxima of the channel runs merged, then each pixel's scales. */
static void merge_channel_absmax(const DequantizeJob *job, size_t tasks) {
    int32_t *bits = (int32_t *)job->scale;
    memcpy(bits, job->partial, job->pixels * sizeof *bits);
    for (size_t t = 1; t < tasks; t++) {
        const int32_t *part = job->partial + t * job->pixels;
        for (size_t p = 0; p < job->pixels; p++) bits[p] = part[p] > bits[p] ? part[p] : bits[p];
    }
    scales_from_bits(job->rows, job->pixels, job->scale, job->inverse, job->bad);
}

/* A block of pixels' scales, then (with a copy to make) every channel's values. */
static void dequantize_task(void *arg, size_t index) {
    const DequantizeJob *job = arg;
    const size_t p0 = index * job->task_pixels, n = OBX_MIN(job->task_pixels, job->pixels - p0);
    tconv_pixel_scales(job->rows, job->x + p0, job->pixels, job->channels, n, job->scale + p0, job->inverse + p0,
                       job->bad + p0);
    if (!job->xq) return;
    for (size_t c = 0; c < job->channels; c++)
        job->rows->dequantize_pixels(job->xq + c * job->pixels + p0, job->x + c * job->pixels + p0, job->scale + p0,
                                     job->inverse + p0, n);
}

int tconv_compute_depthwise_per_pixel(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                      const float *bias, float *y, obx_parallel_for_fn par, void *runner,
                                      char *err, size_t err_len) {
    const tconv_depthwise_plan plan = tconv_depthwise_pixel_plan(w, g);
    /* The flat and phase planes take their scales band by band themselves. */
    if (plan.staging == TCONV_PIXEL_BANDED)
        return tconv_compute_depthwise_banded(&plan, w, g, x, bias, y, par, runner, err, err_len);
    const size_t pixels = g->in_h * g->in_w, channels = g->channels, image = channels * pixels;
    /* A path that stages X dequantizes it on the way; the others read a dequantized copy. */
    const int staged = plan.staging == TCONV_PIXEL_STAGED;
    const size_t copy = staged ? 0 : image;
    /* Small planes staged by their path: channel runs, whose partial maxima follow the scales. */
    const size_t channel_tasks = staged && pixels <= DP_SMALL_PLANE ? OBX_MIN(channels, (size_t)DP_CHANNEL_TASKS) : 0;
    const size_t partials = channel_tasks * pixels;
    /* per image and pixel: scale, inverse and the bad flag; then the copy or the partial maxima */
    if (g->batch > (SIZE_MAX / sizeof(float) - partials) / (3 * pixels + copy)) {
        obx_set_error(err, err_len, "the input is too large for its dequantized copy");
        return -1;
    }
    float *scales = tconv_thread_buffer(TCONV_BUFFER_DEQUANTIZED, g->batch * (3 * pixels + copy) + partials);
    if (!scales) {
        obx_set_error(err, err_len, "out of memory for the pixel scales of X");
        return -1;
    }
    float *inverse = scales + g->batch * pixels, *xq = staged ? NULL : scales + g->batch * 3 * pixels;
    uint8_t *bad = (uint8_t *)(inverse + g->batch * pixels);
    const size_t task_pixels = OBX_MIN((size_t)DP_MAX_PIXELS, OBX_DIV_UP(OBX_DIV_UP(pixels, DP_TASKS), DP_VECTOR) * DP_VECTOR);
    DequantizeJob job = {obx_platform()->conv_rows, NULL, NULL, NULL, NULL, NULL, channels, pixels, task_pixels,
                         channel_tasks ? (int32_t *)(scales + g->batch * 3 * pixels) : NULL,
                         channel_tasks ? OBX_DIV_UP(channels, channel_tasks) : 0};
    const size_t runs = channel_tasks ? OBX_DIV_UP(channels, job.task_channels) : 0;
    for (size_t n = 0; n < g->batch; n++) {
        job.x = x + n * image;
        job.xq = xq ? xq + n * image : NULL;
        job.scale = scales + n * pixels;
        job.inverse = inverse + n * pixels;
        job.bad = bad + n * pixels;
        if (channel_tasks) {
            obx_run_tasks(par, runner, channel_absmax_task, &job, runs);
            merge_channel_absmax(&job, runs);
        } else {
            obx_run_tasks(par, runner, dequantize_task, &job, OBX_DIV_UP(pixels, task_pixels));
        }
    }
    if (!staged) return tconv_compute_depthwise_dequantized(&plan, w, g, xq, bias, NULL, y, par, runner, err, err_len);
    const tconv_pixel_dequant dq = {scales, inverse};
    return tconv_compute_depthwise_dequantized(&plan, w, g, x, bias, &dq, y, par, runner, err, err_len);
}
