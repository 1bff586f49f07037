/* com.onnxbit::TernaryConv, the onnxruntime binding of obx_tconv_* (tconv.h).
 *
 *   Y = Conv(X, W * scales) (+ bias), ONNX Conv semantics, 1-D and 2-D.
 *
 * Inputs: X float32 [N, C, (H,) W]; B uint8, W [M, C/group, (kH,) kW]
 * flattened to M rows of K = C/group * kH * kW codes, each row packed in
 * `format` (the TernaryMatMul layout with N = M), or with a stream format
 * (streams.h: rans, zeroruns, sparse) a 1-D stream of those rows, decoded to base3
 * once before prepacking so storage never costs inference time; scales
 * float32 [1], [M] or
 * [M, ceil(K / group_size)]; bias float32 [M], optional.
 * Attributes: weight_shape (required ints, rank 3 or 4), format (required),
 * group_size, act_quant (as TernaryMatMul; act_quant = 1 shares one
 * activation scale per im2col row, act_quant = 2 uses the static act_scale
 * for every value, act_quant = 3 one scale per input pixel over its group's
 * channels, tconv.h), act_scale (as TernaryMatMul), group, strides, pads, dilations,
 * auto_pad (as Conv), crc32c (optional, as TernaryMatMul: CRC32C of B's bytes
 * as stored, a stream undecoded, then the scales' bytes), activation
 * (optional: Relu, LeakyRelu with activation_alpha, Clip with activation_min
 * and activation_max, HardSigmoid with activation_alpha and activation_beta,
 * HardSwish, HardSwishRelu6, Sigmoid, Silu; applied to Y as tconv.h
 * obx_activate says). Constant B and scales are checked and prepacked at
 * kernel creation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "custom_ops.h"
#include "onnxbit/formats.h"
#include "onnxbit/streams.h"
#include "onnxbit/tconv.h"
#include "op_inputs.h"
#include "op_kernel.h"
#include "op_status.h"

enum { CONV_INPUT_X = 0, CONV_INPUT_B = 1, CONV_INPUT_SCALES = 2, CONV_INPUT_BIAS = 3, CONV_INPUTS = 4 };

typedef struct TernaryConvKernel {
    ObxOpKernel head;
    obx_conv_params params;
    int fmt; /* the row format B holds, or decodes to when a stream */
    int stream; /* B is a stream (streams.h) of base3 rows, or -1 */
    int64_t group_size;
    int act_quant;
    float act_scale; /* act_quant 2 only */
    int64_t crc32c; /* the attribute, or OBX_NO_CHECKSUM when the node has none */
    obx_activation activation;
    obx_tconv_weights *constant_weights; /* prepacked at creation, or NULL */
} TernaryConvKernel;

/* A stream B decoded into m rows of k codes, row_bytes base3 bytes each (malloc'd, *out). */
static OrtStatus *decode_stream(const TernaryConvKernel *kernel, const ObxTensorView *b, size_t m,
                                size_t k, size_t row_bytes, uint8_t **out)
{
    const ObxOpKernel *head = &kernel->head;
    char text[256];
    if (b->rank != 1)
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "B must be a 1-D %s stream, got shape %s",
                              obx_stream_name(kernel->stream), obx_shape_text(b, text, sizeof text));
    uint8_t *rows = malloc(m * row_bytes);
    if (!rows)
        return obx_node_error(head, ORT_FAIL, "out of memory decoding B (%zu bytes)", m * row_bytes);
    char err[OBX_OP_ERR_LEN] = "";
    if (obx_stream_decode_base3(kernel->stream, b->data, b->count, m, k, rows, err, sizeof err) != 0) {
        free(rows);
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "invalid weights (format %s): %s",
                              obx_stream_name(kernel->stream), err);
    }
    *out = rows;
    return NULL;
}

