/* The public entry points of tmatmul.h that take their kernels from the
 * platform table: argument checks, then the repacker or the compute body. */
#include <float.h>
#include <string.h>

#include "isa/platform.h"
#include "obx_common.h"
#include "tmm_compute.h"

OBX_API obx_tmm_weights *obx_tmm_prepack(int fmt, const uint8_t *b, size_t b_bytes, int64_t k,
                                         int64_t n, const float *scales, size_t n_scales,
                                         int64_t group_size, char *err, size_t err_len) {
    if (err && err_len) err[0] = '\0';
    obx_tmm_shape shape;
    if (obx_tmm_shape_init(&shape, fmt, k, n, group_size, err, err_len) != 0 ||
        obx_tmm_shape_check_buffers(&shape, b_bytes, n_scales, err, err_len) != 0)
        return NULL;
    return tmm_prepack(&shape, obx_platform()->tmm, b, scales, n_scales, err, err_len);
}

OBX_API int obx_tmm_compute(const obx_tmm_weights *w, const float *a, size_t m, const float *bias,
                            int act_quant, float *y, obx_parallel_for_fn par, void *runner,
                            char *err, size_t err_len) {
    return obx_tmm_compute_scaled(w, a, m, bias, act_quant, 0.0f, y, par, runner, err, err_len);
}

OBX_API int obx_tmm_compute_scaled(const obx_tmm_weights *w, const float *a, size_t m,
                                   const float *bias, int act_quant, float act_scale, float *y,
                                   obx_parallel_for_fn par, void *runner, char *err,
                                   size_t err_len) {
    if (err && err_len) err[0] = '\0';
    if (!w) {
        obx_set_error(err, err_len, "weights handle is NULL");
        return -1;
    }
    if (act_quant != OBX_ACT_NONE && act_quant != OBX_ACT_INT8_TOKEN &&
        act_quant != OBX_ACT_INT8_STATIC) {
        obx_set_error(err, err_len,
                      "unknown act_quant %d (expected %d = none, %d = int8 per token or "
                      "%d = int8 with a static scale)",
                      act_quant, OBX_ACT_NONE, OBX_ACT_INT8_TOKEN, OBX_ACT_INT8_STATIC);
        return -1;
    }
    /* isfinite and > 0; the negated form also refuses NaN. */
    if (act_quant == OBX_ACT_INT8_STATIC && !(act_scale > 0.0f && act_scale <= FLT_MAX)) {
        obx_set_error(err, err_len,
                      "act_quant %d needs a finite act_scale > 0, got %g (obx_tmm_compute has "
                      "none: call obx_tmm_compute_scaled)",
                      OBX_ACT_INT8_STATIC, (double)act_scale);
        return -1;
    }
    const struct obx_platform *platform = obx_platform_for_call(err, err_len);
    if (!platform) return -1;
    if (m == 0 || w->n == 0) return 0;
    if (obx_check_operands(a, y, w->k, err, err_len) != 0) return -1;
    return tmm_compute(platform->tmm, platform->quantize_static, w, a, m, bias, act_quant,
                       act_scale, y, par, runner, err, err_len);
}

OBX_API const char *obx_tmm_path_name(const obx_tmm_weights *w, size_t m, int act_quant) {
    static const char *const names[] = {
        [TMM_PATH_I8_GEMV] = "i8_gemv",         [TMM_PATH_I8_LUT] = "i8_lut", [TMM_PATH_I8_GEMM] = "i8_gemm",
        [TMM_PATH_I8_GROUPED] = "i8_grouped",   [TMM_PATH_I8_MULTIPLY] = "i8_multiply",
        [TMM_PATH_F32_GEMM] = "f32_gemm",       [TMM_PATH_F32_SCALED] = "f32_scaled",
        [TMM_PATH_F32_DECODED] = "f32_decoded", [TMM_PATH_F32_MULTIPLY] = "f32_multiply",
    };
    if (!w) return "";
    /* The static mode takes the per-token mode's paths. */
    if (act_quant == OBX_ACT_INT8_STATIC) act_quant = OBX_ACT_INT8_TOKEN;
    return names[tmm_plan(w, obx_platform()->tmm, m, act_quant)];
}
