/* Shape inference shared by the matmul-like ops (op_shapes.h). */
#include "op_shapes.h"

#include "op_inputs.h"
#include "op_status.h"

void obx_infer_last_dimension(const OrtApi *api, OrtShapeInferContext *ctx, size_t input,
                              int64_t last)
{
    OrtTensorTypeAndShapeInfo *a_info = NULL; /* owned by ctx */
    size_t rank = 0;
    OrtStatus *status = api->ShapeInferContext_GetInputTypeShape(ctx, input, &a_info);
    if (!status)
        status = api->GetDimensionsCount(a_info, &rank);
    /* Rank 0 is how an unknown shape arrives; a real scalar input is an error
     * the kernel reports. */
    if (status || rank == 0 || rank > OBX_OP_MAX_RANK) {
        obx_status_discard(api, status);
        return;
    }
    int64_t dims[OBX_OP_MAX_RANK];
    const char *symbols[OBX_OP_MAX_RANK];
    status = api->GetDimensions(a_info, dims, rank);
    if (!status)
        status = api->GetSymbolicDimensions(a_info, symbols, rank);
    if (status) {
        obx_status_discard(api, status);
        return;
    }
    /* An unknown dimension without a name cannot be expressed: onnxruntime
     * would read -1 as a concrete size and constant-fold Shape(Y) to it. Say
     * nothing then and let the runtime learn Y's shape when it runs. */
    for (size_t i = 0; i + 1 < rank; i++) {
        if (dims[i] < 0 && (symbols[i] == NULL || symbols[i][0] == '\0'))
            return;
    }
    dims[rank - 1] = last;
    symbols[rank - 1] = "";

    OrtTensorTypeAndShapeInfo *y_info = NULL;
    status = api->CreateTensorTypeAndShapeInfo(&y_info);
    if (status) {
        obx_status_discard(api, status);
        return;
    }
    status = api->SetTensorElementType(y_info, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    if (!status)
        status = api->SetDimensions(y_info, dims, rank);
    if (!status)
        status = api->SetSymbolicDimensions(y_info, symbols, rank);
    if (!status)
        status = api->ShapeInferContext_SetOutputTypeShape(ctx, 0, y_info);
    obx_status_discard(api, status);
    api->ReleaseTensorTypeAndShapeInfo(y_info);
}

