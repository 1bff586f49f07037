/* act_quant = 1 on rows the caller has already quantized (the channels-last
 * conv path builds each im2col row straight into int8): the integer paths of
 * tmm_plan without tmm_prepare_rows, so the float rows never exist. */
#include <string.h>

#include "tmm_compute.h"

size_t tmm_quantized_row_stride(const obx_tmm_weights *w) {
    return OBX_DIV_UP(w->seg_chunks * TMM_CHUNK, TMM_ALIGN) * TMM_ALIGN;
}

void tmm_compute_quantized(const struct tmm_kernels *kern, const obx_tmm_weights *w,
                           const struct tmm_quantized_rows *rows, size_t m, const float *bias, float *y,
                           size_t y_row_stride, size_t y_col_stride, obx_parallel_for_fn par, void *runner) {
    struct tmm_job job;
    memset(&job, 0, sizeof job);
    job.w = w;
    job.kern = kern;
    job.m = m;
    job.act_quant = OBX_ACT_INT8_TOKEN;
    job.seg_elems = tmm_quantized_row_stride(w);
    job.q_seg = rows->q;
    job.qsum = rows->qsum;
    job.row_scale = rows->scale;
    job.row_ok = rows->ok;
    job.bias = bias;
    job.y = y;
    job.y_row_stride = y_row_stride;
    job.y_col_stride = y_col_stride;
    job.par = par;
    job.runner = runner;
    if (m == 0 || w->n == 0) return;
    enum tmm_path path = tmm_plan(w, kern, m, OBX_ACT_INT8_TOKEN);
    size_t rows_done = 0;
    if (path == TMM_PATH_I8_GEMV) rows_done = tmm_run_gemv(&job);
    else if (path == TMM_PATH_I8_LUT) rows_done = tmm_run_lut(&job);
    else if (path == TMM_PATH_I8_GEMM) rows_done = tmm_run_i8_gemm(&job);
    if (rows_done < m) tmm_run_panels(&job, path, rows_done);
}
