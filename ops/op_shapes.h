/* Shape inference shared by the matmul-like ops. */
#ifndef ONNXBIT_OP_SHAPES_H
#define ONNXBIT_OP_SHAPES_H

#include <stdint.h>

#include "ort_abi.h"

/* Output 0 is float32 with input `input`'s shape, its last dimension replaced
 * by `last`, keeping the symbolic dimensions. Best effort: when the input's
 * shape is unknown nothing is set, and the kernel reports bad inputs with the
 * node's name. */
void obx_infer_last_dimension(const OrtApi *api, OrtShapeInferContext *ctx, size_t input,
                              int64_t last);

#endif
