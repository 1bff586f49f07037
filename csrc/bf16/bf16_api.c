/* The public entry points of bf16matmul.h: argument checks, the repacker and
 * the threaded driver over the platform table's tile kernel. */
#include <stdlib.h>
#include <string.h>

#include "bf16/bf16_internal.h"
#include "isa/platform.h"
#include "obx_common.h"
#include "onnxbit/bf16matmul.h"
#include "onnxbit/weight_memory.h"

/* K steps per kernel call: a quad's block (512 * 256 bytes) stays in L2 while
 * the row tiles of a task pass over it. */
#define BF16_K_BLOCK 512
/* Rows of one task: its outputs (32 * 128 floats) live on the stack. */
#define BF16_TASK_ROWS 32

OBX_API obx_bf16_weights *obx_bf16_prepack(const uint16_t *w, size_t w_count, int64_t k, int64_t n,
                                           char *err, size_t err_len) {
    if (err && err_len) err[0] = '\0';
    if (k < 0 || k > OBX_BF16_MAX_K || n < 0 || n > OBX_BF16_MAX_N) {
        obx_set_error(err, err_len, "K=%lld and N=%lld must be in [0, %d] and [0, %d]",
                      (long long)k, (long long)n, OBX_BF16_MAX_K, OBX_BF16_MAX_N);
        return NULL;
    }
    if (w_count != (size_t)k * (size_t)n) {
        obx_set_error(err, err_len, "the weight holds %zu values; K=%lld x N=%lld needs %zu",
                      w_count, (long long)k, (long long)n, (size_t)k * (size_t)n);
        return NULL;
    }
    if (!w && w_count) {
        obx_set_error(err, err_len, "weight pointer is NULL");
        return NULL;
    }
    obx_bf16_weights *out = calloc(1, sizeof *out);
    if (!out) {
        obx_set_error(err, err_len, "out of memory");
        return NULL;
    }
    out->k = (size_t)k;
    out->n = (size_t)n;
    out->quads = OBX_DIV_UP(out->n, BF16_QUAD_COLS);
    size_t panels = out->quads * BF16_QUAD_PANELS;
    size_t bytes = OBX_MAX(panels * out->k * BF16_PANEL_WORDS * sizeof(uint32_t), 64);
    out->words = obx_weight_alloc(bytes);
    if (!out->words) {
        free(out);
        obx_set_error(err, err_len, "out of memory repacking %zu bytes of weights", bytes);
        return NULL;
    }
    /* Row by row of W (its memory order), each row scattered to every panel. */
    for (size_t i = 0; i < out->k; i++) {
        const uint16_t *row = w + i * out->n;
        for (size_t p = 0; p < panels; p++) {
            uint32_t *step = out->words + (p * out->k + i) * BF16_PANEL_WORDS;
            size_t col = p * BF16_PANEL_COLS;
            for (size_t j = 0; j < BF16_PANEL_WORDS; j++) {
                uint32_t low = col + j < out->n ? row[col + j] : 0;
                uint32_t high = col + 16 + j < out->n ? row[col + 16 + j] : 0;
                step[j] = low | high << 16;
            }
        }
    }
    return out;
}

OBX_API void obx_bf16_free(obx_bf16_weights *w) {
    if (!w) return;
    obx_weight_free(w->words);
    free(w);
}

OBX_API size_t obx_bf16_k(const obx_bf16_weights *w) { return w ? w->k : 0; }
OBX_API size_t obx_bf16_n(const obx_bf16_weights *w) { return w ? w->n : 0; }

struct bf16_job {
    const struct bf16_kernels *kern;
    const obx_bf16_weights *w;
    const float *a, *bias;
    float *y;
    size_t m, row_chunks;
};

/* Task t: quad t / row_chunks, rows of chunk t % row_chunks. */
static void run_task(void *arg, size_t t) {
    const struct bf16_job *job = arg;
    const obx_bf16_weights *w = job->w;
    const size_t k = w->k, n = w->n, panel_stride = k * BF16_PANEL_WORDS;
    const size_t quad = t / job->row_chunks, row0 = (t % job->row_chunks) * BF16_TASK_ROWS;
    const size_t rows = OBX_MIN((size_t)BF16_TASK_ROWS, job->m - row0);
    const size_t col0 = quad * BF16_QUAD_COLS, cols = OBX_MIN((size_t)BF16_QUAD_COLS, n - col0);
    const uint32_t *quad_words = w->words + quad * BF16_QUAD_PANELS * panel_stride;
    float out[BF16_TASK_ROWS * BF16_QUAD_COLS] __attribute__((aligned(64)));
    memset(out, 0, rows * BF16_QUAD_COLS * sizeof(float));
    for (size_t kb = 0; kb < k; kb += BF16_K_BLOCK) {
        size_t steps = OBX_MIN((size_t)BF16_K_BLOCK, k - kb);
        for (size_t r = 0; r < rows; r += job->kern->max_rows) {
            size_t tile_rows = OBX_MIN(job->kern->max_rows, rows - r);
            job->kern->quad(quad_words + kb * BF16_PANEL_WORDS, panel_stride, steps,
                            job->a + (row0 + r) * k + kb, k, tile_rows, out + r * BF16_QUAD_COLS);
        }
    }
    for (size_t r = 0; r < rows; r++) {
        float *dst = job->y + (row0 + r) * n + col0;
        const float *src = out + r * BF16_QUAD_COLS;
        if (job->bias)
            for (size_t c = 0; c < cols; c++) dst[c] = src[c] + job->bias[col0 + c];
        else
            memcpy(dst, src, cols * sizeof(float));
    }
}

OBX_API int obx_bf16_compute(const obx_bf16_weights *w, const float *a, size_t m, const float *bias,
                             float *y, obx_parallel_for_fn par, void *runner, char *err,
                             size_t err_len) {
    if (err && err_len) err[0] = '\0';
    if (!w) {
        obx_set_error(err, err_len, "weights handle is NULL");
        return -1;
    }
    const struct obx_platform *platform = obx_platform_for_call(err, err_len);
    if (!platform) return -1;
    if (m == 0 || w->n == 0) return 0;
    if (obx_check_operands(a, y, w->k, err, err_len) != 0) return -1;
    struct bf16_job job = {platform->bf16, w, a, bias, y, m, OBX_DIV_UP(m, BF16_TASK_ROWS)};
    obx_run_tasks(par, runner, run_task, &job, w->quads * job.row_chunks);
    return 0;
}
