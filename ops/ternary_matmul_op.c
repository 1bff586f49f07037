/* com.onnxbit::TernaryMatMul, the onnxruntime binding of obx_tmm_* (tmatmul.h).
 *
 *   Y[..., N] = A[..., K] @ (W[K, N] * scales) (+ bias)
 *
 * Inputs: A float32 [..., K]; B uint8, W transposed packed row by row in
 * `format` (N rows of obx_packed_row_bytes(format, K) bytes, 1-D or [N, bytes]);
 * scales float32 [1] or [N] (group_size 0) or [N, ceil(K / group_size)];
 * bias float32 [N], optional.
 * Attributes: K, N (required ints > 0), format (required: a name of
 * formats.h), group_size (int >= 0, default 0), act_quant (0 | 1 | 2, default 0),
 * act_scale (float, finite and > 0: required with act_quant 2, the static
 * activation scale of tmatmul.h's OBX_ACT_INT8_STATIC; refused otherwise),
 * crc32c (optional, 0 .. 2^32 - 1: CRC32C of B's bytes followed by the
 * scales' bytes, checked before prepacking unless the session config entry
 * onnxbit.verify_checksums is "0").
 *
 * This file binds attributes, shapes and errors to the compute core; the
 * sizes are checked by obx_tmm_shape_init, the check the Python API runs
 * too. When B and scales are constant initializers they are validated and
 * prepacked once, at kernel creation (so corrupt weights fail session
 * creation); otherwise each call prepacks its own copy. */
#include <stdio.h>
#include <stdlib.h>

#include "custom_ops.h"
#include "onnxbit/formats.h"
#include "onnxbit/streams.h"
#include "onnxbit/tmatmul.h"
#include "op_inputs.h"
#include "op_kernel.h"
#include "op_shapes.h"
#include "op_status.h"

enum { TMM_INPUT_A = 0, TMM_INPUT_B = 1, TMM_INPUT_SCALES = 2, TMM_INPUT_BIAS = 3, TMM_INPUTS = 4 };

typedef struct TernaryMatMulKernel {
    ObxOpKernel head;
    obx_tmm_shape shape;
    int act_quant;
    float act_scale; /* act_quant 2 only */
    int64_t crc32c; /* the attribute, or OBX_NO_CHECKSUM when the node has none */
    int stream; /* B is a stream (streams.h) of shape.fmt (base3) rows, or -1 */
    obx_tmm_weights *constant_weights; /* prepacked at creation, or NULL */
} TernaryMatMulKernel;

/* ---- weights ------------------------------------------------------------ */

/* B holds exactly N packed rows: 1-D [N * row_bytes] or 2-D [N, row_bytes];
 * a stream is 1-D, its length checked by its decoder. */
static OrtStatus *check_packed_weights(const TernaryMatMulKernel *kernel, const ObxTensorView *b)
{
    const ObxOpKernel *head = &kernel->head;
    const obx_tmm_shape *shape = &kernel->shape;
    const char *fmt_name = obx_format_name(shape->fmt);
    OrtStatus *status = obx_require_dtype(head, b, "B", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
    if (status)
        return status;
    char text[256];
    if (kernel->stream >= 0)
        return b->rank == 1 ? NULL
                            : obx_node_error(head, ORT_INVALID_ARGUMENT,
                                             "B must be a 1-D %s stream, got shape %s",
                                             obx_stream_name(kernel->stream),
                                             obx_shape_text(b, text, sizeof text));
    if (b->rank == 2 && ((size_t)b->dims[0] != shape->n || (size_t)b->dims[1] != shape->row_bytes))
        return obx_node_error(head, ORT_INVALID_ARGUMENT,
                              "B has shape %s; K=%zu N=%zu in format %s needs [N, %zu] = [%zu, %zu]",
                              obx_shape_text(b, text, sizeof text), shape->k, shape->n, fmt_name,
                              shape->row_bytes, shape->n, shape->row_bytes);
    if (b->rank != 1 && b->rank != 2)
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "B must be 1-D or 2-D, got shape %s",
                              obx_shape_text(b, text, sizeof text));
    if (b->count != shape->b_bytes)
        return obx_node_error(head, ORT_INVALID_ARGUMENT,
                              "B is too %s: %zu bytes, but K=%zu N=%zu in format %s need "
                              "N * %zu = %zu bytes",
                              b->count < shape->b_bytes ? "short" : "long", b->count, shape->k,
                              shape->n, fmt_name, shape->row_bytes, shape->b_bytes);
    return NULL;
}

