/* The slice of the onnxruntime C ABI this library uses, declared by hand.
 *
 * No package we can depend on ships onnxruntime_c_api.h, and the C API is
 * append-only, so a custom-op library can carry its own declarations: opaque
 * handles, the enums, the OrtApi function table (slots we call are named, the
 * rest are padding) and the OrtCustomOp callback table. Every named slot and
 * field is pinned to its ABI position by a static assertion, so a miscounted
 * padding block fails the build instead of calling the wrong function.
 * Slot numbers and field offsets are facts of the published C API (checked
 * against the headers of onnxruntime 1.16 to 1.31). */
#ifndef ONNXBIT_ORT_ABI_H
#define ONNXBIT_ORT_ABI_H

#include <stddef.h>
#include <stdint.h>

/* Highest API version whose OrtCustomOp layout we fill (208 bytes, 1.18+). */
#define ORT_ABI_MAX_VERSION 18
/* Get{Input,Output}Characteristic appeared in version 8; below it optional
 * inputs cannot be declared. */
#define ORT_ABI_MIN_VERSION 8

/* Versions that added the features we use conditionally. */
#define ORT_API_WITH_CONSTANT_INPUT 15 /* KernelInfoGetConstantInput_tensor, node name */
/* HasSessionConfigEntry/GetSessionConfigEntry exist from version 14; we read
 * them from 15 on, where every other slot we name below 250 exists too. */
#define ORT_API_WITH_SESSION_CONFIG 15
#define ORT_API_WITH_STATUS_CALLBACKS 16 /* CreateKernelV2, KernelComputeV2 */
#define ORT_API_WITH_SHAPE_INFERENCE 17 /* InferOutputShapeFn, ParallelFor */

typedef struct OrtStatus OrtStatus;
typedef struct OrtSessionOptions OrtSessionOptions;
typedef struct OrtCustomOpDomain OrtCustomOpDomain;
typedef struct OrtKernelInfo OrtKernelInfo;
typedef struct OrtKernelContext OrtKernelContext;
typedef struct OrtValue OrtValue;
typedef struct OrtTensorTypeAndShapeInfo OrtTensorTypeAndShapeInfo;
typedef struct OrtShapeInferContext OrtShapeInferContext;
typedef struct OrtOpAttr OrtOpAttr;
typedef struct OrtCustomOp OrtCustomOp;

typedef enum ONNXTensorElementDataType {
    ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED = 0,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT = 1,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 = 2,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8 = 3,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16 = 4,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16 = 5,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 = 6,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 = 7,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING = 8,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL = 9,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 = 10,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE = 11,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32 = 12,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64 = 13,
    ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 = 16
} ONNXTensorElementDataType;

typedef enum OrtErrorCode {
    ORT_OK = 0,
    ORT_FAIL = 1,
    ORT_INVALID_ARGUMENT = 2,
    ORT_NO_SUCHFILE = 3,
    ORT_NO_MODEL = 4,
    ORT_ENGINE_ERROR = 5,
    ORT_RUNTIME_EXCEPTION = 6,
    ORT_INVALID_PROTOBUF = 7,
    ORT_MODEL_LOADED = 8,
    ORT_NOT_IMPLEMENTED = 9,
    ORT_INVALID_GRAPH = 10,
    ORT_EP_FAIL = 11
} OrtErrorCode;

typedef enum OrtCustomOpInputOutputCharacteristic {
    INPUT_OUTPUT_REQUIRED = 0,
    INPUT_OUTPUT_OPTIONAL = 1,
    INPUT_OUTPUT_VARIADIC = 2
} OrtCustomOpInputOutputCharacteristic;

typedef enum OrtMemType {
    OrtMemTypeCPUInput = -2,
    OrtMemTypeCPUOutput = -1,
    OrtMemTypeDefault = 0
} OrtMemType;

