/* The body of obx_tmm_compute: activation preparation (int8 quantization or
 * float copy into segment buffers), the planned path, and the task split of
 * the panel-walking paths over the parallel-for callback. */
#include <stdlib.h>
#include <string.h>

#include "tmm_compute.h"
#include "tmm_scratch.h"

/* Rows per activation-preparation task. */
#define TMM_PREP_ROWS 8

void tmm_run_tasks(const struct tmm_job *job, obx_task_fn fn, void *arg, size_t count) {
    obx_run_tasks(job->par, job->runner, fn, arg, count);
}

/* ---- activation preparation ------------------------------------------- */

static void prepare_row_i8(const struct tmm_job *job, size_t row, int8_t *q_tmp) {
    const obx_tmm_weights *w = job->w;
    const float *a = job->a + row * w->k;
    int8_t *seg = job->q_seg + row * job->seg_elems;
    int32_t *qsum = job->qsum + row * w->n_groups;
    memset(seg, 0, job->seg_elems);
    int8_t *q = w->segments_are_row ? seg : q_tmp;
    float s = job->act_scale;
    int ok = s > 0.0f ? job->quantize_static(a, w->k, s, q) : job->kern->quantize(a, w->k, q, &s);
    job->row_ok[row] = (uint8_t)ok;
    job->row_scale[row] = s;
    if (!ok) {
        /* The kernels still run on this row; give them defined input. */
        memset(q, 0, w->k);
    }
    for (size_t g = 0; g < w->n_groups; g++) {
        const struct tmm_group *grp = &w->groups[g];
        int32_t sum = 0; /* |sum| <= 128 k < 2^31 */
        for (size_t k = grp->k_begin; k < grp->k_end; k++) sum += q[k];
        qsum[g] = sum;
        if (!w->segments_are_row) {
            int8_t *dst = seg + grp->seg_offset * TMM_CHUNK;
            size_t base = grp->chunk_begin * TMM_CHUNK;
            memcpy(dst + (grp->k_begin - base), q + grp->k_begin, grp->k_end - grp->k_begin);
        }
    }
}

static void prepare_row_f32(const struct tmm_job *job, size_t row) {
    const obx_tmm_weights *w = job->w;
    const float *a = job->a + row * w->k;
    float *seg = job->a_seg + row * job->seg_elems;
    memset(seg, 0, job->seg_elems * sizeof(float));
    for (size_t g = 0; g < w->n_groups; g++) {
        const struct tmm_group *grp = &w->groups[g];
        float *dst = seg + grp->seg_offset * TMM_CHUNK;
        size_t base = grp->chunk_begin * TMM_CHUNK;
        memcpy(dst + (grp->k_begin - base), a + grp->k_begin,
               (grp->k_end - grp->k_begin) * sizeof(float));
    }
}

static void prepare_task(void *arg, size_t index) {
    const struct tmm_job *job = arg;
    size_t begin = index * TMM_PREP_ROWS, end = OBX_MIN(job->m, begin + TMM_PREP_ROWS);
    for (size_t row = begin; row < end; row++) {
        if (job->act_quant == OBX_ACT_INT8_TOKEN)
            prepare_row_i8(job, row, job->q_tmp ? job->q_tmp + index * job->w->k : NULL);
        else
            prepare_row_f32(job, row);
    }
}

void tmm_prepare_rows(struct tmm_job *job) {
    tmm_run_tasks(job, prepare_task, job, OBX_DIV_UP(job->m, TMM_PREP_ROWS));
}

/* ---- panel-walking paths ------------------------------------------------ */

struct panel_job {
    const struct tmm_job *job;
    tmm_panel_fn panel_rows;
    size_t row_start; /* first row of these tasks */
    size_t rows_per_task, panels_per_task, row_blocks;
};

static void panel_task(void *arg, size_t index) {
    const struct panel_job *pj = arg;
    size_t row_block = index % pj->row_blocks, panel_block = index / pj->row_blocks;
    size_t row_begin = pj->row_start + row_block * pj->rows_per_task;
    size_t row_end = OBX_MIN(pj->job->m, row_begin + pj->rows_per_task);
    size_t p_begin = panel_block * pj->panels_per_task;
    size_t p_end = OBX_MIN(pj->job->w->n_panels, p_begin + pj->panels_per_task);
    for (size_t p = p_begin; p < p_end; p++) pj->panel_rows(pj->job, p, row_begin, row_end);
}

static tmm_panel_fn panel_function(enum tmm_path path) {
    switch (path) {
    case TMM_PATH_I8_GROUPED: return tmm_panel_i8_grouped;
    case TMM_PATH_F32_SCALED: return tmm_panel_f32_scaled;
    case TMM_PATH_F32_DECODED: return tmm_panel_f32_decoded;
    /* the lookup paths leave their remaining rows to the multiply kernel */
    default: return tmm_panel_multiply;
    }
}

