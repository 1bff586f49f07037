/* act_quant = 3 (one int8 scale per input pixel over all its channels,
 * tconv_per_pixel.c) on a depthwise conv. There each tap's integer dot is a
 * single product code * q, so a tap adds (float)(code * q) * r, with
 * r = 1 / s the pixel's inverse scale; for code in {-1, 0, 1} that is
 * code * ((float)q * r) to the bit (negation is exact, 0 * r = +0, and a
 * NaN r makes every product NaN). So X is quantized and dequantized once,
 * x' = (float)q * r, and the float depthwise path runs on x': the same sum
 * over taps in the same order, the same scale and bias. */
#include <math.h>
#include <string.h>

#include "conv/tconv_internal.h"
#include "isa/platform.h"
#include "obx_common.h"

/* Pixels per task of the scale pass; channels per task of the dequantize pass. */
enum { DP_SCALE_PIXELS = 1024, DP_CHANNELS = 8 };

typedef struct DequantizeJob {
    const struct tconv_row_kernels *rows;
    const float *x;  /* one image, NCHW */
    float *xq;       /* its dequantized copy */
    float *scale;    /* [pixel]: s, from the absmax bits in place */
    float *inverse;  /* [pixel]: 1 / s, NaN where the pixel holds NaN or Inf */
    uint8_t *bad;    /* [pixel] */
    size_t channels, pixels;
} DequantizeJob;

/* s = 127 * (1 / max(absmax over the pixel's channels, 1e-5)), as tconv_per_pixel.c computes it. */
static void scale_task(void *arg, size_t index) {
    const DequantizeJob *job = arg;
    const size_t p0 = index * DP_SCALE_PIXELS, n = OBX_MIN((size_t)DP_SCALE_PIXELS, job->pixels - p0);
    int32_t *bits = (int32_t *)(job->scale + p0);
    memset(bits, 0, n * sizeof *bits);
    for (size_t c = 0; c < job->channels; c++) job->rows->absmax_bits(bits, job->x + c * job->pixels + p0, 1, n);
    job->rows->window_scales(job->scale + p0, job->bad + p0, n);
    for (size_t p = p0; p < p0 + n; p++) job->inverse[p] = job->bad[p] ? NAN : 1.0f / job->scale[p];
}

static void dequantize_task(void *arg, size_t index) {
    const DequantizeJob *job = arg;
    const size_t c1 = OBX_MIN(job->channels, (index + 1) * DP_CHANNELS);
    for (size_t c = index * DP_CHANNELS; c < c1; c++)
        job->rows->dequantize_pixels(job->xq + c * job->pixels, job->x + c * job->pixels, job->scale, job->inverse,
                                     job->pixels);
}

int tconv_compute_depthwise_per_pixel(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                      const float *bias, float *y, obx_parallel_for_fn par, void *runner,
                                      char *err, size_t err_len) {
    const size_t pixels = g->in_h * g->in_w, channels = g->channels, image = channels * pixels;
    /* the dequantized batch, then per pixel: scale, inverse and the bad flag */
    if (g->batch > (SIZE_MAX / sizeof(float) - 3 * pixels) / OBX_MAX(image, (size_t)1)) {
        obx_set_error(err, err_len, "the input is too large for its dequantized copy");
        return -1;
    }
    float *xq = tconv_thread_buffer(TCONV_BUFFER_DEQUANTIZED, g->batch * image + 3 * pixels);
    if (!xq) {
        obx_set_error(err, err_len, "out of memory for the dequantized copy of X");
        return -1;
    }
    DequantizeJob job = {obx_platform()->conv_rows, NULL, NULL, xq + g->batch * image,
                         xq + g->batch * image + pixels, (uint8_t *)(xq + g->batch * image + 2 * pixels),
                         channels, pixels};
    for (size_t n = 0; n < g->batch; n++) {
        job.x = x + n * image;
        job.xq = xq + n * image;
        tconv_run(par, runner, scale_task, &job, OBX_DIV_UP(pixels, DP_SCALE_PIXELS));
        tconv_run(par, runner, dequantize_task, &job, OBX_DIV_UP(channels, DP_CHANNELS));
    }
    return tconv_compute_depthwise(w, g, xq, bias, OBX_ACT_NONE, 0.0f, y, par, runner, err, err_len);
}
