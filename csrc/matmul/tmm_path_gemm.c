/* TMM_PATH_F32_GEMM: float activations computed as an SGEMM. The activations
 * are transposed once per call into row blocks (at[k * width + i]). A task
 * covers up to TMM_GEMM_TASK_ROWS rows and TMM_GEMM_TASK_PANELS panels; it
 * walks K in slices, and within a slice decodes each K-block of each panel to
 * floats once and runs the register-blocked f32_gemm kernel of every row
 * block over it (the decode shared by the task's rows, the activation slice
 * by its panels). At most lanes / 2 rows take the pair form instead: two
 * panels share each vector (tmm_internal.h). Every output is one
 * chain of fused multiply-adds in k order (tmm_internal.h), whatever the ISA,
 * row block or task split. */
#include <stdlib.h>
#include <string.h>

#include "tmm_compute.h"
#include "tmm_scratch.h"

/* Most rows one task covers: their accumulators stay on the stack and their
 * activations of one K-block (144 x 512 bytes) in L2 while the decoded block
 * stays in L1. */
#define TMM_GEMM_TASK_ROWS 144
/* Most panels one task covers (their accumulators, 16 x 144 x 8 floats at
 * most, stay in L2). */
#define TMM_GEMM_TASK_PANELS 16
/* Bytes of activations one slice of a task's K loop covers (L2-resident):
 * few rows take K whole, so each panel's codes stream in one piece. */
#define TMM_GEMM_SLICE_BYTES ((size_t)256 << 10)

struct gemm_job {
    const struct tmm_job *job;
    float *at;         /* transposed activations, row blocks of `width` rows */
    size_t width;      /* rows of a full row block */
    size_t kpad;       /* K rounded up to whole K-blocks */
    size_t rows_per_task, panels_per_task, row_tasks;
    size_t task_rows;  /* rows of accumulators per panel of a task (blocks rounded up) */
    size_t slice_kblocks; /* K-blocks per slice of a task's K loop */
    float *acc;        /* every task's accumulators */
    int pairs;         /* the pair form: at most lanes / 2 rows, two panels a vector */
};

/* Rows of row block b (the last one rounded up to whole vectors). */
static size_t block_width(const struct gemm_job *gj, size_t b) {
    size_t lanes = gj->job->kern->f32_gemm_lanes;
    size_t left = gj->job->m - b * gj->width;
    return OBX_MIN(gj->width, OBX_DIV_UP(left, lanes) * lanes);
}

static void transpose_task(void *arg, size_t b) {
    const struct gemm_job *gj = arg;
    const struct tmm_job *job = gj->job;
    size_t k = job->w->k, width = block_width(gj, b), row0 = b * gj->width;
    float *at = gj->at + row0 * gj->kpad;
    memset(at, 0, width * gj->kpad * sizeof(float));
    for (size_t i = 0; i < width && row0 + i < job->m; i++) {
        const float *a = job->a + (row0 + i) * k;
        for (size_t t = 0; t < k; t++) at[t * width + i] = a[t];
    }
}

/* The pair form's activations: at2[t * lanes + 2 i + j] = a[i][t] for j = 0, 1. */
static void transpose_pairs(const struct gemm_job *gj) {
    const struct tmm_job *job = gj->job;
    size_t k = job->w->k, lanes = job->kern->f32_gemm_lanes;
    memset(gj->at, 0, lanes * gj->kpad * sizeof(float));
    for (size_t i = 0; i < job->m; i++)
        for (size_t t = 0; t < k; t++)
            gj->at[t * lanes + 2 * i] = gj->at[t * lanes + 2 * i + 1] = job->a[i * k + t];
}

static void gemm_pair_task(void *arg, size_t index) {
    const struct gemm_job *gj = arg;
    const struct tmm_job *job = gj->job;
    const obx_tmm_weights *w = job->w;
    const struct tmm_kernels *kern = job->kern;
    const size_t lanes = kern->f32_gemm_lanes;
    size_t p_begin = index * gj->panels_per_task;
    size_t p_end = OBX_MIN(w->n_panels, p_begin + gj->panels_per_task);
    float wdec2[2 * TMM_NR * TMM_KBLOCK] __attribute__((aligned(TMM_ALIGN)));
    float *acc = gj->acc + index * gj->panels_per_task * gj->task_rows * TMM_NR;
    float row_acc[TMM_NR];
    for (size_t p = p_begin; p < p_end; p += 2) {
        /* acc2[r * lanes + 2 i + j]: row i, column r of panel p + j */
        float *acc2 = acc + (p - p_begin) / 2 * TMM_NR * lanes;
        memset(acc2, 0, TMM_NR * lanes * sizeof(float));
        const uint8_t *panel0 = tmm_panel(w, p), *panel1 = p + 1 < p_end ? tmm_panel(w, p + 1) : NULL;
        for (size_t kb = 0; kb < w->kblocks; kb++) {
            kern->f32_gemm_pair_decode(panel0 + kb * TMM_NR * 32,
                                       panel1 ? panel1 + kb * TMM_NR * 32 : NULL, wdec2);
            kern->f32_gemm_pair(wdec2, gj->at + kb * TMM_KBLOCK * lanes, acc2);
        }
        for (size_t j = 0; j < 2 && p + j < p_end; j++)
            for (size_t row = 0; row < job->m; row++) {
                for (size_t r = 0; r < TMM_NR; r++)
                    row_acc[r] = acc2[r * lanes + 2 * row + j] * w->scales[(p + j) * TMM_NR + r];
                tmm_store_row(job, row, (p + j) * TMM_NR, tmm_panel_cols(w, p + j), row_acc);
            }
    }
}