void tmm_run_panels(const struct tmm_job *job, enum tmm_path path, size_t row_begin) {
    const obx_tmm_weights *w = job->w;
    struct panel_job pj = {job, panel_function(path), row_begin, 0, 0, 0};
    pj.rows_per_task = OBX_MIN(job->m - row_begin, (size_t)TMM_TASK_ROWS);
    size_t row_work = pj.rows_per_task * OBX_MAX(w->k, 1) * TMM_NR;
    pj.panels_per_task = tmm_units_per_task(w->n_panels, row_work, w->n_panels);
    pj.row_blocks = OBX_DIV_UP(job->m - row_begin, pj.rows_per_task);
    tmm_run_tasks(job, panel_task, &pj, pj.row_blocks * OBX_DIV_UP(w->n_panels, pj.panels_per_task));
}

/* ---- one call ------------------------------------------------------------ */

int tmm_compute(const struct tmm_kernels *kern, tmm_quantize_static_fn quantize_static,
                const obx_tmm_weights *w, const float *a, size_t m, const float *bias,
                int act_quant, float act_scale, float *y, obx_parallel_for_fn par,
                void *runner, char *err, size_t err_len) {
    struct tmm_job job;
    memset(&job, 0, sizeof job);
    job.w = w;
    job.kern = kern;
    job.m = m;
    /* The static mode differs only in how rows become int8 (prepare_row_i8):
     * every path and the epilogue then run as for per-token scales. */
    if (act_quant == OBX_ACT_INT8_STATIC) {
        act_quant = OBX_ACT_INT8_TOKEN;
        job.act_scale = act_scale;
        job.quantize_static = quantize_static;
    }
    job.act_quant = act_quant;
    job.a = a;
    job.bias = bias;
    job.y = y;
    job.y_row_stride = w->n;
    job.y_col_stride = 1;
    job.par = par;
    job.runner = runner;

    size_t prep_tasks = OBX_DIV_UP(m, TMM_PREP_ROWS);
    size_t seg_elems = w->seg_chunks * TMM_CHUNK;
    size_t elem = act_quant == OBX_ACT_INT8_TOKEN ? 1 : sizeof(float);
    size_t row_bytes = OBX_DIV_UP(seg_elems * elem, TMM_ALIGN) * TMM_ALIGN;
    size_t extra_per_row = w->n_groups * sizeof(int32_t) + sizeof(float) + 1;
    size_t tmp_bytes = (act_quant == OBX_ACT_INT8_TOKEN && !w->segments_are_row)
                           ? prep_tasks * (w->k + 1) : 0;
    if (m > (SIZE_MAX / 2 - tmp_bytes) / (row_bytes + extra_per_row + 16)) {
        obx_set_error(err, err_len, "m = %zu rows is too large for the activation buffer", m);
        return -1;
    }
    size_t total = m * row_bytes + m * (extra_per_row + 16) + tmp_bytes + TMM_ALIGN;
    uint8_t *scratch = tmm_scratch_get(total);
    if (!scratch) {
        obx_set_error(err, err_len, "out of memory for %zu activation rows", m);
        return -1;
    }
    uint8_t *cursor = scratch;
    if (act_quant == OBX_ACT_INT8_TOKEN) job.q_seg = (int8_t *)cursor;
    else job.a_seg = (float *)cursor;
    cursor += m * row_bytes;
    job.qsum = (int32_t *)cursor;
    cursor += m * w->n_groups * sizeof(int32_t);
    job.row_scale = (float *)cursor;
    cursor += m * sizeof(float);
    job.row_ok = cursor;
    cursor += m;
    job.q_tmp = tmp_bytes ? (int8_t *)cursor : NULL;
    /* seg_elems * elem is a multiple of 32 bytes; rows are then aligned by row_bytes. */
    job.seg_elems = row_bytes / elem;

    enum tmm_path path = tmm_plan(w, kern, m, act_quant);
    size_t rows_done = 0;
    /* The GEMM path reads A itself; the segment buffers serve only its fallback. */
    if (path == TMM_PATH_F32_GEMM) rows_done = tmm_run_gemm(&job);
    if (rows_done < m) tmm_prepare_rows(&job);
    if (path == TMM_PATH_I8_GEMV) rows_done = tmm_run_gemv(&job);
    else if (path == TMM_PATH_I8_LUT) rows_done = tmm_run_lut(&job);
    else if (path == TMM_PATH_I8_GEMM) rows_done = tmm_run_i8_gemm(&job);
    if (rows_done < m) tmm_run_panels(&job, path, rows_done);
    tmm_scratch_put(scratch);
    return 0;
}
