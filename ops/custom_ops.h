/* The custom ops this library registers in the com.onnxbit domain. */
#ifndef ONNXBIT_CUSTOM_OPS_H
#define ONNXBIT_CUSTOM_OPS_H

#include <stdint.h>

#include "ort_abi.h"

#define OBX_OP_DOMAIN "com.onnxbit"

/* The op's callback table for a runtime serving `api` at `api_version`
 * (already capped at ORT_ABI_MAX_VERSION): the table says that version, and callbacks the
 * runtime cannot use are left NULL. Call once per process, before the first
 * registration hands the table to onnxruntime. */
const OrtCustomOp *obx_ternary_matmul_op(const OrtApi *api, uint32_t api_version);

#endif