typedef enum OrtOpAttrType {
    ORT_OP_ATTR_UNDEFINED = 0,
    ORT_OP_ATTR_INT = 1,
    ORT_OP_ATTR_INTS = 2,
    ORT_OP_ATTR_FLOAT = 3,
    ORT_OP_ATTR_FLOATS = 4,
    ORT_OP_ATTR_STRING = 5,
    ORT_OP_ATTR_STRINGS = 6
} OrtOpAttrType;

_Static_assert(sizeof(ONNXTensorElementDataType) == 4, "ABI enums are 4 bytes");
_Static_assert(sizeof(OrtErrorCode) == 4, "ABI enums are 4 bytes");
_Static_assert(sizeof(OrtMemType) == 4, "ABI enums are 4 bytes");

typedef struct OrtApi OrtApi;

typedef struct OrtApiBase {
    const OrtApi *(*GetApi)(uint32_t version);
    const char *(*GetVersionString)(void);
} OrtApiBase;

/* Callback shape of KernelContext_ParallelFor (same as obx_task_fn). */
typedef void (*OrtParallelTask)(void *user_data, size_t index);

/* Padding for a run of unused slots [first, last]. */
#define ORT_UNUSED_SLOTS(first, last) void *unused_##first##_##last[(last) - (first) + 1]

