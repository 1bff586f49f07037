/* com.onnxbit::BFloat16MatMul, the onnxruntime binding of obx_bf16_*
 * (bf16matmul.h).
 *
 *   Y[..., N] = A[..., K] @ float(B[K, N]) (+ bias)
 *
 * Inputs: A float32 [..., K]; B bfloat16 [K, N] (ONNX MatMul's B, stored in
 * half the bytes: the float layers of a bf16 checkpoint lose nothing); bias
 * float32 [N], optional. No attributes. A constant B is repacked once, at
 * kernel creation; otherwise each call repacks its own copy. */

#include "custom_ops.h"
#include "onnxbit/bf16matmul.h"
#include "op_inputs.h"
#include "op_kernel.h"
#include "op_shapes.h"
#include "op_status.h"

enum { BF16_INPUT_A = 0, BF16_INPUT_B = 1, BF16_INPUT_BIAS = 2, BF16_INPUTS = 3 };

typedef struct BFloat16MatMulKernel {
    ObxOpKernel head;
    obx_bf16_weights *constant_weights; /* repacked at creation, or NULL */
} BFloat16MatMulKernel;

static OrtStatus *prepack_weights(const ObxOpKernel *head, const OrtValue *b_value,
                                  obx_bf16_weights **out)
{
    ObxTensorView b;
    OrtStatus *status = obx_read_tensor(head, b_value, "B", &b);
    if (!status)
        status = obx_require_dtype(head, &b, "B", ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16);
    if (status)
        return status;
    char text[256];
    if (b.rank != 2)
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "B must be 2-D [K, N], got shape %s",
                              obx_shape_text(&b, text, sizeof text));
    char err[OBX_OP_ERR_LEN] = "";
    *out = obx_bf16_prepack(b.data, b.count, b.dims[0], b.dims[1], err, sizeof err);
    if (!*out)
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "B of shape %s: %s",
                              obx_shape_text(&b, text, sizeof text), err);
    return NULL;
}

static OrtStatus *init_kernel(ObxOpKernel *head, const OrtKernelInfo *info)
{
    BFloat16MatMulKernel *kernel = (BFloat16MatMulKernel *)head;
    const OrtValue *b = obx_constant_input(head, info, BF16_INPUT_B);
    return b ? prepack_weights(head, b, &kernel->constant_weights) : NULL;
}

static void release_kernel(ObxOpKernel *head)
{
    obx_bf16_free(((BFloat16MatMulKernel *)head)->constant_weights);
}

static OrtStatus *compute_with_weights(const ObxOpKernel *head, OrtKernelContext *ctx,
                                       const obx_bf16_weights *weights, const ObxTensorView *a,
                                       const OrtValue *bias_value)
{
    const size_t k = obx_bf16_k(weights), n = obx_bf16_n(weights);
    char text[256];
    if (a->rank == 0 || (size_t)a->dims[a->rank - 1] != k)
        return obx_node_error(head, ORT_INVALID_ARGUMENT,
                              "input A has shape %s; it must be [..., K] with K=%zu (B's rows)",
                              obx_shape_text(a, text, sizeof text), k);
    const float *bias = NULL;
    OrtStatus *status = obx_read_bias(head, bias_value, n, "N", &bias);
    if (status)
        return status;
    void *y = NULL;
    status = obx_allocate_matmul_output(head, ctx, a, n, &y);
    if (status)
        return status;
    size_t m = 1; /* rows: the leading dimensions (K may be 0) */
    for (size_t i = 0; i + 1 < a->rank; i++)
        m *= (size_t)a->dims[i];
    ObxOrtRunner runner;
    obx_parallel_for_fn parallel_for = obx_op_parallel_for(head, ctx, &runner);
    char err[OBX_OP_ERR_LEN] = "";
    if (obx_bf16_compute(weights, a->data, m, bias, y, parallel_for, &runner, err, sizeof err) != 0)
        return obx_node_error(head, ORT_FAIL, "compute failed: %s", err);
    return NULL;
}

static OrtStatus *compute(const ObxOpKernel *head, OrtKernelContext *ctx)
{
    const BFloat16MatMulKernel *kernel = (const BFloat16MatMulKernel *)head;
    size_t input_count = 0;
    const OrtValue *values[BF16_INPUTS];
    OrtStatus *status = obx_get_inputs(head, ctx, BF16_INPUTS, values, &input_count);
    if (status)
        return status;
    if (input_count < BF16_INPUT_BIAS || !values[BF16_INPUT_A] || !values[BF16_INPUT_B])
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "inputs A and B are required");
    ObxTensorView a;
    status = obx_read_float_tensor(head, values[BF16_INPUT_A], "A", &a);
    if (status)
        return status;
    if (kernel->constant_weights)
        return compute_with_weights(head, ctx, kernel->constant_weights, &a, values[BF16_INPUT_BIAS]);
    obx_bf16_weights *weights = NULL;
    status = prepack_weights(head, values[BF16_INPUT_B], &weights);
    if (status)
        return status;
    status = compute_with_weights(head, ctx, weights, &a, values[BF16_INPUT_BIAS]);
    obx_bf16_free(weights);
    return status;
}

/* Y = A's shape with the last dimension replaced by N, read from B's shape. */
static void infer_output_shape(const OrtApi *api, OrtShapeInferContext *ctx)
{
    OrtTensorTypeAndShapeInfo *b_info = NULL; /* owned by ctx */
    size_t rank = 0;
    int64_t dims[2] = {0, 0};
    OrtStatus *status = api->ShapeInferContext_GetInputTypeShape(ctx, BF16_INPUT_B, &b_info);
    if (!status)
        status = api->GetDimensionsCount(b_info, &rank);
    if (!status && rank == 2)
        status = api->GetDimensions(b_info, dims, 2);
    obx_status_discard(api, status);
    if (!status && rank == 2 && dims[1] >= 0)
        obx_infer_last_dimension(api, ctx, BF16_INPUT_A, dims[1]);
}

static const ONNXTensorElementDataType input_types[BF16_INPUTS] = {
    [BF16_INPUT_A] = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
    [BF16_INPUT_B] = ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16,
    [BF16_INPUT_BIAS] = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
};

const ObxOpDefinition obx_bf16_matmul_definition = {
    .name = "BFloat16MatMul",
    .input_count = BF16_INPUTS,
    .input_types = input_types,
    .required_inputs = BF16_INPUT_BIAS,
    .output_type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
    .kernel_size = sizeof(BFloat16MatMulKernel),
    .init = init_kernel,
    .compute = compute,
    .release = release_kernel,
    .infer_shape = infer_output_shape,
};