static OrtStatus *prepack(const TernaryConvKernel *kernel, const OrtValue *b_value,
                          const OrtValue *scales_value, obx_tconv_weights **out)
{
    const ObxOpKernel *head = &kernel->head;
    ObxTensorView b, scales;
    OrtStatus *status = obx_read_tensor(head, b_value, "B", &b);
    if (!status)
        status = obx_require_dtype(head, &b, "B", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
    if (!status)
        status = obx_read_tensor(head, scales_value, "scales", &scales);
    if (!status)
        status = obx_require_dtype(head, &scales, "scales", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    if (!status)
        status = obx_check_weights_crc32c(head, kernel->crc32c, &b, &scales);
    if (status)
        return status;
    const obx_conv_params *p = &kernel->params;
    size_t k = (size_t)p->weight_shape[1];
    for (size_t i = 0; i < p->spatial_rank; i++)
        k *= (size_t)p->weight_shape[2 + i];
    size_t m = (size_t)p->weight_shape[0];
    size_t row_bytes = obx_packed_row_bytes(kernel->fmt, k);
    size_t expected = m * row_bytes;
    const void *rows = b.data;
    uint8_t *decoded = NULL;
    if (kernel->stream >= 0) {
        status = decode_stream(kernel, &b, m, k, row_bytes, &decoded);
        if (status)
            return status;
        rows = decoded;
    } else if (b.count != expected)
        return obx_node_error(head, ORT_INVALID_ARGUMENT,
                              "B has %zu bytes; weight_shape M=%lld rows of K=%zu codes in format %s "
                              "need %zu", b.count, (long long)p->weight_shape[0], k,
                              obx_format_name(kernel->fmt), expected);
    char err[OBX_OP_ERR_LEN] = "";
    *out = obx_tconv_prepack_act(kernel->fmt, rows, expected, p, scales.data, scales.count,
                                 kernel->group_size, kernel->act_quant, err, sizeof err);
    free(decoded);
    if (!*out)
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "invalid weights (format %s): %s",
                              kernel->stream >= 0 ? obx_stream_name(kernel->stream)
                                                  : obx_format_name(kernel->fmt),
                              err[0] ? err : "rejected");
    return NULL;
}

static OrtStatus *read_auto_pad(const ObxOpKernel *head, const OrtKernelInfo *info, int *auto_pad)
{
    static const char *const names[] = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"};
    const char *expected = "NOTSET, SAME_UPPER, SAME_LOWER, VALID";
    *auto_pad = OBX_AUTO_PAD_NOTSET;
    if (!obx_has_attribute(head, info, "auto_pad"))
        return NULL;
    char text[16];
    size_t length = 0;
    OrtStatus *status =
        obx_read_string_attribute(head, info, "auto_pad", expected, text, sizeof text, &length);
    if (status)
        return status;
    for (int i = 0; i < 4; i++) {
        if (strlen(names[i]) == length && memcmp(names[i], text, length) == 0) {
            *auto_pad = i;
            return NULL;
        }
    }
    return obx_node_error(head, ORT_INVALID_ARGUMENT, "attribute auto_pad='%s' must be one of: %s",
                          text, expected);
}

/* The activation attributes: a name and the parameters it takes, with
 * ONNX's defaults; a parameter the activation does not take is refused (it
 * would be silently ignored). */
static OrtStatus *read_activation(const ObxOpKernel *head, const OrtKernelInfo *info, obx_activation *out)
{
    static const struct {
        const char *name;
        int kind;
        const char *params[2]; /* the attributes read into alpha and beta, NULL when not taken */
        float defaults[2];
    } kinds[] = {
        {"Relu", OBX_ACTIVATION_RELU, {NULL, NULL}, {0.0f, 0.0f}},
        {"LeakyRelu", OBX_ACTIVATION_LEAKY_RELU, {"activation_alpha", NULL}, {0.01f, 0.0f}},
        {"Clip", OBX_ACTIVATION_CLIP, {"activation_min", "activation_max"}, {-INFINITY, INFINITY}},
        {"HardSigmoid", OBX_ACTIVATION_HARD_SIGMOID, {"activation_alpha", "activation_beta"}, {0.2f, 0.5f}},
        {"HardSwish", OBX_ACTIVATION_HARD_SWISH, {NULL, NULL}, {1.0f / 6.0f, 0.5f}},
        {"HardSwishRelu6", OBX_ACTIVATION_HARD_SWISH_RELU6, {NULL, NULL}, {0.0f, 0.0f}},
        {"Sigmoid", OBX_ACTIVATION_SIGMOID, {NULL, NULL}, {0.0f, 0.0f}},
        {"Silu", OBX_ACTIVATION_SILU, {NULL, NULL}, {0.0f, 0.0f}},
    };
    static const char *const all_params[] = {"activation_alpha", "activation_beta", "activation_min",
                                             "activation_max"};
    const char *expected = "Relu, LeakyRelu, Clip, HardSigmoid, HardSwish, HardSwishRelu6, Sigmoid, Silu";
    *out = (obx_activation){OBX_ACTIVATION_NONE, 0.0f, 0.0f};
    if (!obx_has_attribute(head, info, "activation")) {
        for (size_t i = 0; i < sizeof all_params / sizeof all_params[0]; i++)
            if (obx_has_attribute(head, info, all_params[i]))
                return obx_node_error(head, ORT_INVALID_ARGUMENT, "attribute %s is set without an activation",
                                      all_params[i]);
        return NULL;
    }
    char text[32];
    size_t length = 0;
    OrtStatus *status = obx_read_string_attribute(head, info, "activation", expected, text, sizeof text, &length);
    if (status)
        return status;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        if (strlen(kinds[k].name) != length || memcmp(kinds[k].name, text, length) != 0)
            continue;
        for (size_t i = 0; i < sizeof all_params / sizeof all_params[0]; i++) {
            const char *name = all_params[i];
            const int taken = (kinds[k].params[0] && strcmp(kinds[k].params[0], name) == 0) ||
                              (kinds[k].params[1] && strcmp(kinds[k].params[1], name) == 0);
            if (!taken && obx_has_attribute(head, info, name))
                return obx_node_error(head, ORT_INVALID_ARGUMENT, "attribute %s does not apply to activation %s",
                                      name, kinds[k].name);
        }
        float value[2] = {kinds[k].defaults[0], kinds[k].defaults[1]};
        for (int i = 0; i < 2 && !status; i++)
            if (kinds[k].params[i])
                status = obx_read_float_attribute(head, info, kinds[k].params[i], 0, value[i], &value[i]);
        if (status)
            return status;
        if (kinds[k].kind == OBX_ACTIVATION_CLIP && !(value[0] <= value[1]))
            return obx_node_error(head, ORT_INVALID_ARGUMENT,
                                  "activation Clip needs activation_min <= activation_max, got %g and %g",
                                  (double)value[0], (double)value[1]);
        *out = (obx_activation){kinds[k].kind, value[0], value[1]};
        return NULL;
    }
    return obx_node_error(head, ORT_INVALID_ARGUMENT, "attribute activation='%s' must be one of: %s", text,
                          expected);
}

