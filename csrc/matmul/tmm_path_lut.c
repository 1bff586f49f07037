/* TMM_PATH_I8_LUT: the table-lookup integer kernel over groups of 8 or 16
 * rows (one scale group). Rows it leaves over go to TMM_PATH_I8_MULTIPLY. */
#include <stdlib.h>

#include "tmm_compute.h"
#include "tmm_scratch.h"

/* The lookup kernel takes rows in groups of TMM_LUT_ROWS = 16, then, for the
 * 1..15 rows left: 12..15 as one zero-padded group of 16; 8..11 as a group of
 * 8 (128-bit tables) and the rest through the multiply kernel; 6..7 as one
 * zero-padded group of 8; 1..5 through the multiply kernel, which is faster
 * for so few rows (thresholds measured on Zen1 at K = N = 4096). */
#define TMM_LUT_SMALL_ROWS 8
#define TMM_LUT_PAD_FROM 12
#define TMM_LUT_SMALL_PAD_FROM 6
/* Panels per lookup task: each K-block's tables are built once per task, so a
 * task needs many columns to amortize them; 64 panels keep the task's int32
 * sums (64 * 8 * 16 * 4 bytes = 32 KiB) on the stack. */
#define TMM_LUT_PANELS 64

struct lut_job {
    const struct tmm_job *job;
    int16_t *qt;      /* row groups' int8 values as int16, k-major */
    size_t groups;    /* group g starts at row 16 g */
    size_t last_rows; /* rows of the last group: 8 or TMM_LUT_ROWS */
    size_t rows_done; /* rows the groups cover (padding rows excluded) */
};

static size_t k_padded(const obx_tmm_weights *w) { return w->kblocks * TMM_KBLOCK; }

static size_t group_rows(const struct lut_job *lut, size_t group) {
    return group + 1 == lut->groups ? lut->last_rows : TMM_LUT_ROWS;
}

static void plan_groups(struct lut_job *lut, size_t m) {
    size_t full = m / TMM_LUT_ROWS, rest = m % TMM_LUT_ROWS;
    lut->groups = full;
    lut->last_rows = TMM_LUT_ROWS;
    lut->rows_done = full * TMM_LUT_ROWS;
    if (rest >= TMM_LUT_PAD_FROM) {
        lut->groups++;
        lut->rows_done = m;
    } else if (rest >= TMM_LUT_SMALL_PAD_FROM) {
        lut->groups++;
        lut->last_rows = TMM_LUT_SMALL_ROWS;
        lut->rows_done += OBX_MIN(rest, (size_t)TMM_LUT_SMALL_ROWS);
    }
}

/* Row group index -> qt[k][i], zero for padding rows past m. */
static void transpose_task(void *arg, size_t index) {
    const struct lut_job *lut = arg;
    const struct tmm_job *job = lut->job;
    const size_t kp = k_padded(job->w), G = group_rows(lut, index);
    int16_t *qt = lut->qt + index * TMM_LUT_ROWS * kp;
    for (size_t i = 0; i < G; i++) {
        size_t row = index * TMM_LUT_ROWS + i;
        if (row >= job->m) {
            for (size_t k = 0; k < kp; k++) qt[k * G + i] = 0;
            continue;
        }
        /* The segment buffer is the zero-padded row (segments_are_row), kp long at least. */
        const int8_t *q = job->q_seg + row * job->seg_elems;
        for (size_t k = 0; k < kp; k++) qt[k * G + i] = q[k];
    }
}

static void lookup_task(void *arg, size_t index) {
    const struct lut_job *lut = arg;
    const struct tmm_job *job = lut->job;
    const obx_tmm_weights *w = job->w;
    size_t group = index % lut->groups, panel_block = index / lut->groups;
    const size_t G = group_rows(lut, group), row_begin = group * TMM_LUT_ROWS;
    size_t p_begin = panel_block * TMM_LUT_PANELS;
    size_t p_end = OBX_MIN(w->n_panels, p_begin + TMM_LUT_PANELS);
    uint32_t usum[TMM_LUT_PANELS * TMM_NR * TMM_LUT_ROWS] __attribute__((aligned(TMM_ALIGN)));
    job->kern->i8_lut(w->packed, w->kblocks, p_begin, p_end, G, lut->qt + row_begin * k_padded(w),
                      usum);
    size_t row_end = OBX_MIN(job->m, row_begin + G);
    for (size_t row = row_begin; row < row_end; row++) {
        size_t i = row - row_begin;
        uint32_t correction = (uint32_t)job->qsum[row]; /* n_groups == 1 */
        for (size_t p = p_begin; p < p_end; p++) {
            float acc[TMM_NR];
            for (size_t r = 0; r < TMM_NR; r++) {
                int32_t isum = (int32_t)(usum[((p - p_begin) * TMM_NR + r) * G + i] - correction);
                acc[r] = tmm_add_group(0.0f, isum, w->scales[p * TMM_NR + r]);
            }
            tmm_store_row(job, row, p * TMM_NR, tmm_panel_cols(w, p), acc);
        }
    }
}

size_t tmm_run_lut(struct tmm_job *job) {
    const obx_tmm_weights *w = job->w;
    struct lut_job lut = {job, NULL, 0, 0, 0};
    plan_groups(&lut, job->m);
    if (lut.groups == 0) return 0;
    size_t qt_bytes = lut.groups * TMM_LUT_ROWS * k_padded(w) * sizeof(int16_t);
    lut.qt = tmm_scratch_get(qt_bytes);
    /* Out of memory for the transposed rows: the multiply kernels need none. */
    if (!lut.qt) return 0;
    tmm_run_tasks(job, transpose_task, &lut, lut.groups);
    tmm_run_tasks(job, lookup_task, &lut, lut.groups * OBX_DIV_UP(w->n_panels, TMM_LUT_PANELS));
    tmm_scratch_put(lut.qt);
    return lut.rows_done;
}
