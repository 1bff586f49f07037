/* TMM_PATH_I8_GEMM: act_quant = 1, one scale group, many rows. A task takes
 * a tile of TMM_I8_GEMM_PANELS panels and a block of rows, decodes the
 * tile's codes to bytes once (kblocks * 4 KiB: L2-resident at K = 4096), and
 * runs the register-blocked kernel over the rows TMM_I8_GEMM_ROWS at a time,
 * so the per-chunk unpacking and the horizontal sums of the multiply kernel
 * leave the inner loop. The sums are the multiply kernel's integers, the
 * epilogue the shared one: the same bits as every other integer path. */
#include "tmm_compute.h"
#include "tmm_scratch.h"

/* Rows per task: the decode is paid once per task, so a task takes as many
 * rows as keep the tasks numerous enough (N = 4096 gives 128 column tiles). */
#define I8_GEMM_TASK_ROWS 256

struct i8_gemm_job {
    const struct tmm_job *job;
    size_t row_blocks, tiles;
    int failed; /* a task found no memory for its decoded tile */
};

static void store_tile(const struct tmm_job *job, size_t p0, size_t row0, size_t rows,
                       const uint32_t *usum) {
    const obx_tmm_weights *w = job->w;
    for (size_t i = 0; i < rows; i++) {
        size_t row = row0 + i;
        uint32_t correction = (uint32_t)job->qsum[row]; /* n_groups == 1 */
        for (size_t v = 0; v < TMM_I8_GEMM_PANELS && p0 + v < w->n_panels; v++) {
            size_t p = p0 + v;
            float acc[TMM_NR];
            for (size_t r = 0; r < TMM_NR; r++) {
                /* usum = sum (w + 1) q mod 2^32; the difference is the exact isum. */
                int32_t isum =
                    (int32_t)(usum[(i * TMM_I8_GEMM_PANELS + v) * TMM_NR + r] - correction);
                acc[r] = tmm_add_group(0.0f, isum, w->scales[p * TMM_NR + r]);
            }
            tmm_store_row(job, row, p * TMM_NR, tmm_panel_cols(w, p), acc);
        }
    }
}

static void i8_gemm_task(void *arg, size_t index) {
    struct i8_gemm_job *gj = arg;
    const struct tmm_job *job = gj->job;
    const obx_tmm_weights *w = job->w;
    size_t row_block = index % gj->row_blocks, tile = index / gj->row_blocks;
    size_t row_begin = row_block * I8_GEMM_TASK_ROWS;
    size_t row_end = OBX_MIN(job->m, row_begin + I8_GEMM_TASK_ROWS);
    size_t p0 = tile * TMM_I8_GEMM_PANELS;
    size_t panels = OBX_MIN((size_t)TMM_I8_GEMM_PANELS, w->n_panels - p0);
    uint8_t *wdec = tmm_scratch_get(w->kblocks * 16 * TMM_I8_GEMM_PANELS * 64);
    if (!wdec) {
        __atomic_store_n(&gj->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    job->kern->i8_gemm_decode(tmm_panel(w, p0), w->kblocks, panels, wdec);
    /* Only the chunks the group covers: the row buffers end there. */
    const size_t t8_count = w->groups[0].chunk_end * (TMM_CHUNK / 8);
    for (size_t row0 = row_begin; row0 < row_end; row0 += TMM_I8_GEMM_ROWS) {
        size_t rows = OBX_MIN((size_t)TMM_I8_GEMM_ROWS, row_end - row0);
        const int8_t *q[TMM_I8_GEMM_ROWS];
        uint32_t usum[TMM_I8_GEMM_ROWS * TMM_I8_GEMM_PANELS * TMM_NR];
        for (size_t i = 0; i < rows; i++) q[i] = job->q_seg + (row0 + i) * job->seg_elems;
        job->kern->i8_gemm(wdec, t8_count, rows, q, usum);
        store_tile(job, p0, row0, rows, usum);
    }
    tmm_scratch_put(wdec);
}

size_t tmm_run_i8_gemm(struct tmm_job *job) {
    const obx_tmm_weights *w = job->w;
    struct i8_gemm_job gj = {job, OBX_DIV_UP(job->m, I8_GEMM_TASK_ROWS),
                             OBX_DIV_UP(w->n_panels, TMM_I8_GEMM_PANELS), 0};
    tmm_run_tasks(job, i8_gemm_task, &gj, gj.row_blocks * gj.tiles);
    /* Out of memory for a decoded tile: every row again by the multiply
     * kernel, which needs none (the rows' outputs are simply rewritten). */
    return gj.failed ? 0 : job->m;
}
