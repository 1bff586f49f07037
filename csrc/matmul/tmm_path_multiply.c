/* TMM_PATH_I8_MULTIPLY and TMM_PATH_F32_MULTIPLY: the multiply kernel of the
 * activation kind (i8 or f32) straight from the codes, group by group, on up
 * to TMM_MR rows at once; and TMM_PATH_I8_GROUPED, where one kernel call
 * covers every group of a row. */
#include "tmm_compute.h"

/* acc[i * TMM_NR + r] += group g's sum of rows row0 + i, scaled (tmatmul.h order);
 * group 0 starts from 0.0f instead of reading acc. (Zeroing acc first cost
 * 11% of an M = 128 int8 call: GCC turned it into a `rep stosq`, whose
 * start-up dominates at 128 bytes.) */
static void add_group(const struct tmm_job *job, size_t p, size_t row0, size_t rows, size_t g,
                      float *acc) {
    const obx_tmm_weights *w = job->w;
    const struct tmm_group *grp = &w->groups[g];
    const uint8_t *panel = tmm_panel(w, p);
    const size_t seg = grp->seg_offset * TMM_CHUNK;
    const float *scales = w->scales + p * TMM_NR * w->n_groups + g;
    if (job->act_quant == OBX_ACT_INT8_TOKEN) {
        const int8_t *q[TMM_MR];
        uint32_t usum[TMM_MR * TMM_NR];
        for (size_t i = 0; i < rows; i++) q[i] = job->q_seg + (row0 + i) * job->seg_elems + seg;
        job->kern->i8(panel, w->kblocks, rows, q, grp->chunk_begin, grp->chunk_end, usum);
        for (size_t i = 0; i < rows; i++) {
            uint32_t correction = (uint32_t)job->qsum[(row0 + i) * w->n_groups + g];
            for (size_t r = 0; r < TMM_NR; r++) {
                /* usum = sum (w + 1) q mod 2^32; the difference is the exact isum. */
                int32_t isum = (int32_t)(usum[i * TMM_NR + r] - correction);
                acc[i * TMM_NR + r] = tmm_add_group(g == 0 ? 0.0f : acc[i * TMM_NR + r], isum,
                                                    scales[r * w->n_groups]);
            }
        }
        return;
    }
    const float *a[TMM_MR];
    float sums[TMM_MR * TMM_NR];
    for (size_t i = 0; i < rows; i++) a[i] = job->a_seg + (row0 + i) * job->seg_elems + seg;
    job->kern->f32(panel, w->kblocks, rows, a, grp->chunk_begin, grp->chunk_end, sums);
    for (size_t i = 0; i < rows; i++)
        for (size_t r = 0; r < TMM_NR; r++)
            acc[i * TMM_NR + r] = (g == 0 ? 0.0f : acc[i * TMM_NR + r]) +
                                  sums[i * TMM_NR + r] * scales[r * w->n_groups];
}

void tmm_panel_multiply(const struct tmm_job *job, size_t p, size_t row_begin, size_t row_end) {
    for (size_t row0 = row_begin; row0 < row_end; row0 += TMM_MR) {
        size_t rows = OBX_MIN((size_t)TMM_MR, row_end - row0);
        float acc[TMM_MR * TMM_NR];
        if (job->w->n_groups == 0) /* K = 0 with a group size: every sum is empty */
            for (size_t i = 0; i < TMM_MR * TMM_NR; i++) acc[i] = 0.0f;
        for (size_t g = 0; g < job->w->n_groups; g++) add_group(job, p, row0, rows, g, acc);
        tmm_store_rows(job, p, row0, row0 + rows, acc);
    }
}

void tmm_panel_i8_grouped(const struct tmm_job *job, size_t p, size_t row_begin,
                          size_t row_end) {
    const obx_tmm_weights *w = job->w;
    float acc[TMM_NR] = {0};
    for (size_t row = row_begin; row < row_end; row++) {
        if (job->row_ok[row]) /* a row of NaN is stored without sums */
            job->kern->i8_groups(tmm_panel(w, p), job->q_seg + row * job->seg_elems, w->groups,
                                 w->n_groups, w->max_group_chunks, job->qsum + row * w->n_groups,
                                 w->scales_pg + p * w->n_groups * TMM_NR, acc);
        tmm_store_row(job, row, p * TMM_NR, tmm_panel_cols(w, p), acc);
    }
}
