/* Shared between the conv paths (not public). */
#ifndef ONNXBIT_TCONV_INTERNAL_H
#define ONNXBIT_TCONV_INTERNAL_H

#include "onnxbit/tconv.h"

struct obx_tconv_weights {
    size_t m, cg, group, m_per_group, k; /* k = cg * kernel positions */
    size_t kernel_positions;
    obx_tmm_weights **groups; /* im2col path: one prepacked matrix per conv group */
    int8_t *codes;            /* depthwise path: [m, kernel_positions] */
    float *scales;            /* depthwise path: m per-channel scales */
};

/* The direct depthwise kernel for one (image, output channel) plane; scratch
 * holds 3 * out_h * out_w * 4 bytes (used with act_quant only). act_scale: the
 * static scale of act_quant = OBX_ACT_INT8_STATIC. */
void obx_tconv_depthwise_plane(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                               const float *bias, int act_quant, float act_scale, float *y, size_t image,
                               size_t channel, void *scratch);

#endif
