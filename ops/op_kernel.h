/* Generic custom-op plumbing: an op is described once by an ObxOpDefinition
 * (name, inputs, outputs, kernel callbacks) and this layer turns it into the
 * OrtCustomOp table onnxruntime reads, for whatever API version the runtime
 * serves: V1 and V2 callbacks, node-name lookup, kernel allocation and
 * release, the version range, the parallel-for runner. An op file then only
 * binds attributes, shapes and errors to a kernel of the compute core. */
#ifndef ONNXBIT_OP_KERNEL_H
#define ONNXBIT_OP_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#include "onnxbit/tmatmul.h"
#include "ort_abi.h"

typedef struct ObxOpDefinition ObxOpDefinition;

/* What the session options of a registration say about the ops
 * (session_settings.h reads them). */
typedef struct ObxSessionSettings {
    int verify_checksums; /* check a node's crc32c attribute at kernel creation */
} ObxSessionSettings;

/* The head of every kernel object (first member of the op's kernel struct). */
typedef struct ObxOpKernel {
    const ObxOpDefinition *def;
    const OrtApi *api;
    uint32_t api_version;
    char *node_name; /* "" when the runtime cannot say */
    ObxSessionSettings settings;
} ObxOpKernel;

struct ObxOpDefinition {
    const char *name;
    size_t input_count;
    const ONNXTensorElementDataType *input_types;
    size_t required_inputs; /* inputs from this index on are optional */
    ONNXTensorElementDataType output_type; /* one output */
    size_t kernel_size; /* bytes of the op's kernel struct, ObxOpKernel first */
    /* Reads attributes (and constant inputs) into a zeroed kernel whose head
     * is filled in. On failure the layer calls release and frees it. */
    OrtStatus *(*init)(ObxOpKernel *kernel, const OrtKernelInfo *info);
    OrtStatus *(*compute)(const ObxOpKernel *kernel, OrtKernelContext *ctx);
    /* Frees what init allocated (not the kernel itself); may be NULL. */
    void (*release)(ObxOpKernel *kernel);
    /* Optional output shape inference; onnxruntime ignores its status. */
    void (*infer_shape)(const OrtApi *api, OrtShapeInferContext *ctx);
};

/* An OrtCustomOp built from a definition (the OrtCustomOp first, so the
 * runtime's op pointer leads back to the definition). */
typedef struct ObxCustomOp {
    OrtCustomOp ort;
    const ObxOpDefinition *def;
    const OrtApi *api;
    ObxSessionSettings settings; /* of the session options it was registered on */
} ObxCustomOp;

/* Fills op for a runtime serving `api` at `api_version` (already capped at
 * ORT_ABI_MAX_VERSION): the table says that version and leaves NULL what the
 * runtime cannot use. The op declares exactly version 1 of its domain. */
void obx_custom_op_init(ObxCustomOp *op, const ObxOpDefinition *def, const OrtApi *api,
                        uint32_t api_version, ObxSessionSettings settings);

/* The session's intra-op thread pool as the compute core's parallel-for
 * (NULL when the runtime has none for custom ops); runner_storage holds its
 * state for the duration of the call. */
typedef struct ObxOrtRunner {
    const OrtApi *api;
    const OrtKernelContext *ctx;
} ObxOrtRunner;
obx_parallel_for_fn obx_op_parallel_for(const ObxOpKernel *kernel, OrtKernelContext *ctx,
                                        ObxOrtRunner *runner_storage);

#endif
