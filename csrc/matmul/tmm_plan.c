/* The one place that decides how obx_tmm_compute runs (tmm_compute.h lists
 * the paths and when each applies). */
#include "tmm_compute.h"

enum tmm_path tmm_plan(const obx_tmm_weights *w, const struct tmm_kernels *kern, size_t m,
                       int act_quant) {
    if (act_quant == OBX_ACT_INT8_TOKEN) {
        /* The lookup kernels read the zero-padded row as one segment. */
        int one_group = w->n_groups == 1 && w->segments_are_row;
        if (one_group && kern->gemv && w->gemv_packed && m <= TMM_GEMV_MAX_ROWS)
            return TMM_PATH_I8_GEMV;
        if (one_group && kern->i8_gemm && m >= TMM_I8_GEMM_MIN_ROWS) return TMM_PATH_I8_GEMM;
        if (one_group && kern->i8_lut) return TMM_PATH_I8_LUT;
        if (w->n_groups > 1 && kern->i8_groups) return TMM_PATH_I8_GROUPED;
        return TMM_PATH_I8_MULTIPLY;
    }
    if (w->n_groups > 1 && kern->f32_scaled) return TMM_PATH_F32_SCALED;
    if (w->n_groups == 1 && m >= TMM_GEMM_MIN_ROWS && kern->f32_gemm) return TMM_PATH_F32_GEMM;
    if (m >= TMM_MR && kern->f32_dot) return TMM_PATH_F32_DECODED;
    return TMM_PATH_F32_MULTIPLY;
}
