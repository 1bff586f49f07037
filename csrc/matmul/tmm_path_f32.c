/* The float-activation paths that decode weights to floats once and reuse
 * them for every row of a task through f32_dot: TMM_PATH_F32_DECODED, and
 * TMM_PATH_F32_SCALED, which folds per-group scales into the weights (and
 * for few rows multiplies with them straight from the codes). */
#include "tmm_compute.h"

/* Rows per call of the decoded float kernel (f32_dot): its 3 x 4 register
 * tile (twelve accumulators) is the widest that fits sixteen AVX2 registers. */
#define TMM_DOT_ROWS 3

/* Accumulates rows [row_begin, row_end) of a segment stretch against decoded
 * weights: acc[(row - row_begin) * TMM_NR + r] += sum over the span. a_offset
 * is the stretch's first element in each row's segment buffer. */
static void dot_rows(const struct tmm_job *job, const float *wbuf, size_t span, size_t row_begin,
                     size_t row_end, size_t a_offset, float *acc) {
    const float *a[TMM_MR];
    float sums[TMM_MR * TMM_NR];
    for (size_t row = row_begin; row < row_end; row += TMM_DOT_ROWS) {
        size_t rows = OBX_MIN((size_t)TMM_DOT_ROWS, row_end - row);
        for (size_t i = 0; i < rows; i++)
            a[i] = job->a_seg + (row + i) * job->seg_elems + a_offset;
        job->kern->f32_dot(wbuf, span, rows, a, sums);
        for (size_t i = 0; i < rows; i++)
            for (size_t r = 0; r < TMM_NR; r++)
                acc[(row - row_begin + i) * TMM_NR + r] += sums[i * TMM_NR + r];
    }
}

void tmm_panel_f32_decoded(const struct tmm_job *job, size_t p, size_t row_begin,
                           size_t row_end) {
    /* Too few rows to repay the decoding (the task at the end of M). */
    if (row_end - row_begin < TMM_MR) {
        tmm_panel_multiply(job, p, row_begin, row_end);
        return;
    }
    const obx_tmm_weights *w = job->w;
    const size_t n_groups = w->n_groups, rows_total = row_end - row_begin;
    const uint8_t *panel = tmm_panel(w, p);
    float wbuf[TMM_NR * TMM_DECODE_CHUNKS * TMM_CHUNK] __attribute__((aligned(TMM_ALIGN)));
    float acc[TMM_TASK_ROWS * TMM_NR], group_sum[TMM_TASK_ROWS * TMM_NR];
    for (size_t i = 0; i < rows_total * TMM_NR; i++) acc[i] = 0.0f;
    for (size_t g = 0; g < n_groups; g++) {
        const struct tmm_group *grp = &w->groups[g];
        for (size_t i = 0; i < rows_total * TMM_NR; i++) group_sum[i] = 0.0f;
        for (size_t cb = grp->chunk_begin; cb < grp->chunk_end; cb += TMM_DECODE_CHUNKS) {
            size_t ce = OBX_MIN(grp->chunk_end, cb + TMM_DECODE_CHUNKS);
            job->kern->f32_decode(panel, cb, ce, wbuf);
            dot_rows(job, wbuf, (ce - cb) * TMM_CHUNK, row_begin, row_end,
                     (grp->seg_offset + (cb - grp->chunk_begin)) * TMM_CHUNK, group_sum);
        }
        for (size_t i = 0; i < rows_total; i++)
            for (size_t r = 0; r < TMM_NR; r++)
                acc[i * TMM_NR + r] +=
                    group_sum[i * TMM_NR + r] * w->scales[(p * TMM_NR + r) * n_groups + g];
    }
    tmm_store_rows(job, p, row_begin, row_end, acc);
}

void tmm_panel_f32_scaled(const struct tmm_job *job, size_t p, size_t row_begin,
                          size_t row_end) {
    const obx_tmm_weights *w = job->w;
    const size_t rows_total = row_end - row_begin;
    const size_t n_chunks = OBX_DIV_UP(w->k, TMM_CHUNK);
    const uint8_t *panel = tmm_panel(w, p);
    const float *scales_pg = w->scales_pg + p * w->n_groups * TMM_NR;
    float acc[TMM_TASK_ROWS * TMM_NR];
    for (size_t i = 0; i < rows_total * TMM_NR; i++) acc[i] = 0.0f;
    if (rows_total >= TMM_MR && job->kern->f32_decode_scaled && w->segments_are_row) {
        /* Many rows, groups on chunk boundaries: decode the scaled weights once. */
        float wbuf[TMM_NR * TMM_DECODE_CHUNKS * TMM_CHUNK] __attribute__((aligned(TMM_ALIGN)));
        for (size_t cb = 0; cb < n_chunks; cb += TMM_DECODE_CHUNKS) {
            size_t ce = OBX_MIN(n_chunks, cb + TMM_DECODE_CHUNKS);
            job->kern->f32_decode_scaled(panel, cb, ce, w->chunk_group, scales_pg, wbuf);
            dot_rows(job, wbuf, (ce - cb) * TMM_CHUNK, row_begin, row_end, cb * TMM_CHUNK, acc);
        }
    } else {
        const float *a[TMM_MR];
        for (size_t row = row_begin; row < row_end; row += TMM_MR) {
            size_t rows = OBX_MIN((size_t)TMM_MR, row_end - row);
            for (size_t i = 0; i < rows; i++) a[i] = job->a_seg + (row + i) * job->seg_elems;
            job->kern->f32_scaled(panel, rows, a, w->groups, w->n_groups, scales_pg,
                                  acc + (row - row_begin) * TMM_NR);
        }
    }
    tmm_store_rows(job, p, row_begin, row_end, acc);
}
