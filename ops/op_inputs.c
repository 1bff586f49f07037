/* Reading a node's inputs and attributes (op_inputs.h). */
#include "op_inputs.h"

#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "onnxbit/checksum.h"
#include "onnxbit/formats.h"
#include "onnxbit/streams.h"
#include "onnxbit/tmatmul.h"
#include "op_status.h"

OrtStatus *obx_node_error(const ObxOpKernel *kernel, OrtErrorCode code, const char *fmt, ...)
{
    char problem[OBX_OP_ERR_LEN];
    va_list args;
    va_start(args, fmt);
    vsnprintf(problem, sizeof problem, fmt, args);
    va_end(args);
    return obx_status_fmt(kernel->api, code, "%s node '%s': %s", kernel->def->name,
                          kernel->node_name, problem);
}

OrtStatus *obx_node_wrap(const ObxOpKernel *kernel, OrtStatus *cause, const char *what)
{
    char prefix[OBX_OP_ERR_LEN];
    snprintf(prefix, sizeof prefix, "%s node '%s': %s", kernel->def->name, kernel->node_name,
             what);
    return obx_status_wrap(kernel->api, cause, prefix);
}

const char *obx_dtype_name(ONNXTensorElementDataType type)
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

const char *obx_shape_text(const ObxTensorView *view, char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "[");
    for (size_t i = 0; i < view->rank && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, i ? ", %lld" : "%lld",
                                 (long long)view->dims[i]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
    return buf;
}

OrtStatus *obx_read_tensor(const ObxOpKernel *kernel, const OrtValue *value,
                           const char *input_name, ObxTensorView *view)
{
    const OrtApi *api = kernel->api;
    char what[64];
    snprintf(what, sizeof what, "reading input %s", input_name);

    OrtTensorTypeAndShapeInfo *info = NULL;
    OrtStatus *status = api->GetTensorTypeAndShape(value, &info);
    if (status)
        return obx_node_wrap(kernel, status, what);
    status = api->GetTensorElementType(info, &view->type);
    if (!status)
        status = api->GetDimensionsCount(info, &view->rank);
    if (!status && view->rank > OBX_OP_MAX_RANK) {
        api->ReleaseTensorTypeAndShapeInfo(info);
        return obx_node_error(kernel, ORT_INVALID_ARGUMENT,
                              "input %s has rank %zu; at most %d is supported", input_name,
                              view->rank, OBX_OP_MAX_RANK);
    }
    if (!status)
        status = api->GetDimensions(info, view->dims, view->rank);
    if (!status)
        status = api->GetTensorShapeElementCount(info, &view->count);
    api->ReleaseTensorTypeAndShapeInfo(info);
    if (status)
        return obx_node_wrap(kernel, status, what);

    void *data = NULL;
    /* Inputs are read only; the API has no const accessor before version 23. */
    status = api->GetTensorMutableData((OrtValue *)value, &data);
    if (status)
        return obx_node_wrap(kernel, status, what);
    view->data = data;
    return NULL;
}

OrtStatus *obx_require_dtype(const ObxOpKernel *kernel, const ObxTensorView *view,
                             const char *input_name, ONNXTensorElementDataType expected)
{
    if (view->type == expected)
        return NULL;
    return obx_node_error(kernel, ORT_INVALID_ARGUMENT, "input %s must be %s, got %s", input_name,
                          obx_dtype_name(expected), obx_dtype_name(view->type));
}

OrtStatus *obx_get_input(const ObxOpKernel *kernel, OrtKernelContext *ctx, size_t input_count,
                         size_t index, const OrtValue **out)
{
    *out = NULL;
    if (index >= input_count)
        return NULL;
    OrtStatus *status = kernel->api->KernelContext_GetInput(ctx, index, out);
    return status ? obx_node_wrap(kernel, status, "reading inputs") : NULL;
}

OrtStatus *obx_get_inputs(const ObxOpKernel *kernel, OrtKernelContext *ctx, size_t count,
                          const OrtValue **values, size_t *input_count)
{
    OrtStatus *status = kernel->api->KernelContext_GetInputCount(ctx, input_count);
    if (status)
        return obx_node_wrap(kernel, status, "reading inputs");
    for (size_t i = 0; i < count; i++) {
        status = obx_get_input(kernel, ctx, *input_count, i, &values[i]);
        if (status)
            return status;
    }
    return NULL;
}