static void gemm_task(void *arg, size_t index) {
    const struct gemm_job *gj = arg;
    const struct tmm_job *job = gj->job;
    const obx_tmm_weights *w = job->w;
    const struct tmm_kernels *kern = job->kern;
    size_t row_task = index % gj->row_tasks, panel_block = index / gj->row_tasks;
    size_t row_begin = row_task * gj->rows_per_task;
    size_t row_end = OBX_MIN(job->m, row_begin + gj->rows_per_task);
    size_t block_begin = row_begin / gj->width, block_end = OBX_DIV_UP(row_end, gj->width);
    size_t p_begin = panel_block * gj->panels_per_task;
    size_t p_end = OBX_MIN(w->n_panels, p_begin + gj->panels_per_task);
    float wdec[TMM_NR * TMM_KBLOCK] __attribute__((aligned(TMM_ALIGN)));
    /* acc of panel p, row block b: [column][row] at
     * acc + ((p - p_begin) * task_rows + (b - block_begin) * width) * TMM_NR */
    float *acc = gj->acc + index * gj->panels_per_task * gj->task_rows * TMM_NR;
    memset(acc, 0, (p_end - p_begin) * gj->task_rows * TMM_NR * sizeof(float));
    /* K outermost, in slices whose activations stay in L2 while every panel of
     * the task passes over them (A is read from memory once per task, not once
     * per panel). */
    for (size_t kb0 = 0; kb0 < w->kblocks; kb0 += gj->slice_kblocks) {
        size_t kb1 = OBX_MIN(w->kblocks, kb0 + gj->slice_kblocks);
        for (size_t p = p_begin; p < p_end; p++) {
            const uint8_t *panel = tmm_panel(w, p);
            float *panel_acc = acc + (p - p_begin) * gj->task_rows * TMM_NR;
            for (size_t kb = kb0; kb < kb1; kb++) {
                kern->f32_gemm_decode(panel + kb * TMM_NR * 32, wdec);
                for (size_t b = block_begin; b < block_end; b++) {
                    size_t width = block_width(gj, b);
                    const float *at = gj->at + b * gj->width * gj->kpad + kb * TMM_KBLOCK * width;
                    kern->f32_gemm(wdec, at, width,
                                   panel_acc + (b - block_begin) * gj->width * TMM_NR);
                }
            }
        }
    }
    float row_acc[TMM_NR];
    for (size_t p = p_begin; p < p_end; p++) {
        const float *panel_acc = acc + (p - p_begin) * gj->task_rows * TMM_NR;
        for (size_t row = row_begin; row < row_end; row++) {
            size_t b = row / gj->width, i = row % gj->width, width = block_width(gj, b);
            const float *block_acc = panel_acc + (b - block_begin) * gj->width * TMM_NR;
            for (size_t r = 0; r < TMM_NR; r++)
                row_acc[r] = block_acc[r * width + i] * w->scales[p * TMM_NR + r];
            tmm_store_row(job, row, p * TMM_NR, tmm_panel_cols(w, p), row_acc);
        }
    }
}

size_t tmm_run_gemm(struct tmm_job *job) {
    const obx_tmm_weights *w = job->w;
    struct gemm_job gj;
    memset(&gj, 0, sizeof gj);
    gj.job = job;
    gj.width = job->kern->f32_gemm_width;
    gj.kpad = w->kblocks * TMM_KBLOCK;
    size_t blocks = OBX_DIV_UP(job->m, gj.width);
    if (w->kblocks == 0 || gj.kpad > SIZE_MAX / sizeof(float) / gj.width / blocks) return 0;
    gj.at = tmm_scratch_get(blocks * gj.width * gj.kpad * sizeof(float));
    if (!gj.at) return 0;

    gj.rows_per_task = OBX_MAX(1, TMM_GEMM_TASK_ROWS / gj.width) * gj.width;
    gj.row_tasks = OBX_DIV_UP(job->m, gj.rows_per_task);
    gj.task_rows = OBX_MIN(gj.rows_per_task, blocks * gj.width);
    gj.panels_per_task = OBX_MIN(w->n_panels, (size_t)TMM_GEMM_TASK_PANELS);
    gj.slice_kblocks =
        OBX_MAX(1, TMM_GEMM_SLICE_BYTES / (gj.task_rows * TMM_KBLOCK * sizeof(float)));
    size_t tasks = gj.row_tasks * OBX_DIV_UP(w->n_panels, gj.panels_per_task);
    /* (n_panels + TMM_GEMM_TASK_PANELS) x (m + TMM_GEMM_TASK_ROWS) x TMM_NR floats
     * at most: a small multiple of the output y, which exists, so no overflow. */
    gj.acc = tmm_scratch_get(tasks * gj.panels_per_task * gj.task_rows * TMM_NR * sizeof(float));
    if (!gj.acc) {
        tmm_scratch_put(gj.at);
        return 0;
    }
    gj.pairs = job->kern->f32_gemm_pair && job->m <= job->kern->f32_gemm_lanes / 2;
    if (gj.pairs) {
        transpose_pairs(&gj);
        tmm_run_tasks(job, gemm_pair_task, &gj, tasks);
    } else {
        tmm_run_tasks(job, transpose_task, &gj, blocks);
        tmm_run_tasks(job, gemm_task, &gj, tasks);
    }
    tmm_scratch_put(gj.acc);
    tmm_scratch_put(gj.at);
    return job->m;
}
