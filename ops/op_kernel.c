/* The OrtCustomOp boilerplate behind every op (op_kernel.h). */
#include "op_kernel.h"

#include <stdio.h>
#include <stdlib.h>

#include "op_status.h"

static const ObxCustomOp *custom_op(const OrtCustomOp *op) { return (const ObxCustomOp *)op; }

/* ---- kernels ------------------------------------------------------------- */

static OrtStatus *read_node_name(const OrtApi *api, uint32_t api_version, const char *op_name,
                                 const OrtKernelInfo *info, char **out)
{
    size_t size = 0;
    if (api_version >= ORT_API_WITH_CONSTANT_INPUT) {
        OrtStatus *status = api->KernelInfo_GetNodeName(info, NULL, &size);
        if (status)
            return obx_status_wrap(api, status, op_name);
    }
    *out = calloc(size + 1, 1);
    if (!*out)
        return obx_status_fmt(api, ORT_FAIL, "%s: out of memory", op_name);
    if (size) {
        OrtStatus *status = api->KernelInfo_GetNodeName(info, *out, &size);
        if (status)
            return obx_status_wrap(api, status, op_name);
    }
    return NULL;
}

static void destroy_kernel(void *opaque)
{
    ObxOpKernel *kernel = opaque;
    if (!kernel)
        return;
    if (kernel->def->release)
        kernel->def->release(kernel);
    free(kernel->node_name);
    free(kernel);
}

static OrtStatus *create_kernel(const OrtCustomOp *op, const OrtApi *api, const OrtKernelInfo *info,
                                void **out)
{
    const ObxOpDefinition *def = custom_op(op)->def;
    *out = NULL;
    ObxOpKernel *kernel = calloc(1, def->kernel_size);
    if (!kernel)
        return obx_status_fmt(api, ORT_FAIL, "%s: out of memory creating a kernel", def->name);
    kernel->def = def;
    kernel->api = api;
    kernel->api_version = op->version;
    kernel->settings = custom_op(op)->settings;
    OrtStatus *status = read_node_name(api, op->version, def->name, info, &kernel->node_name);
    if (!status)
        status = def->init(kernel, info);
    if (status) {
        destroy_kernel(kernel);
        return status;
    }
    *out = kernel;
    return NULL;
}

/* Runtimes before API 16 take no status from a kernel, so the V1 callbacks can
 * only report a failure on stderr (and leave the output unset). */
static void report_unreturnable(const OrtApi *api, OrtStatus *status)
{
    fprintf(stderr, "onnxbit: %s\n", api->GetErrorMessage(status));
    api->ReleaseStatus(status);
}

static void *create_kernel_v1(const OrtCustomOp *op, const OrtApi *api, const OrtKernelInfo *info)
{
    void *kernel = NULL;
    OrtStatus *status = create_kernel(op, api, info, &kernel);
    if (status)
        report_unreturnable(api, status);
    return kernel;
}

static OrtStatus *compute_v2(void *kernel, OrtKernelContext *ctx)
{
    const ObxOpKernel *head = kernel;
    return head->def->compute(head, ctx);
}

static void compute_v1(void *kernel, OrtKernelContext *ctx)
{
    if (!kernel) {
        fprintf(stderr, "onnxbit: kernel creation failed (reported above); output not computed\n");
        return;
    }
    OrtStatus *status = compute_v2(kernel, ctx);
    if (status)
        report_unreturnable(((ObxOpKernel *)kernel)->api, status);
}

/* ---- the op's description ------------------------------------------------ */

static const char *op_name(const OrtCustomOp *op) { return custom_op(op)->def->name; }

static const char *op_provider(const OrtCustomOp *op) { return NULL; /* the CPU provider */ }