/* An ints attribute that is absent (-> fill) or has exactly `want` values. */
static OrtStatus *read_spatial_ints(const ObxOpKernel *head, const OrtKernelInfo *info,
                                    const char *name, size_t want, int64_t fill, int64_t *out)
{
    size_t count = 0;
    OrtStatus *status = obx_read_ints_attribute(head, info, name, out, 4, &count);
    if (status)
        return status;
    if (count == 0) {
        for (size_t i = 0; i < want; i++)
            out[i] = fill;
        return NULL;
    }
    if (count != want)
        return obx_node_error(head, ORT_INVALID_ARGUMENT,
                              "attribute '%s' has %zu values; this %zu-D convolution needs %zu", name,
                              count, want / (strcmp(name, "pads") == 0 ? 2 : 1), want);
    return NULL;
}

static OrtStatus *init_kernel(ObxOpKernel *head, const OrtKernelInfo *info)
{
    TernaryConvKernel *kernel = (TernaryConvKernel *)head;
    obx_conv_params *p = &kernel->params;
    size_t count = 0;
    int64_t act_quant = 0;
    OrtStatus *status = obx_read_ints_attribute(head, info, "weight_shape", p->weight_shape, 4, &count);
    if (status)
        return status;
    if (count != 3 && count != 4)
        return obx_node_error(head, ORT_INVALID_ARGUMENT,
                              "attribute weight_shape must be [M, C/group, kW] or "
                              "[M, C/group, kH, kW], got %zu values", count);
    p->spatial_rank = count - 2;
    status = obx_read_int_attribute(head, info, "group", 0, 1, &p->group);
    if (!status)
        status = obx_read_int_attribute(head, info, "group_size", 0, 0, &kernel->group_size);
    if (!status)
        status = obx_read_int_attribute(head, info, "act_quant", 0, OBX_ACT_NONE, &act_quant);
    if (!status)
        status = read_spatial_ints(head, info, "strides", p->spatial_rank, 1, p->strides);
    if (!status)
        status = read_spatial_ints(head, info, "dilations", p->spatial_rank, 1, p->dilations);
    if (!status)
        status = read_spatial_ints(head, info, "pads", 2 * p->spatial_rank, 0, p->pads);
    if (!status)
        status = read_auto_pad(head, info, &p->auto_pad);
    if (!status)
        status = obx_read_crc32c_attribute(head, info, &kernel->crc32c);
    if (!status)
        status = obx_read_format_attribute(head, info, &kernel->fmt, &kernel->stream);
    if (!status)
        status = read_activation(head, info, &kernel->activation);
    if (status)
        return status;
    if (act_quant != OBX_ACT_NONE && act_quant != OBX_ACT_INT8_TOKEN &&
        act_quant != OBX_ACT_INT8_STATIC && act_quant != OBX_ACT_INT8_PIXEL)
        return obx_node_error(head, ORT_INVALID_ARGUMENT,
                              "attribute act_quant=%lld must be 0 (float activations), 1 "
                              "(int8 per im2col row), 2 (int8 with the static act_scale) or 3 "
                              "(int8 per input pixel)",
                              (long long)act_quant);
    kernel->act_quant = (int)act_quant;
    status = obx_read_act_scale_attribute(head, info, kernel->act_quant, &kernel->act_scale);
    if (status)
        return status;
    if (kernel->group_size < 0)
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "attribute group_size=%lld must be >= 0",
                              (long long)kernel->group_size);
    char err[OBX_OP_ERR_LEN] = "";
    if (obx_conv_params_check(p, err, sizeof err) != 0)
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "attributes: %s", err);

    const OrtValue *b = obx_constant_input(head, info, CONV_INPUT_B);
    const OrtValue *scales = obx_constant_input(head, info, CONV_INPUT_SCALES);
    if (b && scales)
        return prepack(kernel, b, scales, &kernel->constant_weights);
    return NULL;
}