/* Scales are [1] or [N] without groups, [N, groups] with them. */
static OrtStatus *check_scales(const TernaryMatMulKernel *kernel, const ObxTensorView *scales)
{
    const ObxOpKernel *head = &kernel->head;
    const obx_tmm_shape *shape = &kernel->shape;
    OrtStatus *status =
        obx_require_dtype(head, scales, "scales", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    if (status)
        return status;
    char text[256];
    if (shape->group_size == 0) {
        int per_tensor = scales->rank <= 1 && scales->count == 1;
        int per_channel = scales->rank == 1 && (size_t)scales->dims[0] == shape->n;
        if (per_tensor || per_channel)
            return NULL;
        return obx_node_error(head, ORT_INVALID_ARGUMENT,
                              "scales has shape %s; without group_size it must be [1] or [N] = [%zu]",
                              obx_shape_text(scales, text, sizeof text), shape->n);
    }
    if (scales->rank == 2 && (size_t)scales->dims[0] == shape->n &&
        (size_t)scales->dims[1] == shape->n_groups)
        return NULL;
    return obx_node_error(head, ORT_INVALID_ARGUMENT,
                          "scales has shape %s; with group_size=%zu it must be "
                          "[N, ceil(K / group_size)] = [%zu, %zu]",
                          obx_shape_text(scales, text, sizeof text), shape->group_size, shape->n,
                          shape->n_groups);
}

/* Validates B and scales (shapes, checksum, codes, scale values) and repacks them. */
static OrtStatus *prepack_weights(const TernaryMatMulKernel *kernel, const OrtValue *b_value,
                                  const OrtValue *scales_value, obx_tmm_weights **out)
{
    const ObxOpKernel *head = &kernel->head;
    const obx_tmm_shape *shape = &kernel->shape;
    ObxTensorView b, scales;
    OrtStatus *status = obx_read_tensor(head, b_value, "B", &b);
    if (!status)
        status = check_packed_weights(kernel, &b);
    if (!status)
        status = obx_read_tensor(head, scales_value, "scales", &scales);
    if (!status)
        status = check_scales(kernel, &scales);
    if (!status)
        status = obx_check_weights_crc32c(head, kernel->crc32c, &b, &scales);
    if (status)
        return status;

    char err[OBX_OP_ERR_LEN] = "";
    const void *rows = b.data;
    size_t rows_bytes = b.count;
    uint8_t *decoded = NULL;
    if (kernel->stream >= 0) {
        /* Storage only: decoded to base3 rows here, then prepacked like any base3 B. */
        decoded = malloc(shape->b_bytes);
        if (!decoded)
            return obx_node_error(head, ORT_FAIL, "out of memory decoding B (%zu bytes)",
                                  shape->b_bytes);
        if (obx_stream_decode_base3(kernel->stream, b.data, b.count, shape->n, shape->k, decoded,
                                    err, sizeof err) != 0) {
            free(decoded);
            return obx_node_error(head, ORT_INVALID_ARGUMENT, "invalid weights (format %s): %s",
                                  obx_stream_name(kernel->stream), err);
        }
        rows = decoded;
        rows_bytes = shape->b_bytes;
    }
    *out = obx_tmm_prepack(shape->fmt, rows, rows_bytes, (int64_t)shape->k, (int64_t)shape->n,
                           scales.data, scales.count, (int64_t)shape->group_size, err, sizeof err);
    free(decoded);
    if (!*out)
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "invalid weights (format %s): %s",
                              kernel->stream >= 0 ? obx_stream_name(kernel->stream)
                                                  : obx_format_name(shape->fmt),
                              err[0] ? err : "rejected by the compute core");
    return NULL;
}

