/* com.onnxbit::TernaryMatMul, the onnxruntime binding of obx_tmm_* (tmatmul.h).
 *
 *   Y[..., N] = A[..., K] @ (W[K, N] * scales) (+ bias)
 *
 * Inputs: A float32 [..., K]; B uint8, W transposed packed row by row in
 * `format` (N rows of obx_packed_row_bytes(format, K) bytes, 1-D or [N, bytes]);
 * scales float32 [1] or [N] (group_size 0) or [N, ceil(K / group_size)];
 * bias float32 [N], optional.
 * Attributes: K, N (required ints > 0), format (required: "2bit" | "base3"),
 * group_size (int >= 0, default 0), act_quant (0 | 1, default 0).
 *
 * This file binds attributes, shapes and errors to the compute core; every
 * failure becomes a status naming the node and the problem. When B and scales
 * are constant initializers they are validated and prepacked once, at kernel
 * creation (so corrupt weights fail session creation); otherwise each call
 * prepacks its own copy. */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "custom_ops.h"
#include "obx_common.h"
#include "onnxbit/codec.h"
#include "onnxbit/tmatmul.h"
#include "op_status.h"
#include "ort_abi.h"

#define TMM_OP_NAME "TernaryMatMul"

enum { TMM_INPUT_A = 0, TMM_INPUT_B = 1, TMM_INPUT_SCALES = 2, TMM_INPUT_BIAS = 3, TMM_INPUTS = 4 };
/* Bound on attribute values, so byte counts derived from them never overflow. */
#define TMM_MAX_DIM ((int64_t)INT32_MAX)
/* Highest tensor rank accepted for A (and so for Y). */
enum { TMM_MAX_RANK = 32 };
enum { TMM_ERR_LEN = 512 };

static const struct {
    const char *name;
    int fmt;
} tmm_formats[] = {
    {"2bit", OBX_FMT_2BIT},
    {"base3", OBX_FMT_BASE3},
};
/* For messages; lists tmm_formats. */
#define TMM_FORMAT_NAMES "2bit, base3"

typedef struct TernaryMatMulKernel {
    const OrtApi *api;
    uint32_t api_version;
    char *node_name;
    int64_t k, n, group_size;
    int act_quant;
    int fmt;
    const char *fmt_name;
    size_t row_bytes; /* packed bytes of one of the N rows of B */
    size_t groups;    /* scale groups along K (1 when not grouped) */
    obx_tmm_weights *constant_weights; /* prepacked at creation, or NULL */
} TernaryMatMulKernel;

/* A tensor input, as this op reads it. */
typedef struct TensorView {
    ONNXTensorElementDataType type;
    size_t rank;
    int64_t dims[TMM_MAX_RANK];
    size_t count;
    const void *data;
} TensorView;

/* ---- messages ---------------------------------------------------------- */

static OrtStatus *node_error(const TernaryMatMulKernel *kernel, OrtErrorCode code,
                             const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* "TernaryMatMul node 'name': <problem>" */
static OrtStatus *node_error(const TernaryMatMulKernel *kernel, OrtErrorCode code,
                             const char *fmt, ...)
{
    char problem[TMM_ERR_LEN];
    va_list args;
    va_start(args, fmt);
    vsnprintf(problem, sizeof problem, fmt, args);
    va_end(args);
    return obx_status_fmt(kernel->api, code, TMM_OP_NAME " node '%s': %s", kernel->node_name,
                          problem);
}

static OrtStatus *node_wrap(const TernaryMatMulKernel *kernel, OrtStatus *cause, const char *what)
{
    char prefix[TMM_ERR_LEN];
    snprintf(prefix, sizeof prefix, TMM_OP_NAME " node '%s': %s", kernel->node_name, what);
    return obx_status_wrap(kernel->api, cause, prefix);
}

static const char *dtype_name(ONNXTensorElementDataType type)
{
    switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16: return "uint16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return "int16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING: return "string";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32: return "uint32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64: return "uint64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    default: return "an unsupported element type";
    }
}