static void release_kernel(ObxOpKernel *head)
{
    obx_tconv_free(((TernaryConvKernel *)head)->constant_weights);
}

static OrtStatus *run(const TernaryConvKernel *kernel, OrtKernelContext *ctx,
                      const obx_tconv_weights *weights, const ObxTensorView *x,
                      const OrtValue *bias_value)
{
    const ObxOpKernel *head = &kernel->head;
    char err[OBX_OP_ERR_LEN] = "";
    char text[256];
    obx_conv_geometry geometry;
    if (obx_conv_geometry_init(&geometry, &kernel->params, x->dims, x->rank, err, sizeof err) != 0)
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "input X has shape %s: %s",
                              obx_shape_text(x, text, sizeof text), err);
    const float *bias = NULL;
    OrtStatus *status = obx_read_bias(head, bias_value, geometry.out_channels, "M", &bias);
    if (status)
        return status;
    int64_t y_dims[4] = {(int64_t)geometry.batch, (int64_t)geometry.out_channels,
                         (int64_t)geometry.out_h, (int64_t)geometry.out_w};
    if (kernel->params.spatial_rank == 1)
        y_dims[2] = (int64_t)geometry.out_w;
    void *y = NULL;
    status = obx_allocate_output(head, ctx, y_dims, kernel->params.spatial_rank + 2, &y);
    if (status)
        return status;
    ObxOrtRunner runner;
    obx_parallel_for_fn parallel_for = obx_op_parallel_for(head, ctx, &runner);
    if (obx_tconv_compute_activated(weights, &geometry, x->data, bias, kernel->act_quant, kernel->act_scale,
                                    &kernel->activation, y, parallel_for, &runner, err, sizeof err) != 0)
        return obx_node_error(head, ORT_FAIL, "compute failed: %s", err);
    return NULL;
}

static OrtStatus *compute(const ObxOpKernel *head, OrtKernelContext *ctx)
{
    const TernaryConvKernel *kernel = (const TernaryConvKernel *)head;
    size_t input_count = 0;
    const OrtValue *values[CONV_INPUTS];
    OrtStatus *status = obx_get_inputs(head, ctx, CONV_INPUTS, values, &input_count);
    if (status)
        return status;
    if (!values[CONV_INPUT_X] || !values[CONV_INPUT_B] || !values[CONV_INPUT_SCALES])
        return obx_node_error(head, ORT_INVALID_ARGUMENT, "inputs X, B and scales are required");
    ObxTensorView x;
    status = obx_read_float_tensor(head, values[CONV_INPUT_X], "X", &x);
    if (status)
        return status;
    if (kernel->constant_weights)
        return run(kernel, ctx, kernel->constant_weights, &x, values[CONV_INPUT_BIAS]);
    obx_tconv_weights *weights = NULL;
    status = prepack(kernel, values[CONV_INPUT_B], values[CONV_INPUT_SCALES], &weights);
    if (status)
        return status;
    status = run(kernel, ctx, weights, &x, values[CONV_INPUT_BIAS]);
    obx_tconv_free(weights);
    return status;
}

static const ONNXTensorElementDataType input_types[CONV_INPUTS] = {
    [CONV_INPUT_X] = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
    [CONV_INPUT_B] = ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8,
    [CONV_INPUT_SCALES] = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
    [CONV_INPUT_BIAS] = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
};

/* No shape inference callback: onnxruntime learns Y's shape when it runs;
 * the Python schema (onnxbit/ops/schemas.py) infers it for onnx tools. */
const ObxOpDefinition obx_ternary_conv_definition = {
    .name = "TernaryConv",
    .input_count = CONV_INPUTS,
    .input_types = input_types,
    .required_inputs = CONV_INPUT_BIAS,
    .output_type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
    .kernel_size = sizeof(TernaryConvKernel),
    .init = init_kernel,
    .compute = compute,
    .release = release_kernel,
    .infer_shape = NULL,
};
