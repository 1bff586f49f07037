/* obx_tmm_shape: every size of a ternary matmul checked against the others in
 * one place, so neither the custom op nor the Python API can hand the core a
 * count that wrapped around. Bounds keep every product below 2^63:
 * n * row_bytes <= 2^31 * 2^22 and n * n_groups <= 2^31 * 2^24. */
#include "obx_common.h"
#include "onnxbit/formats.h"
#include "onnxbit/tmatmul.h"

OBX_API int obx_tmm_shape_init(obx_tmm_shape *shape, int fmt, int64_t k, int64_t n,
                               int64_t group_size, char *err, size_t err_len) {
    if (!obx_format_known(fmt)) {
        obx_set_error(err, err_len, "unknown packed format %d (expected 0 .. %d)", fmt,
                      OBX_FMT_COUNT - 1);
        return -1;
    }
    if (k < 0 || k > OBX_TMM_MAX_K) {
        obx_set_error(err, err_len,
                      k < 0 ? "k = %lld must not be negative"
                            : "k = %lld is too large: the exact int32 accumulation needs k < %d",
                      (long long)k, OBX_TMM_MAX_K + 1);
        return -1;
    }
    if (n < 0 || n > OBX_TMM_MAX_N) {
        obx_set_error(err, err_len, "n = %lld must be in [0, %d]", (long long)n, OBX_TMM_MAX_N);
        return -1;
    }
    if (group_size < 0) {
        obx_set_error(err, err_len, "group_size=%lld must be 0 (not grouped) or positive",
                      (long long)group_size);
        return -1;
    }
    shape->fmt = fmt;
    shape->k = (size_t)k;
    shape->n = (size_t)n;
    shape->group_size = (size_t)group_size;
    shape->row_bytes = obx_packed_row_bytes(fmt, shape->k);
    shape->b_bytes = shape->n * shape->row_bytes;
    /* ceil(k / group_size) without forming k + group_size - 1 */
    shape->n_groups = group_size == 0 ? 1
                      : shape->k / shape->group_size + (shape->k % shape->group_size != 0);
    return 0;
}

OBX_API int obx_tmm_shape_check_buffers(const obx_tmm_shape *shape, uint64_t b_bytes,
                                        uint64_t n_scales, char *err, size_t err_len) {
    if (b_bytes < shape->b_bytes) {
        obx_set_error(err, err_len,
                      "packed weights hold %llu bytes, but %s needs n * ceil(k / %d) = %zu * %zu "
                      "= %zu", (unsigned long long)b_bytes, obx_format_name(shape->fmt),
                      obx_format_codes_per_byte(shape->fmt), shape->n, shape->row_bytes,
                      shape->b_bytes);
        return -1;
    }
    if (shape->group_size == 0) {
        if (n_scales != 1 && n_scales != shape->n) {
            obx_set_error(err, err_len,
                          "n_scales = %llu, expected 1 (per tensor) or n = %zu (per output "
                          "channel) when group_size is 0", (unsigned long long)n_scales, shape->n);
            return -1;
        }
        return 0;
    }
    if (n_scales != (uint64_t)shape->n * shape->n_groups) {
        obx_set_error(err, err_len,
                      "n_scales = %llu, expected n * ceil(k / group_size) = %zu * %zu = %zu for "
                      "group_size %zu", (unsigned long long)n_scales, shape->n, shape->n_groups,
                      shape->n * shape->n_groups, shape->group_size);
        return -1;
    }
    return 0;
}
