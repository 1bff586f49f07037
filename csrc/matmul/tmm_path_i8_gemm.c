/* TMM_PATH_I8_GEMM: act_quant = 1, one scale group, many rows. A task takes
 * a tile of TMM_I8_GEMM_PANELS panels and a block of rows and walks K in
 * slabs: each slab of the tile's codes is decoded to bytes once (32 KiB,
 * L1-resident) and the register-blocked kernel runs every row tile of the
 * task over it, carrying its sums to the next slab; so the per-chunk
 * unpacking and the horizontal sums of the multiply kernel leave the inner
 * loop. The sums are the multiply kernel's integers and the epilogue the
 * shared one: the same bits as every other integer path. */
#include "tmm_compute.h"
#include "tmm_scratch.h"

/* Rows per task: the decode is paid once per task, so a task takes as many
 * rows as keep the tasks numerous enough (N = 4096 gives 128 column tiles). */
#define I8_GEMM_TASK_ROWS 256
/* K-blocks per slab: 8 x 4 KiB of decoded codes stay in a 48 KiB L1 while
 * the row tiles stream past (decoding all of K at once wrote it to L2 and
 * cost about 0.7 ms a call at K = N = 4096). */
#define I8_GEMM_SLAB_KBLOCKS 8

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
    size_t row_tiles = OBX_DIV_UP(row_end - row_begin, TMM_I8_GEMM_ROWS);
    size_t wdec_bytes = I8_GEMM_SLAB_KBLOCKS * 16 * TMM_I8_GEMM_PANELS * 64;
    uint8_t *wdec = tmm_scratch_get(wdec_bytes + row_tiles * TMM_I8_GEMM_CARRY * sizeof(int32_t));
    if (!wdec) {
        __atomic_store_n(&gj->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    int32_t *carry = (int32_t *)(wdec + wdec_bytes);
    /* Only the chunks the group covers: the row buffers end there. */
    const size_t t8_total = w->groups[0].chunk_end * (TMM_CHUNK / 8);
    /* At least one slab: K = 0 still stores its zero sums (and the bias). */
    const size_t slabs = OBX_MAX((size_t)1, OBX_DIV_UP(t8_total, 16 * I8_GEMM_SLAB_KBLOCKS));
    for (size_t slab = 0; slab < slabs; slab++) {
        size_t b0 = slab * I8_GEMM_SLAB_KBLOCKS;
        size_t b1 = OBX_MIN(w->kblocks, b0 + I8_GEMM_SLAB_KBLOCKS);
        size_t t8_count = OBX_MIN(t8_total - b0 * 16, (b1 - b0) * 16);
        int first = slab == 0, last = slab + 1 == slabs;
        job->kern->i8_gemm_decode(tmm_panel(w, p0), w->kblocks, b0, b1, panels, wdec);
        for (size_t tile_i = 0; tile_i < row_tiles; tile_i++) {
            size_t row0 = row_begin + tile_i * TMM_I8_GEMM_ROWS;
            size_t rows = OBX_MIN((size_t)TMM_I8_GEMM_ROWS, row_end - row0);
            const int8_t *q[TMM_I8_GEMM_ROWS];
            uint32_t usum[TMM_I8_GEMM_ROWS * TMM_I8_GEMM_PANELS * TMM_NR];
            for (size_t i = 0; i < rows; i++)
                q[i] = job->q_seg + (row0 + i) * job->seg_elems + b0 * TMM_KBLOCK;
            job->kern->i8_gemm(wdec, t8_count, rows, q, carry + tile_i * TMM_I8_GEMM_CARRY,
                               first, last ? usum : NULL);
            if (last) store_tile(job, p0, row0, rows, usum);
        }
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