OrtStatus *obx_read_float_tensor(const ObxOpKernel *kernel, const OrtValue *value,
                                 const char *input_name, ObxTensorView *view)
{
    OrtStatus *status = obx_read_tensor(kernel, value, input_name, view);
    if (!status)
        status = obx_require_dtype(kernel, view, input_name, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    return status;
}

OrtStatus *obx_read_bias(const ObxOpKernel *kernel, const OrtValue *value, size_t length,
                         const char *axis, const float **bias)
{
    *bias = NULL;
    if (!value)
        return NULL;
    ObxTensorView view;
    OrtStatus *status = obx_read_float_tensor(kernel, value, "bias", &view);
    if (status)
        return status;
    char text[256];
    if (view.rank != 1 || (size_t)view.dims[0] != length)
        return obx_node_error(kernel, ORT_INVALID_ARGUMENT, "bias has shape %s; it must be [%s] = [%zu]",
                              obx_shape_text(&view, text, sizeof text), axis, length);
    *bias = view.data;
    return NULL;
}

OrtStatus *obx_allocate_output(const ObxOpKernel *kernel, OrtKernelContext *ctx, const int64_t *dims,
                               size_t rank, void **data)
{
    OrtValue *value = NULL;
    OrtStatus *status = kernel->api->KernelContext_GetOutput(ctx, 0, dims, rank, &value);
    if (!status)
        status = kernel->api->GetTensorMutableData(value, data);
    return status ? obx_node_wrap(kernel, status, "allocating output Y") : NULL;
}

OrtStatus *obx_allocate_matmul_output(const ObxOpKernel *kernel, OrtKernelContext *ctx, const ObxTensorView *a,
                                      size_t n, void **data)
{
    int64_t dims[OBX_OP_MAX_RANK];
    memcpy(dims, a->dims, a->rank * sizeof dims[0]);
    dims[a->rank - 1] = (int64_t)n;
    return obx_allocate_output(kernel, ctx, dims, a->rank, data);
}

/* Whether an attribute exists with a type other than `wanted` (onnxruntime
 * reports a missing attribute and a mistyped one alike). */
static int attribute_has_other_type(const ObxOpKernel *kernel, const OrtKernelInfo *info,
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
    if (wanted != ORT_OP_ATTR_FLOAT) {
        status = api->KernelInfoGetAttribute_float(info, name, &as_float);
        present |= status == NULL;
        obx_status_discard(api, status);
    }
    if (wanted != ORT_OP_ATTR_STRING) {
        status = api->KernelInfoGetAttribute_string(info, name, NULL, &string_size);
        present |= status == NULL;
        obx_status_discard(api, status);
    }
    return present;
}

OrtStatus *obx_read_int_attribute(const ObxOpKernel *kernel, const OrtKernelInfo *info,
                                  const char *name, int required, int64_t fallback, int64_t *out)
{
    OrtStatus *status = kernel->api->KernelInfoGetAttribute_int64(info, name, out);
    if (!status)
        return NULL;
    obx_status_discard(kernel->api, status);
    if (attribute_has_other_type(kernel, info, name, ORT_OP_ATTR_INT))
        return obx_node_error(kernel, ORT_INVALID_ARGUMENT, "attribute '%s' must be an int", name);
    if (required)
        return obx_node_error(kernel, ORT_INVALID_ARGUMENT,
                              "required attribute '%s' (int) is missing", name);
    *out = fallback;
    return NULL;
}

OrtStatus *obx_read_float_attribute(const ObxOpKernel *kernel, const OrtKernelInfo *info,
                                    const char *name, int required, float fallback, float *out)
{
    OrtStatus *status = kernel->api->KernelInfoGetAttribute_float(info, name, out);
    if (!status)
        return NULL;
    obx_status_discard(kernel->api, status);
    if (attribute_has_other_type(kernel, info, name, ORT_OP_ATTR_FLOAT))
        return obx_node_error(kernel, ORT_INVALID_ARGUMENT, "attribute '%s' must be a float", name);
    if (required)
        return obx_node_error(kernel, ORT_INVALID_ARGUMENT,
                              "required attribute '%s' (float) is missing", name);
    *out = fallback;
    return NULL;
}

OrtStatus *obx_read_act_scale_attribute(const ObxOpKernel *kernel, const OrtKernelInfo *info,
                                        int act_quant, float *act_scale)
{
    *act_scale = 0.0f;
    if (act_quant != OBX_ACT_INT8_STATIC)
        return obx_has_attribute(kernel, info, "act_scale")
                   ? obx_node_error(kernel, ORT_INVALID_ARGUMENT,
                                    "attribute act_scale is only used with act_quant=2, "
                                    "but act_quant=%d",
                                    act_quant)
                   : NULL;
    OrtStatus *status = obx_read_float_attribute(kernel, info, "act_scale", 1, 0.0f, act_scale);
    if (status)
        return status;
    /* The negated form refuses NaN as well. */
    if (!(*act_scale > 0.0f && *act_scale <= FLT_MAX))
        return obx_node_error(kernel, ORT_INVALID_ARGUMENT,
                              "attribute act_scale=%g must be finite and > 0 (act_quant=2)",
                              (double)*act_scale);
    return NULL;
}

int obx_has_attribute(const ObxOpKernel *kernel, const OrtKernelInfo *info, const char *name)
{
    size_t size = 0;
    OrtStatus *status = kernel->api->KernelInfoGetAttributeArray_int64(info, name, NULL, &size);
    obx_status_discard(kernel->api, status);
    return status == NULL || attribute_has_other_type(kernel, info, name, ORT_OP_ATTR_INTS);
}

OrtStatus *obx_read_ints_attribute(const ObxOpKernel *kernel, const OrtKernelInfo *info,
                                   const char *name, int64_t *out, size_t capacity, size_t *count)
{
    const OrtApi *api = kernel->api;
    size_t size = 0;
    *count = 0;
    OrtStatus *status = api->KernelInfoGetAttributeArray_int64(info, name, NULL, &size);
    if (status) {
        obx_status_discard(api, status);
        if (attribute_has_other_type(kernel, info, name, ORT_OP_ATTR_INTS))
            return obx_node_error(kernel, ORT_INVALID_ARGUMENT, "attribute '%s' must be a list of ints",
                                  name);
        return NULL;
    }
    if (size > capacity)
        return obx_node_error(kernel, ORT_INVALID_ARGUMENT,
                              "attribute '%s' has %zu values; at most %zu are expected", name, size,
                              capacity);
    if (size == 0)
        return NULL;
    status = api->KernelInfoGetAttributeArray_int64(info, name, out, &size);
    if (status) {
        char what[64];
        snprintf(what, sizeof what, "reading attribute '%s'", name);
        return obx_node_wrap(kernel, status, what);
    }
    *count = size;
    return NULL;
}

OrtStatus *obx_read_string_attribute(const ObxOpKernel *kernel, const OrtKernelInfo *info,
                                     const char *name, const char *expected, char *out,
                                     size_t out_len, size_t *length)
{
    const OrtApi *api = kernel->api;
    size_t size = 0; /* bytes with the terminator */
    OrtStatus *status = api->KernelInfoGetAttribute_string(info, name, NULL, &size);
    if (status) {
        obx_status_discard(api, status);
        if (attribute_has_other_type(kernel, info, name, ORT_OP_ATTR_STRING))
            return obx_node_error(kernel, ORT_INVALID_ARGUMENT,
                                  "attribute '%s' must be a string, one of: %s", name, expected);
        return obx_node_error(kernel, ORT_INVALID_ARGUMENT,
                              "required attribute '%s' (string) is missing; expected one of: %s",
                              name, expected);
    }
    if (size == 0 || size > out_len)
        return obx_node_error(kernel, ORT_INVALID_ARGUMENT,
                              "attribute %s is not a known %s (%zu characters long); expected "
                              "one of: %s", name, name, size ? size - 1 : 0, expected);
    status = api->KernelInfoGetAttribute_string(info, name, out, &size);
    if (status) {
        char what[64];
        snprintf(what, sizeof what, "reading attribute '%s'", name);
        return obx_node_wrap(kernel, status, what);
    }
    out[size - 1] = '\0';
    *length = size - 1;
    return NULL;
}

const OrtValue *obx_constant_input(const ObxOpKernel *kernel, const OrtKernelInfo *info,
                                   size_t index)
{
    if (kernel->api_version < ORT_API_WITH_CONSTANT_INPUT)
        return NULL;
    int is_constant = 0;
    const OrtValue *value = NULL;
    OrtStatus *status = kernel->api->KernelInfoGetConstantInput_tensor(info, index, &is_constant,
                                                                       &value);
    if (status) { /* not knowable here: the op reads the input per call */
        obx_status_discard(kernel->api, status);
        return NULL;
    }
    return is_constant ? value : NULL;
}

/* "2bit, base3, rans, ...": the names of formats.h then of streams.h,
 * for messages. */
typedef struct FormatNames {
    char text[128];
} FormatNames;

static FormatNames format_names(void)
{
    FormatNames names = {""};
    size_t used = 0;
    for (int fmt = 0; fmt < OBX_FMT_COUNT && used < sizeof names.text; fmt++)
        used += (size_t)snprintf(names.text + used, sizeof names.text - used, "%s%s",
                                 fmt ? ", " : "", obx_format_name(fmt));
    for (int stream = 0; stream < OBX_STREAM_COUNT && used < sizeof names.text; stream++)
        used += (size_t)snprintf(names.text + used, sizeof names.text - used, ", %s",
                                 obx_stream_name(stream));
    return names;
}

OrtStatus *obx_read_format_attribute(const ObxOpKernel *head, const OrtKernelInfo *info, int *fmt,
                                     int *stream)
{
    char name[32];
    size_t length = 0;
    const FormatNames expected = format_names();
    OrtStatus *status = obx_read_string_attribute(head, info, "format", expected.text, name,
                                                  sizeof name, &length);
    if (status)
        return status;
    /* The whole attribute must be the name: "2bit\0junk" is not "2bit". */
    *fmt = obx_format_from_name(name, length);
    *stream = obx_stream_from_name(name, length);
    if (*stream >= 0)
        *fmt = OBX_FMT_BASE3; /* every stream decodes to base3 rows */
    if (*fmt >= 0)
        return NULL;
    if (strlen(name) != length)
        return obx_node_error(head, ORT_INVALID_ARGUMENT,
                              "attribute format holds a NUL byte after '%s' (%zu bytes long); "
                              "expected one of: %s", name, length, expected.text);
    return obx_node_error(head, ORT_INVALID_ARGUMENT,
                          "attribute format='%s' is not a known format; expected one of: %s", name,
                          expected.text);
}

OrtStatus *obx_read_crc32c_attribute(const ObxOpKernel *head, const OrtKernelInfo *info,
                                     int64_t *crc32c)
{
    OrtStatus *status = obx_read_int_attribute(head, info, "crc32c", 0, OBX_NO_CHECKSUM, crc32c);
    if (status)
        return status;
    if (*crc32c != OBX_NO_CHECKSUM && (*crc32c < 0 || *crc32c > (int64_t)UINT32_MAX))
        return obx_node_error(head, ORT_INVALID_ARGUMENT,
                              "attribute crc32c=%lld must be in [0, %lu] (a CRC32C)",
                              (long long)*crc32c, (unsigned long)UINT32_MAX);
    return NULL;
}

OrtStatus *obx_check_weights_crc32c(const ObxOpKernel *head, int64_t crc32c,
                                    const ObxTensorView *b, const ObxTensorView *scales)
{
    if (crc32c == OBX_NO_CHECKSUM || !head->settings.verify_checksums)
        return NULL;
    uint32_t crc = obx_crc32c(0, b->data, b->count);
    crc = obx_crc32c(crc, scales->data, scales->count * sizeof(float));
    if (crc == (uint32_t)crc32c)
        return NULL;
    return obx_node_error(head, ORT_INVALID_ARGUMENT,
                          "corrupt weights: B and scales have CRC32C 0x%08x, the node's crc32c "
                          "attribute says 0x%08llx (session config entry "
                          "onnxbit.verify_checksums=0 skips this check)",
                          crc, (unsigned long long)crc32c);
}