static ONNXTensorElementDataType input_type(const OrtCustomOp *op, size_t index)
{
    const ObxOpDefinition *def = custom_op(op)->def;
    return index < def->input_count ? def->input_types[index]
                                    : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

static size_t input_count(const OrtCustomOp *op) { return custom_op(op)->def->input_count; }

static ONNXTensorElementDataType output_type(const OrtCustomOp *op, size_t index)
{
    return custom_op(op)->def->output_type;
}

static size_t output_count(const OrtCustomOp *op) { return 1; }

static OrtCustomOpInputOutputCharacteristic input_characteristic(const OrtCustomOp *op,
                                                                 size_t index)
{
    return index >= custom_op(op)->def->required_inputs ? INPUT_OUTPUT_OPTIONAL
                                                        : INPUT_OUTPUT_REQUIRED;
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

/* No variadic inputs or outputs; these answer the defaults. */
static int variadic_min_arity(const OrtCustomOp *op) { return 1; }

static int variadic_homogeneity(const OrtCustomOp *op) { return 1; }

/* The op implements exactly version 1 of its domain. onnxruntime (1.17 to
 * 1.32) still registers a custom domain for versions 1..1000 with one schema
 * per op name, since the first op's start version, so this range alone does
 * not make it refuse a model importing version 2: that takes a check of the
 * model's opset imports before the session is created. */
static int op_version(const OrtCustomOp *op) { return 1; }

/* Outputs alias no input and may not overwrite one. */
static size_t no_index_pairs(int **input_index, int **output_index)
{
    *input_index = NULL;
    *output_index = NULL;
    return 0;
}

static void release_index_pairs(int *input_index, int *output_index) {}

static OrtStatus *infer_shape(const OrtCustomOp *op, OrtShapeInferContext *ctx)
{
    const ObxCustomOp *self = custom_op(op);
    self->def->infer_shape(self->api, ctx);
    return NULL; /* onnxruntime ignores (and never releases) a status from here */
}

void obx_custom_op_init(ObxCustomOp *op, const ObxOpDefinition *def, const OrtApi *api,
                        uint32_t api_version, ObxSessionSettings settings)
{
    *op = (ObxCustomOp){.def = def, .api = api, .settings = settings};
    OrtCustomOp *ort = &op->ort;
    ort->version = api_version;
    ort->CreateKernel = create_kernel_v1;
    ort->GetName = op_name;
    ort->GetExecutionProviderType = op_provider;
    ort->GetInputType = input_type;
    ort->GetInputTypeCount = input_count;
    ort->GetOutputType = output_type;
    ort->GetOutputTypeCount = output_count;
    ort->KernelCompute = compute_v1;
    ort->KernelDestroy = destroy_kernel;
    ort->GetInputCharacteristic = input_characteristic;
    ort->GetOutputCharacteristic = output_characteristic;
    ort->GetInputMemoryType = input_memory_type;
    ort->GetVariadicInputMinArity = variadic_min_arity;
    ort->GetVariadicInputHomogeneity = variadic_homogeneity;
    ort->GetVariadicOutputMinArity = variadic_min_arity;
    ort->GetVariadicOutputHomogeneity = variadic_homogeneity;
    if (api_version >= ORT_API_WITH_STATUS_CALLBACKS) {
        ort->CreateKernelV2 = create_kernel;
        ort->KernelComputeV2 = compute_v2;
    }
    if (api_version >= ORT_API_WITH_SHAPE_INFERENCE) {
        ort->InferOutputShapeFn = def->infer_shape ? infer_shape : NULL;
        ort->GetStartVersion = op_version;
        ort->GetEndVersion = op_version;
    }
    ort->GetMayInplace = no_index_pairs;
    ort->ReleaseMayInplace = release_index_pairs;
    ort->GetAliasMap = no_index_pairs;
    ort->ReleaseAliasMap = release_index_pairs;
}

/* ---- threads ------------------------------------------------------------- */

static void ort_parallel_for(void *runner, obx_task_fn fn, void *task_arg, size_t count)
{
    const ObxOrtRunner *ort = runner;
    OrtStatus *status = ort->api->KernelContext_ParallelFor(ort->ctx, fn, count, 0, task_arg);
    if (status) { /* the pool refused the work: do it on this thread */
        obx_status_discard(ort->api, status);
        for (size_t i = 0; i < count; i++)
            fn(task_arg, i);
    }
}

obx_parallel_for_fn obx_op_parallel_for(const ObxOpKernel *kernel, OrtKernelContext *ctx,
                                        ObxOrtRunner *runner_storage)
{
    *runner_storage = (ObxOrtRunner){kernel->api, ctx};
    return kernel->api_version >= ORT_API_WITH_SHAPE_INFERENCE ? ort_parallel_for : NULL;
}