/* "[2, 3, 64]" */
static const char *shape_text(const TensorView *view, char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "[");
    for (size_t i = 0; i < view->rank && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, i ? ", %lld" : "%lld",
                                 (long long)view->dims[i]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
    return buf;
}

/* ---- tensors ----------------------------------------------------------- */

static OrtStatus *read_tensor(const TernaryMatMulKernel *kernel, const OrtValue *value,
                              const char *input_name, TensorView *view)
{
    const OrtApi *api = kernel->api;
    char what[64];
    snprintf(what, sizeof what, "reading input %s", input_name);

    OrtTensorTypeAndShapeInfo *info = NULL;
    OrtStatus *status = api->GetTensorTypeAndShape(value, &info);
    if (status)
        return node_wrap(kernel, status, what);
    status = api->GetTensorElementType(info, &view->type);
    if (!status)
        status = api->GetDimensionsCount(info, &view->rank);
    if (!status && view->rank > TMM_MAX_RANK) {
        api->ReleaseTensorTypeAndShapeInfo(info);
        return node_error(kernel, ORT_INVALID_ARGUMENT,
                          "input %s has rank %zu; at most %d is supported", input_name,
                          view->rank, TMM_MAX_RANK);
    }
    if (!status)
        status = api->GetDimensions(info, view->dims, view->rank);
    if (!status)
        status = api->GetTensorShapeElementCount(info, &view->count);
    api->ReleaseTensorTypeAndShapeInfo(info);
    if (status)
        return node_wrap(kernel, status, what);

    void *data = NULL;
    /* Inputs are read only; the API has no const accessor before version 23. */
    status = api->GetTensorMutableData((OrtValue *)value, &data);
    if (status)
        return node_wrap(kernel, status, what);
    view->data = data;
    return NULL;
}

static OrtStatus *require_dtype(const TernaryMatMulKernel *kernel, const TensorView *view,
                                const char *input_name, ONNXTensorElementDataType expected)
{
    if (view->type == expected)
        return NULL;
    return node_error(kernel, ORT_INVALID_ARGUMENT, "input %s must be %s, got %s", input_name,
                      dtype_name(expected), dtype_name(view->type));
}