struct OrtApi {
    OrtStatus *(*CreateStatus)(OrtErrorCode code, const char *message); /* 0 */
    OrtErrorCode (*GetErrorCode)(const OrtStatus *status);              /* 1 */
    const char *(*GetErrorMessage)(const OrtStatus *status);            /* 2 */
    ORT_UNUSED_SLOTS(3, 25);
    OrtStatus *(*CreateCustomOpDomain)(const char *domain, OrtCustomOpDomain **out); /* 26 */
    OrtStatus *(*CustomOpDomain_Add)(OrtCustomOpDomain *domain,
                                     const OrtCustomOp *op); /* 27 */
    OrtStatus *(*AddCustomOpDomain)(OrtSessionOptions *options,
                                    OrtCustomOpDomain *domain); /* 28 */
    ORT_UNUSED_SLOTS(29, 50);
    OrtStatus *(*GetTensorMutableData)(OrtValue *value, void **out); /* 51 */
    ORT_UNUSED_SLOTS(52, 56);
    OrtStatus *(*CreateTensorTypeAndShapeInfo)(OrtTensorTypeAndShapeInfo **out); /* 57 */
    OrtStatus *(*SetTensorElementType)(OrtTensorTypeAndShapeInfo *info,
                                       ONNXTensorElementDataType type); /* 58 */
    OrtStatus *(*SetDimensions)(OrtTensorTypeAndShapeInfo *info, const int64_t *dims,
                                size_t count); /* 59 */
    OrtStatus *(*GetTensorElementType)(const OrtTensorTypeAndShapeInfo *info,
                                       ONNXTensorElementDataType *out); /* 60 */
    OrtStatus *(*GetDimensionsCount)(const OrtTensorTypeAndShapeInfo *info, size_t *out); /* 61 */
    OrtStatus *(*GetDimensions)(const OrtTensorTypeAndShapeInfo *info, int64_t *dims,
                                size_t count); /* 62 */
    OrtStatus *(*GetSymbolicDimensions)(const OrtTensorTypeAndShapeInfo *info,
                                        const char **dim_params, size_t count); /* 63 */
    OrtStatus *(*GetTensorShapeElementCount)(const OrtTensorTypeAndShapeInfo *info,
                                             size_t *out); /* 64 */
    OrtStatus *(*GetTensorTypeAndShape)(const OrtValue *value,
                                        OrtTensorTypeAndShapeInfo **out); /* 65 */
    ORT_UNUSED_SLOTS(66, 84);
    OrtStatus *(*KernelInfoGetAttribute_float)(const OrtKernelInfo *info, const char *name,
                                               float *out); /* 85 */
    OrtStatus *(*KernelInfoGetAttribute_int64)(const OrtKernelInfo *info, const char *name,
                                               int64_t *out); /* 86 */
    OrtStatus *(*KernelInfoGetAttribute_string)(const OrtKernelInfo *info, const char *name,
                                                char *out, size_t *size); /* 87 */
    OrtStatus *(*KernelContext_GetInputCount)(const OrtKernelContext *ctx, size_t *out); /* 88 */
    OrtStatus *(*KernelContext_GetOutputCount)(const OrtKernelContext *ctx, size_t *out); /* 89 */
    OrtStatus *(*KernelContext_GetInput)(const OrtKernelContext *ctx, size_t index,
                                         const OrtValue **out); /* 90 */
    OrtStatus *(*KernelContext_GetOutput)(OrtKernelContext *ctx, size_t index,
                                          const int64_t *dims, size_t count,
                                          OrtValue **out); /* 91 */
    ORT_UNUSED_SLOTS(92, 92);
    void (*ReleaseStatus)(OrtStatus *status); /* 93 */
    ORT_UNUSED_SLOTS(94, 98);
    void (*ReleaseTensorTypeAndShapeInfo)(OrtTensorTypeAndShapeInfo *info); /* 99 */
    ORT_UNUSED_SLOTS(100, 100);
    void (*ReleaseCustomOpDomain)(OrtCustomOpDomain *domain); /* 101 */
    ORT_UNUSED_SLOTS(102, 162);
    OrtStatus *(*KernelInfoGetAttributeArray_int64)(const OrtKernelInfo *info, const char *name,
                                                    int64_t *out, size_t *size); /* 163 */
    ORT_UNUSED_SLOTS(164, 236);
    OrtStatus *(*HasSessionConfigEntry)(const OrtSessionOptions *options,
                                        const char *config_key, int *out); /* 237 */
    OrtStatus *(*GetSessionConfigEntry)(const OrtSessionOptions *options,
                                        const char *config_key, char *config_value,
                                        size_t *size); /* 238 */
    ORT_UNUSED_SLOTS(239, 243);
    /* Version 15. */
    OrtStatus *(*KernelInfo_GetNodeName)(const OrtKernelInfo *info, char *out,
                                         size_t *size); /* 244 */
    ORT_UNUSED_SLOTS(245, 248);
    OrtStatus *(*KernelInfoGetConstantInput_tensor)(const OrtKernelInfo *info, size_t index,
                                                    int *is_constant,
                                                    const OrtValue **out); /* 249 */
    ORT_UNUSED_SLOTS(250, 266);
    /* Version 17. */
    OrtStatus *(*ShapeInferContext_GetInputCount)(const OrtShapeInferContext *ctx,
                                                  size_t *out); /* 267 */
    OrtStatus *(*ShapeInferContext_GetInputTypeShape)(const OrtShapeInferContext *ctx,
                                                      size_t index,
                                                      OrtTensorTypeAndShapeInfo **out); /* 268 */
    OrtStatus *(*ShapeInferContext_GetAttribute)(const OrtShapeInferContext *ctx,
                                                 const char *name,
                                                 const OrtOpAttr **out); /* 269 */
    OrtStatus *(*ShapeInferContext_SetOutputTypeShape)(
        const OrtShapeInferContext *ctx, size_t index,
        const OrtTensorTypeAndShapeInfo *info); /* 270 */
    OrtStatus *(*SetSymbolicDimensions)(OrtTensorTypeAndShapeInfo *info, const char **dim_params,
                                        size_t count); /* 271 */
    OrtStatus *(*ReadOpAttr)(const OrtOpAttr *attr, OrtOpAttrType type, void *data, size_t len,
                             size_t *out); /* 272 */
    ORT_UNUSED_SLOTS(273, 273);
    OrtStatus *(*KernelContext_ParallelFor)(const OrtKernelContext *ctx, OrtParallelTask fn,
                                            size_t total, size_t num_batch,
                                            void *user_data); /* 274 */
};

