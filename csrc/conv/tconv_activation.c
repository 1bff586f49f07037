/* obx_activate (tconv.h): the activation a TernaryConv node applies to Y,
 * through the ISA's row kernel (tconv_rows.h activate), in chunks of Y. */
#include "conv/tconv_rows.h"
#include "isa/platform.h"
#include "obx_common.h"
#include "onnxbit/tconv.h"

/* Floats a task: 64 KiB, a few microseconds of work against a hand-off. */
enum { ACTIVATE_CHUNK = 16384 };

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