/* B holds exactly N packed rows: 1-D [N * row_bytes] or 2-D [N, row_bytes]. */
static OrtStatus *check_packed_weights(const TernaryMatMulKernel *kernel, const TensorView *b)
{
    OrtStatus *status = require_dtype(kernel, b, "B", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
    if (status)
        return status;
    size_t expected = (size_t)kernel->n * kernel->row_bytes;
    char shape[256];
    if (b->rank == 2 && (b->dims[0] != kernel->n || (size_t)b->dims[1] != kernel->row_bytes))
        return node_error(kernel, ORT_INVALID_ARGUMENT,
                          "B has shape %s; K=%lld N=%lld in format %s needs [N, %zu] = [%lld, %zu]",
                          shape_text(b, shape, sizeof shape), (long long)kernel->k,
                          (long long)kernel->n, kernel->fmt_name, kernel->row_bytes,
                          (long long)kernel->n, kernel->row_bytes);
    if (b->rank != 1 && b->rank != 2)
        return node_error(kernel, ORT_INVALID_ARGUMENT, "B must be 1-D or 2-D, got shape %s",
                          shape_text(b, shape, sizeof shape));
    if (b->count != expected)
        return node_error(kernel, ORT_INVALID_ARGUMENT,
                          "B is too %s: %zu bytes, but K=%lld N=%lld in format %s need "
                          "N * %zu = %zu bytes",
                          b->count < expected ? "short" : "long", b->count, (long long)kernel->k,
                          (long long)kernel->n, kernel->fmt_name, kernel->row_bytes, expected);
    return NULL;
}

/* Scales are [1] or [N] without groups, [N, groups] with them. */
static OrtStatus *check_scales(const TernaryMatMulKernel *kernel, const TensorView *scales)
{
    OrtStatus *status =
        require_dtype(kernel, scales, "scales", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    if (status)
        return status;
    char shape[256];
    if (kernel->group_size == 0) {
        int per_tensor = scales->rank <= 1 && scales->count == 1;
        int per_channel = scales->rank == 1 && scales->dims[0] == kernel->n;
        if (per_tensor || per_channel)
            return NULL;
        return node_error(kernel, ORT_INVALID_ARGUMENT,
                          "scales has shape %s; without group_size it must be [1] or [N] = [%lld]",
                          shape_text(scales, shape, sizeof shape), (long long)kernel->n);
    }
    if (scales->rank == 2 && scales->dims[0] == kernel->n &&
        (size_t)scales->dims[1] == kernel->groups)
        return NULL;
    return node_error(kernel, ORT_INVALID_ARGUMENT,
                      "scales has shape %s; with group_size=%lld it must be "
                      "[N, ceil(K / group_size)] = [%lld, %zu]",
                      shape_text(scales, shape, sizeof shape), (long long)kernel->group_size,
                      (long long)kernel->n, kernel->groups);
}

/* Validates B and scales (shapes, codes, scale values) and repacks them. */
static OrtStatus *prepack_weights(const TernaryMatMulKernel *kernel, const OrtValue *b_value,
                                  const OrtValue *scales_value, obx_tmm_weights **out)
{
    TensorView b, scales;
    OrtStatus *status = read_tensor(kernel, b_value, "B", &b);
    if (!status)
        status = check_packed_weights(kernel, &b);
    if (!status)
        status = read_tensor(kernel, scales_value, "scales", &scales);
    if (!status)
        status = check_scales(kernel, &scales);
    if (status)
        return status;

    char err[TMM_ERR_LEN] = "";
    *out = obx_tmm_prepack(kernel->fmt, (const uint8_t *)b.data, b.count, (size_t)kernel->k,
                           (size_t)kernel->n, (const float *)scales.data, scales.count,
                           (size_t)kernel->group_size, err, sizeof err);
    if (!*out)
        return node_error(kernel, ORT_INVALID_ARGUMENT, "invalid weights (format %s): %s",
                          kernel->fmt_name, err[0] ? err : "rejected by the compute core");
    return NULL;
}

/* ---- kernel creation --------------------------------------------------- */

static OrtStatus *read_node_name(const OrtApi *api, uint32_t api_version,
                                 const OrtKernelInfo *info, char **out)
{
    *out = NULL;
    size_t size = 0;
    if (api_version >= ORT_API_WITH_CONSTANT_INPUT) {
        OrtStatus *status = api->KernelInfo_GetNodeName(info, NULL, &size);
        if (status)
            return obx_status_wrap(api, status, TMM_OP_NAME ": reading the node name");
    }
    *out = calloc(size + 1, 1);
    if (!*out)
        return api->CreateStatus(ORT_FAIL, TMM_OP_NAME ": out of memory");
    if (size) {
        OrtStatus *status = api->KernelInfo_GetNodeName(info, *out, &size);
        if (status)
            return obx_status_wrap(api, status, TMM_OP_NAME ": reading the node name");
    }
    return NULL;
}

/* Whether an attribute exists with a type other than `wanted` (onnxruntime
 * reports a missing attribute and a mistyped one alike). */
static int attribute_has_other_type(const TernaryMatMulKernel *kernel, const OrtKernelInfo *info,
                                    const char *name, OrtOpAttrType wanted)
{
    const OrtApi *api = kernel->api;
    int64_t as_int;
    float as_float;
    size_t string_size = 0;
    OrtStatus *status;
    int present = 0;
    if (wanted != ORT_OP_ATTR_INT) {
        status = api->KernelInfoGetAttribute_int64(info, name, &as_int);
        present |= status == NULL;
        obx_status_discard(api, status);
    }
    status = api->KernelInfoGetAttribute_float(info, name, &as_float);
    present |= status == NULL;
    obx_status_discard(api, status);
    if (wanted != ORT_OP_ATTR_STRING) {
        status = api->KernelInfoGetAttribute_string(info, name, NULL, &string_size);
        present |= status == NULL;
        obx_status_discard(api, status);
    }
    return present;
}

static OrtStatus *read_int_attribute(const TernaryMatMulKernel *kernel, const OrtKernelInfo *info,
                                     const char *name, int required, int64_t fallback,
                                     int64_t *out)
{
    OrtStatus *status = kernel->api->KernelInfoGetAttribute_int64(info, name, out);
    if (!status)
        return NULL;
    obx_status_discard(kernel->api, status);
    if (attribute_has_other_type(kernel, info, name, ORT_OP_ATTR_INT))
        return node_error(kernel, ORT_INVALID_ARGUMENT, "attribute '%s' must be an int", name);
    if (required)
        return node_error(kernel, ORT_INVALID_ARGUMENT, "required attribute '%s' (int) is missing",
                          name);
    *out = fallback;
    return NULL;
}

/* The `format` attribute's value, into out (out_len bytes). */
static OrtStatus *read_format_attribute(const TernaryMatMulKernel *kernel,
                                        const OrtKernelInfo *info, char *out, size_t out_len)
{
    const OrtApi *api = kernel->api;
    size_t size = 0;
    OrtStatus *status = api->KernelInfoGetAttribute_string(info, "format", NULL, &size);
    if (status) {
        obx_status_discard(api, status);
        if (attribute_has_other_type(kernel, info, "format", ORT_OP_ATTR_STRING))
            return node_error(kernel, ORT_INVALID_ARGUMENT,
                              "attribute 'format' must be a string, one of: " TMM_FORMAT_NAMES);
        return node_error(kernel, ORT_INVALID_ARGUMENT,
                          "required attribute 'format' (string) is missing; expected one of: "
                          TMM_FORMAT_NAMES);
    }
    if (size > out_len)
        return node_error(kernel, ORT_INVALID_ARGUMENT,
                          "attribute format is not a known format (%zu characters long); expected "
                          "one of: " TMM_FORMAT_NAMES, size - 1);
    status = api->KernelInfoGetAttribute_string(info, "format", out, &size);
    if (status)
        return node_wrap(kernel, status, "reading attribute 'format'");
    return NULL;
}

static OrtStatus *read_attributes(TernaryMatMulKernel *kernel, const OrtKernelInfo *info)
{
    int64_t act_quant = 0;
    OrtStatus *status = read_int_attribute(kernel, info, "K", 1, 0, &kernel->k);
    if (!status)
        status = read_int_attribute(kernel, info, "N", 1, 0, &kernel->n);
    if (!status)
        status = read_int_attribute(kernel, info, "group_size", 0, 0, &kernel->group_size);
    if (!status)
        status = read_int_attribute(kernel, info, "act_quant", 0, OBX_ACT_NONE, &act_quant);
    if (status)
        return status;

    if (kernel->k <= 0 || kernel->k > TMM_MAX_DIM)
        return node_error(kernel, ORT_INVALID_ARGUMENT, "attribute K=%lld must be in [1, %lld]",
                          (long long)kernel->k, (long long)TMM_MAX_DIM);
    if (kernel->n <= 0 || kernel->n > TMM_MAX_DIM)
        return node_error(kernel, ORT_INVALID_ARGUMENT, "attribute N=%lld must be in [1, %lld]",
                          (long long)kernel->n, (long long)TMM_MAX_DIM);
    if (kernel->group_size < 0)
        return node_error(kernel, ORT_INVALID_ARGUMENT,
                          "attribute group_size=%lld must be 0 (not grouped) or positive",
                          (long long)kernel->group_size);
    if (act_quant != OBX_ACT_NONE && act_quant != OBX_ACT_INT8_TOKEN)
        return node_error(kernel, ORT_INVALID_ARGUMENT,
                          "attribute act_quant=%lld must be 0 (float activations) or 1 "
                          "(per-token int8)",
                          (long long)act_quant);
    kernel->act_quant = (int)act_quant;

    char format[32];
    status = read_format_attribute(kernel, info, format, sizeof format);
    if (status)
        return status;
    kernel->fmt_name = NULL;
    for (size_t i = 0; i < sizeof tmm_formats / sizeof tmm_formats[0]; i++)
        if (strcmp(format, tmm_formats[i].name) == 0) {
            kernel->fmt = tmm_formats[i].fmt;
            kernel->fmt_name = tmm_formats[i].name;
        }
    if (!kernel->fmt_name)
        return node_error(kernel, ORT_INVALID_ARGUMENT,
                          "attribute format='%s' is not a known format; expected one of: "
                          TMM_FORMAT_NAMES, format);

    kernel->row_bytes = obx_packed_row_bytes(kernel->fmt, (size_t)kernel->k);
    kernel->groups = kernel->group_size
                         ? (size_t)OBX_DIV_UP(kernel->k, kernel->group_size)
                         : 1;
    return NULL;
}

/* Prepacks B and scales now when both are initializers (API 15+). */
static OrtStatus *prepack_constant_weights(TernaryMatMulKernel *kernel, const OrtKernelInfo *info)
{
    if (kernel->api_version < ORT_API_WITH_CONSTANT_INPUT)
        return NULL;
    const OrtApi *api = kernel->api;
    int b_constant = 0, scales_constant = 0;
    const OrtValue *b = NULL, *scales = NULL;
    OrtStatus *status = api->KernelInfoGetConstantInput_tensor(info, TMM_INPUT_B, &b_constant, &b);
    if (status) { /* not knowable here: fall back to prepacking per call */
        obx_status_discard(api, status);
        return NULL;
    }
    status = api->KernelInfoGetConstantInput_tensor(info, TMM_INPUT_SCALES, &scales_constant,
                                                    &scales);
    if (status) {
        obx_status_discard(api, status);
        return NULL;
    }
    if (!b_constant || !scales_constant || !b || !scales)
        return NULL;
    return prepack_weights(kernel, b, scales, &kernel->constant_weights);
}

static void destroy_kernel(void *opaque)
{
    TernaryMatMulKernel *kernel = opaque;
    if (!kernel)
        return;
    obx_tmm_free(kernel->constant_weights);
    free(kernel->node_name);
    free(kernel);
}

static OrtStatus *create_kernel(const OrtCustomOp *op, const OrtApi *api, const OrtKernelInfo *info,
                                TernaryMatMulKernel **out)
{
    *out = NULL;
    TernaryMatMulKernel *kernel = calloc(1, sizeof *kernel);
    if (!kernel)
        return api->CreateStatus(ORT_FAIL, TMM_OP_NAME ": out of memory creating a kernel");
    kernel->api = api;
    kernel->api_version = op->version;
    OrtStatus *status = read_node_name(api, op->version, info, &kernel->node_name);
    if (!status)
        status = read_attributes(kernel, info);
    if (!status)
        status = prepack_constant_weights(kernel, info);
    if (status) {
        destroy_kernel(kernel);
        return status;
    }
    *out = kernel;
    return NULL;
}

/* ---- compute ----------------------------------------------------------- */

typedef struct OrtParallelRunner {
    const OrtApi *api;
    const OrtKernelContext *ctx;
} OrtParallelRunner;

/* obx_parallel_for_fn over the session's intra-op thread pool. */
static void ort_parallel_for(void *runner, obx_task_fn fn, void *task_arg, size_t count)
{
    const OrtParallelRunner *ort = runner;
    OrtStatus *status = ort->api->KernelContext_ParallelFor(ort->ctx, fn, count, 0, task_arg);
    if (status) { /* the pool refused the work: do it on this thread */
        obx_status_discard(ort->api, status);
        for (size_t i = 0; i < count; i++)
            fn(task_arg, i);
    }
}

static OrtStatus *get_input(const TernaryMatMulKernel *kernel, OrtKernelContext *ctx,
                            size_t input_count, size_t index, const OrtValue **out)
{
    *out = NULL;
    if (index >= input_count)
        return NULL;
    OrtStatus *status = kernel->api->KernelContext_GetInput(ctx, index, out);
    return status ? node_wrap(kernel, status, "reading inputs") : NULL;
}

static OrtStatus *compute_with_weights(const TernaryMatMulKernel *kernel, OrtKernelContext *ctx,
                                       const obx_tmm_weights *weights, const TensorView *a,
                                       const OrtValue *bias_value)
{
    const OrtApi *api = kernel->api;
    const float *bias = NULL;
    if (bias_value) {
        TensorView view;
        OrtStatus *status = read_tensor(kernel, bias_value, "bias", &view);
        if (!status)
            status = require_dtype(kernel, &view, "bias", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
        if (status)
            return status;
        char shape[256];
        if (view.rank != 1 || view.dims[0] != kernel->n)
            return node_error(kernel, ORT_INVALID_ARGUMENT,
                              "bias has shape %s; it must be [N] = [%lld]",
                              shape_text(&view, shape, sizeof shape), (long long)kernel->n);
        bias = view.data;
    }

    int64_t y_dims[TMM_MAX_RANK];
    memcpy(y_dims, a->dims, a->rank * sizeof y_dims[0]);
    y_dims[a->rank - 1] = kernel->n;
    OrtValue *y_value = NULL;
    OrtStatus *status = api->KernelContext_GetOutput(ctx, 0, y_dims, a->rank, &y_value);
    if (status)
        return node_wrap(kernel, status, "allocating output Y");
    void *y = NULL;
    status = api->GetTensorMutableData(y_value, &y);
    if (status)
        return node_wrap(kernel, status, "allocating output Y");

    size_t m = a->count / (size_t)kernel->k;
    if (m == 0)
        return NULL;
    OrtParallelRunner runner = {api, ctx};
    obx_parallel_for_fn parallel_for =
        kernel->api_version >= ORT_API_WITH_SHAPE_INFERENCE ? ort_parallel_for : NULL;
    char err[TMM_ERR_LEN] = "";
    if (obx_tmm_compute(weights, (const float *)a->data, m, bias, kernel->act_quant, (float *)y,
                        parallel_for, &runner, err, sizeof err) != 0)
        return node_error(kernel, ORT_FAIL, "compute failed: %s", err);
    return NULL;
}

static OrtStatus *compute(const TernaryMatMulKernel *kernel, OrtKernelContext *ctx)
{
    const OrtApi *api = kernel->api;
    size_t input_count = 0;
    OrtStatus *status = api->KernelContext_GetInputCount(ctx, &input_count);
    if (status)
        return node_wrap(kernel, status, "reading inputs");
    if (input_count < TMM_INPUT_BIAS)
        return node_error(kernel, ORT_INVALID_ARGUMENT,
                          "needs inputs A, B and scales (bias optional), got %zu inputs",
                          input_count);

    const OrtValue *values[TMM_INPUTS];
    for (size_t i = 0; i < TMM_INPUTS; i++) {
        status = get_input(kernel, ctx, input_count, i, &values[i]);
        if (status)
            return status;
    }
    if (!values[TMM_INPUT_A] || !values[TMM_INPUT_B] || !values[TMM_INPUT_SCALES])
        return node_error(kernel, ORT_INVALID_ARGUMENT, "inputs A, B and scales are required");

    TensorView a;
    status = read_tensor(kernel, values[TMM_INPUT_A], "A", &a);
    if (!status)
        status = require_dtype(kernel, &a, "A", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    if (status)
        return status;
    char shape[256];
    if (a.rank == 0)
        return node_error(kernel, ORT_INVALID_ARGUMENT,
                          "input A is a scalar (rank 0); it must have shape [..., K] with K=%lld",
                          (long long)kernel->k);
    if (a.dims[a.rank - 1] != kernel->k)
        return node_error(kernel, ORT_INVALID_ARGUMENT,
                          "input A has shape %s; its last dimension must equal K=%lld",
                          shape_text(&a, shape, sizeof shape), (long long)kernel->k);

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

/* ---- callbacks --------------------------------------------------------- */

static OrtStatus *create_kernel_v2(const OrtCustomOp *op, const OrtApi *api,
                                   const OrtKernelInfo *info, void **kernel)
{
    TernaryMatMulKernel *created = NULL;
    OrtStatus *status = create_kernel(op, api, info, &created);
    *kernel = created;
    return status;
}

static OrtStatus *compute_v2(void *kernel, OrtKernelContext *ctx)
{
    return compute(kernel, ctx);
}

/* Runtimes before API 16 take no status from a kernel, so the V1 callbacks can
 * only report a failure on stderr (and leave Y unset). */
static void report_unreturnable(const OrtApi *api, OrtStatus *status)
{
    fprintf(stderr, "onnxbit: %s\n", api->GetErrorMessage(status));
    api->ReleaseStatus(status);
}

static void *create_kernel_v1(const OrtCustomOp *op, const OrtApi *api, const OrtKernelInfo *info)
{
    TernaryMatMulKernel *kernel = NULL;
    OrtStatus *status = create_kernel(op, api, info, &kernel);
    if (status)
        report_unreturnable(api, status);
    return kernel;
}

static void compute_v1(void *kernel, OrtKernelContext *ctx)
{
    if (!kernel) {
        fprintf(stderr, "onnxbit: " TMM_OP_NAME " kernel creation failed (reported above); "
                        "output not computed\n");
        return;
    }
    OrtStatus *status = compute(kernel, ctx);
    if (status)
        report_unreturnable(((TernaryMatMulKernel *)kernel)->api, status);
}

static const char *op_name(const OrtCustomOp *op)
{
    return TMM_OP_NAME;
}

static const char *op_provider(const OrtCustomOp *op)
{
    return NULL; /* the CPU execution provider */
}

static ONNXTensorElementDataType input_type(const OrtCustomOp *op, size_t index)
{
    return index == TMM_INPUT_B ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8
                                : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}

static size_t input_count(const OrtCustomOp *op)
{
    return TMM_INPUTS;
}

static ONNXTensorElementDataType output_type(const OrtCustomOp *op, size_t index)
{
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}

static size_t output_count(const OrtCustomOp *op)
{
    return 1;
}

static OrtCustomOpInputOutputCharacteristic input_characteristic(const OrtCustomOp *op,
                                                                 size_t index)
{
    return index == TMM_INPUT_BIAS ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
}

static OrtCustomOpInputOutputCharacteristic output_characteristic(const OrtCustomOp *op,
                                                                  size_t index)
{
    return INPUT_OUTPUT_REQUIRED;
}

static OrtMemType input_memory_type(const OrtCustomOp *op, size_t index)
{
    return OrtMemTypeDefault;
}

/* The op has no variadic inputs or outputs; these answer the defaults. */
static int variadic_min_arity(const OrtCustomOp *op)
{
    return 1;
}

static int variadic_homogeneity(const OrtCustomOp *op)
{
    return 1;
}

static int start_version(const OrtCustomOp *op)
{
    return 1;
}

static int end_version(const OrtCustomOp *op)
{
    return INT_MAX;
}

/* Y aliases no input and may not overwrite one. */
static size_t no_index_pairs(int **input_index, int **output_index)
{
    *input_index = NULL;
    *output_index = NULL;
    return 0;
}

static void release_index_pairs(int *input_index, int *output_index)
{
}

/* The API table the op was built for; shape inference gets no other way to it. */
static const OrtApi *shape_api;

/* Y = A's shape with the last dimension replaced by N, keeping A's symbolic
 * dimensions. Best effort: when A's shape or N is unknown nothing is set, and
 * the kernel reports bad attributes with the node's name. onnxruntime ignores
 * (and never releases) a status returned from here, so this always returns
 * NULL. */
static OrtStatus *infer_output_shape(const OrtCustomOp *op, OrtShapeInferContext *ctx)
{
    const OrtApi *api = shape_api;
    const OrtOpAttr *n_attr = NULL;
    int64_t n = 0;
    size_t n_size = 0;
    OrtStatus *status = api->ShapeInferContext_GetAttribute(ctx, "N", &n_attr);
    if (!status)
        status = api->ReadOpAttr(n_attr, ORT_OP_ATTR_INT, &n, sizeof n, &n_size);
    if (status || n <= 0) {
        obx_status_discard(api, status);
        return NULL;
    }

    OrtTensorTypeAndShapeInfo *a_info = NULL; /* owned by ctx */
    size_t rank = 0;
    status = api->ShapeInferContext_GetInputTypeShape(ctx, TMM_INPUT_A, &a_info);
    if (!status)
        status = api->GetDimensionsCount(a_info, &rank);
    /* Rank 0 is how an unknown shape arrives; a real scalar A is an error the
     * kernel reports. */
    if (status || rank == 0 || rank > TMM_MAX_RANK) {
        obx_status_discard(api, status);
        return NULL;
    }
    int64_t dims[TMM_MAX_RANK];
    const char *symbols[TMM_MAX_RANK];
    status = api->GetDimensions(a_info, dims, rank);
    if (!status)
        status = api->GetSymbolicDimensions(a_info, symbols, rank);
    if (status) {
        obx_status_discard(api, status);
        return NULL;
    }
    /* An unknown dimension without a name cannot be expressed: onnxruntime
     * would read -1 as a concrete size and constant-fold Shape(Y) to it. Say
     * nothing then and let the runtime learn Y's shape when it runs. */
    for (size_t i = 0; i + 1 < rank; i++) {
        if (dims[i] < 0 && (symbols[i] == NULL || symbols[i][0] == '\0'))
            return NULL;
    }
    dims[rank - 1] = n;
    symbols[rank - 1] = "";

    OrtTensorTypeAndShapeInfo *y_info = NULL;
    status = api->CreateTensorTypeAndShapeInfo(&y_info);
    if (status) {
        obx_status_discard(api, status);
        return NULL;
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
    return NULL;
}

static OrtCustomOp ternary_matmul_op;

const OrtCustomOp *obx_ternary_matmul_op(const OrtApi *api, uint32_t api_version)
{
    OrtCustomOp *op = &ternary_matmul_op;
    memset(op, 0, sizeof *op);
    shape_api = api;
    op->version = api_version;
    op->CreateKernel = create_kernel_v1;
    op->GetName = op_name;
    op->GetExecutionProviderType = op_provider;
    op->GetInputType = input_type;
    op->GetInputTypeCount = input_count;
    op->GetOutputType = output_type;
    op->GetOutputTypeCount = output_count;
    op->KernelCompute = compute_v1;
    op->KernelDestroy = destroy_kernel;
    op->GetInputCharacteristic = input_characteristic;
    op->GetOutputCharacteristic = output_characteristic;
    op->GetInputMemoryType = input_memory_type;
    op->GetVariadicInputMinArity = variadic_min_arity;
    op->GetVariadicInputHomogeneity = variadic_homogeneity;
    op->GetVariadicOutputMinArity = variadic_min_arity;
    op->GetVariadicOutputHomogeneity = variadic_homogeneity;
    if (api_version >= ORT_API_WITH_STATUS_CALLBACKS) {
        op->CreateKernelV2 = create_kernel_v2;
        op->KernelComputeV2 = compute_v2;
    }
    if (api_version >= ORT_API_WITH_SHAPE_INFERENCE) {
        op->InferOutputShapeFn = infer_output_shape;
        op->GetStartVersion = start_version;
        op->GetEndVersion = end_version;
    }
    op->GetMayInplace = no_index_pairs;
    op->ReleaseMayInplace = release_index_pairs;
    op->GetAliasMap = no_index_pairs;
    op->ReleaseAliasMap = release_index_pairs;
    return op;
}
