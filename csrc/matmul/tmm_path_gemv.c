/* TMM_PATH_I8_GEMV: the single-row lookup kernel (the GEMV slots of the
 * kernel table) over the column-block layout, for token rows (M <=
 * TMM_GEMV_MAX_ROWS, one scale group), one row at a time. */
#include <stdlib.h>

#include "tmm_compute.h"
#include "tmm_scratch.h"

struct gemv_job {
    const struct tmm_job *job;
    uint8_t *tables;     /* each row's pair tables */
    size_t task_cblocks; /* column blocks per task */
};

static size_t table_bytes(const obx_tmm_weights *w) { return w->kblocks * (TMM_KBLOCK / 2) * 32; }

static void gemv_task(void *arg, size_t index) {
    const struct gemv_job *gemv = arg;
    const struct tmm_job *job = gemv->job;
    const obx_tmm_weights *w = job->w;
    size_t cb_begin = index * gemv->task_cblocks;
    size_t cb_end = OBX_MIN(w->gemv_cblocks, cb_begin + gemv->task_cblocks);
    uint32_t sums[TMM_GEMV_TASK_CBLOCKS * TMM_GEMV_COLS];
    float acc[TMM_GEMV_TASK_CBLOCKS * TMM_GEMV_COLS];
    /* Every pair of k adds 256 in the kernel (modulo 2^32, as the result). */
    const uint32_t pair_bias = (uint32_t)(w->kblocks * (TMM_KBLOCK / 2) * 256u);
    size_t col_begin = cb_begin * TMM_GEMV_COLS;
    size_t col_end = OBX_MIN(w->n, cb_end * TMM_GEMV_COLS);
    for (size_t row = 0; row < job->m; row++) {
        if (job->row_ok[row]) {
            job->kern->gemv(w->gemv_packed, w->kblocks, w->gemv_cblocks,
                            gemv->tables + row * table_bytes(w), cb_begin, cb_end, sums);
            for (size_t col = col_begin; col < col_end; col++) {
                int32_t isum = (int32_t)(sums[col - col_begin] - pair_bias);
                acc[col - col_begin] = tmm_add_group(0.0f, isum, w->scales[col]);
            }
        }
        tmm_store_row(job, row, col_begin, col_end - col_begin, acc);
    }
}

size_t tmm_run_gemv(struct tmm_job *job) {
    const obx_tmm_weights *w = job->w;
    struct gemv_job gemv = {job, NULL, 0};
    size_t bytes = job->m * table_bytes(w);
    gemv.tables = tmm_scratch_get(bytes);
    /* Out of memory for the tables: the multiply path needs none. */
    if (!gemv.tables) return 0;
    for (size_t row = 0; row < job->m; row++)
        job->kern->gemv_tables(job->q_seg + row * job->seg_elems, w->kblocks,
                               gemv.tables + row * table_bytes(w));
    /* Sized and balanced as on the multiply paths. */
    size_t block_work = job->m * OBX_MAX(w->k, 1) * TMM_GEMV_COLS;
    gemv.task_cblocks = tmm_units_per_task(w->gemv_cblocks, block_work, TMM_GEMV_TASK_CBLOCKS);
    tmm_run_tasks(job, gemv_task, &gemv, OBX_DIV_UP(w->gemv_cblocks, gemv.task_cblocks));
    tmm_scratch_put(gemv.tables);
    return job->m;
}