#define ORT_PIN_SLOT(field, index)                                          \
    _Static_assert(offsetof(OrtApi, field) == (index) * sizeof(void *), \
                   "OrtApi::" #field " must be slot " #index)

ORT_PIN_SLOT(CreateStatus, 0);
ORT_PIN_SLOT(GetErrorCode, 1);
ORT_PIN_SLOT(GetErrorMessage, 2);
ORT_PIN_SLOT(CreateCustomOpDomain, 26);
ORT_PIN_SLOT(CustomOpDomain_Add, 27);
ORT_PIN_SLOT(AddCustomOpDomain, 28);
ORT_PIN_SLOT(GetTensorMutableData, 51);
ORT_PIN_SLOT(CreateTensorTypeAndShapeInfo, 57);
ORT_PIN_SLOT(SetTensorElementType, 58);
ORT_PIN_SLOT(SetDimensions, 59);
ORT_PIN_SLOT(GetTensorElementType, 60);
ORT_PIN_SLOT(GetDimensionsCount, 61);
ORT_PIN_SLOT(GetDimensions, 62);
ORT_PIN_SLOT(GetSymbolicDimensions, 63);
ORT_PIN_SLOT(GetTensorShapeElementCount, 64);
ORT_PIN_SLOT(GetTensorTypeAndShape, 65);
ORT_PIN_SLOT(KernelInfoGetAttribute_float, 85);
ORT_PIN_SLOT(KernelInfoGetAttribute_int64, 86);
ORT_PIN_SLOT(KernelInfoGetAttribute_string, 87);
ORT_PIN_SLOT(KernelContext_GetInputCount, 88);
ORT_PIN_SLOT(KernelContext_GetOutputCount, 89);
ORT_PIN_SLOT(KernelContext_GetInput, 90);
ORT_PIN_SLOT(KernelContext_GetOutput, 91);
ORT_PIN_SLOT(ReleaseStatus, 93);
ORT_PIN_SLOT(ReleaseTensorTypeAndShapeInfo, 99);
ORT_PIN_SLOT(ReleaseCustomOpDomain, 101);
ORT_PIN_SLOT(KernelInfoGetAttributeArray_int64, 163);
ORT_PIN_SLOT(HasSessionConfigEntry, 237);
ORT_PIN_SLOT(GetSessionConfigEntry, 238);
ORT_PIN_SLOT(KernelInfo_GetNodeName, 244);
ORT_PIN_SLOT(KernelInfoGetConstantInput_tensor, 249);
ORT_PIN_SLOT(ShapeInferContext_GetInputCount, 267);
ORT_PIN_SLOT(ShapeInferContext_GetInputTypeShape, 268);
ORT_PIN_SLOT(ShapeInferContext_GetAttribute, 269);
ORT_PIN_SLOT(ShapeInferContext_SetOutputTypeShape, 270);
ORT_PIN_SLOT(SetSymbolicDimensions, 271);
ORT_PIN_SLOT(ReadOpAttr, 272);
ORT_PIN_SLOT(KernelContext_ParallelFor, 274);

/* The callback table onnxruntime reads from a custom op; `version` says which
 * fields exist (the runtime never reads past what that version defines). */
struct OrtCustomOp {
    uint32_t version;
    /* Version 1. */
    void *(*CreateKernel)(const struct OrtCustomOp *op, const OrtApi *api,
                          const OrtKernelInfo *info);
    const char *(*GetName)(const struct OrtCustomOp *op);
    const char *(*GetExecutionProviderType)(const struct OrtCustomOp *op);
    ONNXTensorElementDataType (*GetInputType)(const struct OrtCustomOp *op, size_t index);
    size_t (*GetInputTypeCount)(const struct OrtCustomOp *op);
    ONNXTensorElementDataType (*GetOutputType)(const struct OrtCustomOp *op, size_t index);
    size_t (*GetOutputTypeCount)(const struct OrtCustomOp *op);
    void (*KernelCompute)(void *kernel, OrtKernelContext *ctx);
    void (*KernelDestroy)(void *kernel);
    /* Version 8. */
    OrtCustomOpInputOutputCharacteristic (*GetInputCharacteristic)(const struct OrtCustomOp *op,
                                                                   size_t index);
    OrtCustomOpInputOutputCharacteristic (*GetOutputCharacteristic)(const struct OrtCustomOp *op,
                                                                    size_t index);
    /* Version 13. */
    OrtMemType (*GetInputMemoryType)(const struct OrtCustomOp *op, size_t index);
    /* Version 14. */
    int (*GetVariadicInputMinArity)(const struct OrtCustomOp *op);
    int (*GetVariadicInputHomogeneity)(const struct OrtCustomOp *op);
    int (*GetVariadicOutputMinArity)(const struct OrtCustomOp *op);
    int (*GetVariadicOutputHomogeneity)(const struct OrtCustomOp *op);
    /* Version 16. */
    OrtStatus *(*CreateKernelV2)(const struct OrtCustomOp *op, const OrtApi *api,
                                 const OrtKernelInfo *info, void **kernel);
    OrtStatus *(*KernelComputeV2)(void *kernel, OrtKernelContext *ctx);
    /* Version 17. */
    OrtStatus *(*InferOutputShapeFn)(const struct OrtCustomOp *op, OrtShapeInferContext *ctx);
    int (*GetStartVersion)(const struct OrtCustomOp *op);
    int (*GetEndVersion)(const struct OrtCustomOp *op);
    /* Version 18. */
    size_t (*GetMayInplace)(int **input_index, int **output_index);
    void (*ReleaseMayInplace)(int *input_index, int *output_index);
    size_t (*GetAliasMap)(int **input_index, int **output_index);
    void (*ReleaseAliasMap)(int *input_index, int *output_index);
};

#define ORT_PIN_OP_FIELD(field, byte_offset)                      \
    _Static_assert(sizeof(void *) != 8 || offsetof(OrtCustomOp, field) == (byte_offset), \
                   "OrtCustomOp::" #field " must be at byte " #byte_offset)

ORT_PIN_OP_FIELD(CreateKernel, 8);
ORT_PIN_OP_FIELD(GetName, 16);
ORT_PIN_OP_FIELD(GetExecutionProviderType, 24);
ORT_PIN_OP_FIELD(GetInputType, 32);
ORT_PIN_OP_FIELD(GetInputTypeCount, 40);
ORT_PIN_OP_FIELD(GetOutputType, 48);
ORT_PIN_OP_FIELD(GetOutputTypeCount, 56);
ORT_PIN_OP_FIELD(KernelCompute, 64);
ORT_PIN_OP_FIELD(KernelDestroy, 72);
ORT_PIN_OP_FIELD(GetInputCharacteristic, 80);
ORT_PIN_OP_FIELD(GetOutputCharacteristic, 88);
ORT_PIN_OP_FIELD(GetInputMemoryType, 96);
ORT_PIN_OP_FIELD(GetVariadicInputMinArity, 104);
ORT_PIN_OP_FIELD(GetVariadicInputHomogeneity, 112);
ORT_PIN_OP_FIELD(GetVariadicOutputMinArity, 120);
ORT_PIN_OP_FIELD(GetVariadicOutputHomogeneity, 128);
ORT_PIN_OP_FIELD(CreateKernelV2, 136);
ORT_PIN_OP_FIELD(KernelComputeV2, 144);
ORT_PIN_OP_FIELD(InferOutputShapeFn, 152);
ORT_PIN_OP_FIELD(GetStartVersion, 160);
ORT_PIN_OP_FIELD(GetEndVersion, 168);
ORT_PIN_OP_FIELD(GetMayInplace, 176);
ORT_PIN_OP_FIELD(ReleaseMayInplace, 184);
ORT_PIN_OP_FIELD(GetAliasMap, 192);
ORT_PIN_OP_FIELD(ReleaseAliasMap, 200);
_Static_assert(sizeof(void *) != 8 || sizeof(OrtCustomOp) == 208, "OrtCustomOp is 208 bytes");

#endif
