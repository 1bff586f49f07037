/* The platform table: every kernel family's entry points for the code path in
 * use, chosen once per process (as MLAS does with MlasPlatform). One init reads
 * CPUID and the ONNXBIT_ISA override; obx_isa_force re-selects. Every caller
 * reads its kernels from obx_platform() and never tests the ISA itself. */
#ifndef ONNXBIT_PLATFORM_H
#define ONNXBIT_PLATFORM_H

#include "bf16/bf16_internal.h"
#include "codec/codec_columns.h"
#include "codec/codec_internal.h"
#include "conv/tconv_pixel_lanes.h"
#include "conv/tconv_rows.h"
#include "integrity/crc32c_internal.h"
#include "matmul/tmm_internal.h"
#include "matmul/tmm_quantize_static.h"
#include "obx_common.h"
#include "onnxbit/isa.h"

struct obx_platform {
    int isa; /* OBX_ISA_* served; -1 when ONNXBIT_ISA named what cannot run */
    const obx_codec_kernels *codec;
    obx_cols_gather_fn cols_gather; /* transposing tile copy of the column codecs */
    const struct tmm_kernels *tmm;  /* ternary matmul, with optional slots */
    const struct tconv_row_kernels *conv_rows; /* direct depthwise convolution */
    obx_crc32c_fn crc32c;           /* checksums of packed weights */
    tmm_quantize_static_fn quantize_static; /* act_quant = 2: rows to int8 by a fixed scale */
    const struct tconv_lanes_kernels *conv_lanes; /* pixel-lanes conv (NULL: the path is not taken) */
    const struct bf16_kernels *bf16; /* bfloat16-weight matmul tiles */
};

/* The table in use (never NULL). When selection failed it holds the scalar
 * kernels and isa = -1, so C callers still compute; Python refuses to run. */
const struct obx_platform *obx_platform(void);

/* The table one compute call uses, read once (a concurrent obx_isa_force does
 * not switch kernels mid-call); NULL with the selection error in err when
 * ONNXBIT_ISA named what cannot run. */
static inline const struct obx_platform *obx_platform_for_call(char *err, size_t err_len) {
    const struct obx_platform *platform = obx_platform();
    if (platform->isa >= 0) return platform;
    obx_set_error(err, err_len, "%s", obx_isa_error());
    return NULL;
}

#endif