/* ---- kernel creation --------------------------------------------------- */

static OrtStatus *init_kernel(ObxOpKernel *head, const OrtKernelInfo *info)
{
    TernaryMatMulKernel *kernel = (TernaryMatMulKernel *)head;
    int64_t k = 0, n = 0, group_size = 0, act_quant = 0;
    int fmt = -1;
    OrtStatus *status = obx_read_int_attribute(head, info, "K", 1, 0, &k);
    if (!status)
        status = obx_read_int_attribute(head, info, "N", 1, 0, &n);
    if (!status)
        status = obx_read_int_attribute(head, info, "group_size", 0, 0, &group_size);
    if (!status)
        status = obx_read_int_attribute(head, info, "act_quant", 0, OBX_ACT_NONE, &act_quant);
    if (status)
        return status;

    /* The op has no empty dimensions; the core's own bounds follow. */
    if (k <= 0)
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "attribute K=%lld must be in [1, %d]",
                              (long long)k, OBX_TMM_MAX_K);
    if (n <= 0)
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "attribute N=%lld must be in [1, %d]",
                              (long long)n, OBX_TMM_MAX_N);
    if (act_quant == OBX_ACT_INT8_PIXEL)
        return obx_node_error(head, ORT_INVALID_ARGUMENT,
                              "attribute act_quant=3 (int8 per input pixel) is TernaryConv's only: "
                              "a matmul row has no pixels; use 1 (per-token int8) or 2 (static)");
    if (act_quant != OBX_ACT_NONE && act_quant != OBX_ACT_INT8_TOKEN &&
        act_quant != OBX_ACT_INT8_STATIC)
        return obx_node_error(head, ORT_INVALID_ARGUMENT,
                              "attribute act_quant=%lld must be 0 (float activations), 1 "
                              "(per-token int8) or 2 (int8 with the static act_scale)",
                              (long long)act_quant);
    kernel->act_quant = (int)act_quant;
    status = obx_read_act_scale_attribute(head, info, kernel->act_quant, &kernel->act_scale);
    if (status)
        return status;
    status = obx_read_crc32c_attribute(head, info, &kernel->crc32c);
    if (status)
        return status;
    status = obx_read_format_attribute(head, info, &fmt, &kernel->stream);
    if (status)
        return status;
    char err[OBX_OP_ERR_LEN] = "";
    if (obx_tmm_shape_init(&kernel->shape, fmt, k, n, group_size, err, sizeof err) != 0)
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "attribute %s", err);

    /* Constant B and scales are validated and prepacked now, once. */
    const OrtValue *b = obx_constant_input(head, info, TMM_INPUT_B);
    const OrtValue *scales = obx_constant_input(head, info, TMM_INPUT_SCALES);
    if (b && scales)
        return prepack_weights(kernel, b, scales, &kernel->constant_weights);
    return NULL;
}

static void release_kernel(ObxOpKernel *head)
{
    obx_tmm_free(((TernaryMatMulKernel *)head)->constant_weights);
}

/* ---- compute ----------------------------------------------------------- */

static OrtStatus *compute_with_weights(const TernaryMatMulKernel *kernel, OrtKernelContext *ctx,
                                       const obx_tmm_weights *weights, const ObxTensorView *a,
                                       const OrtValue *bias_value)
{
    const ObxOpKernel *head = &kernel->head;
    const size_t n = kernel->shape.n;
    const float *bias = NULL;
    OrtStatus *status = obx_read_bias(head, bias_value, n, "N", &bias);
    if (status)
        return status;

    void *y = NULL;
    status = obx_allocate_matmul_output(head, ctx, a, n, &y);
    if (status)
        return status;

    size_t m = a->count / kernel->shape.k;
    if (m == 0)
        return NULL;
    ObxOrtRunner runner;
    obx_parallel_for_fn parallel_for = obx_op_parallel_for(head, ctx, &runner);
    char err[OBX_OP_ERR_LEN] = "";
    if (obx_tmm_compute_scaled(weights, a->data, m, bias, kernel->act_quant, kernel->act_scale, y,
                               parallel_for, &runner, err, sizeof err) != 0)
        return obx_node_error(head, ORT_FAIL, "compute failed: %s", err);
    return NULL;
}

static OrtStatus *compute(const ObxOpKernel *head, OrtKernelContext *ctx)
{
    const TernaryMatMulKernel *kernel = (const TernaryMatMulKernel *)head;
    size_t input_count = 0;
    const OrtValue *values[TMM_INPUTS];
    OrtStatus *status = obx_get_inputs(head, ctx, TMM_INPUTS, values, &input_count);
    if (status)
        return status;
    if (input_count < TMM_INPUT_BIAS)
        return obx_node_error(head, ORT_INVALID_ARGUMENT,
                              "needs inputs A, B and scales (bias optional), got %zu inputs",
                              input_count);
    if (!values[TMM_INPUT_A] || !values[TMM_INPUT_B] || !values[TMM_INPUT_SCALES])
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "inputs A, B and scales are required");

    ObxTensorView a;
    status = obx_read_float_tensor(head, values[TMM_INPUT_A], "A", &a);
    if (status)
        return status;
    char text[256];
    if (a.rank == 0)
        return obx_node_error(head, ORT_INVALID_ARGUMENT,
                              "input A is a scalar (rank 0); it must have shape [..., K] with K=%zu",
                              kernel->shape.k);
    if ((size_t)a.dims[a.rank - 1] != kernel->shape.k)
        return obx_node_error(head, ORT_INVALID_ARGUMENT,
                              "input A has shape %s; its last dimension must equal K=%zu",
                              obx_shape_text(&a, text, sizeof text), kernel->shape.k);

    if (kernel->constant_weights)
        return compute_with_weights(kernel, ctx, kernel->constant_weights, &a,
                                    values[TMM_INPUT_BIAS]);

    obx_tmm_weights *weights = NULL;
    status = prepack_weights(kernel, values[TMM_INPUT_B], values[TMM_INPUT_SCALES], &weights);
    if (status)
        return status;
    status = compute_with_weights(kernel, ctx, weights, &a, values[TMM_INPUT_BIAS]);
    obx_tmm_free(weights);
    return status;
}

/* ---- shape inference ----------------------------------------------------- */

/* Y = A's shape with the last dimension replaced by the attribute N. */
static void infer_output_shape(const OrtApi *api, OrtShapeInferContext *ctx)
{
    const OrtOpAttr *n_attr = NULL;
    int64_t n = 0;
    size_t n_size = 0;
    OrtStatus *status = api->ShapeInferContext_GetAttribute(ctx, "N", &n_attr);
    if (!status)
        status = api->ReadOpAttr(n_attr, ORT_OP_ATTR_INT, &n, sizeof n, &n_size);
    if (status || n <= 0) {
        obx_status_discard(api, status);
        return;
    }
    obx_infer_last_dimension(api, ctx, TMM_INPUT_A, n);
}

static const ONNXTensorElementDataType input_types[TMM_INPUTS] = {
    [TMM_INPUT_A] = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
    [TMM_INPUT_B] = ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8,
    [TMM_INPUT_SCALES] = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
    [TMM_INPUT_BIAS] = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
};

const ObxOpDefinition obx_ternary_matmul_definition = {
    .name = "TernaryMatMul",
    .input_count = TMM_INPUTS,
    .input_types = input_types,
    .required_inputs = TMM_INPUT_BIAS,
    .output_type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
    .kernel_size = sizeof(TernaryMatMulKernel),
    .init = init_kernel,
    .compute = compute,
    .release = release_kernel,
    .infer_shape = infer_output_shape,
};
