/* Generic custom-op helpers for reading what a node is given: errors that
 * name the node, tensor views with dtype and shape checks, attributes, and
 * constant inputs. Every op file uses these; none of them knows an op. */
#ifndef ONNXBIT_OP_INPUTS_H
#define ONNXBIT_OP_INPUTS_H

#include <stddef.h>
#include <stdint.h>

#include "op_kernel.h"
#include "ort_abi.h"

/* Highest tensor rank an input may have. */
enum { OBX_OP_MAX_RANK = 32 };
/* Longest message text a node error carries (before the node prefix). */
enum { OBX_OP_ERR_LEN = 512 };

/* "<Op> node '<name>': <problem>" */
OrtStatus *obx_node_error(const ObxOpKernel *kernel, OrtErrorCode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Releases cause; "<Op> node '<name>': <what>: <cause's message>". */
OrtStatus *obx_node_wrap(const ObxOpKernel *kernel, OrtStatus *cause, const char *what);

/* A tensor input as an op reads it. */
typedef struct ObxTensorView {
    ONNXTensorElementDataType type;
    size_t rank;
    int64_t dims[OBX_OP_MAX_RANK];
    size_t count;
    const void *data;
} ObxTensorView;

/* "float32", "uint8", ... */
const char *obx_dtype_name(ONNXTensorElementDataType type);
/* "[2, 3, 64]" into buf. */
const char *obx_shape_text(const ObxTensorView *view, char *buf, size_t len);

OrtStatus *obx_read_tensor(const ObxOpKernel *kernel, const OrtValue *value,
                           const char *input_name, ObxTensorView *view);
OrtStatus *obx_require_dtype(const ObxOpKernel *kernel, const ObxTensorView *view,
                             const char *input_name, ONNXTensorElementDataType expected);

/* Input `index` of a run, or NULL when the node has fewer inputs. */
OrtStatus *obx_get_input(const ObxOpKernel *kernel, OrtKernelContext *ctx, size_t input_count,
                         size_t index, const OrtValue **out);
/* The first `count` inputs of a run (absent ones NULL) and how many the node has. */
OrtStatus *obx_get_inputs(const ObxOpKernel *kernel, OrtKernelContext *ctx, size_t count,
                          const OrtValue **values, size_t *input_count);
/* A float32 input as a view (the error names `input_name`). */
OrtStatus *obx_read_float_tensor(const ObxOpKernel *kernel, const OrtValue *value,
                                 const char *input_name, ObxTensorView *view);
/* An optional bias: *bias stays NULL without one, else it must be float32
 * [length]; `axis` names that length in the message ("M", "N"). */
OrtStatus *obx_read_bias(const ObxOpKernel *kernel, const OrtValue *value, size_t length,
                         const char *axis, const float **bias);
/* Output 0 of a run with these dimensions, and its data. */
OrtStatus *obx_allocate_output(const ObxOpKernel *kernel, OrtKernelContext *ctx, const int64_t *dims,
                               size_t rank, void **data);
/* Output 0 of a matmul-like op: A's shape with its last dimension replaced by n. */
OrtStatus *obx_allocate_matmul_output(const ObxOpKernel *kernel, OrtKernelContext *ctx, const ObxTensorView *a,
                                      size_t n, void **data);

/* An int attribute; `required` ones must be present, others default to fallback. */
OrtStatus *obx_read_int_attribute(const ObxOpKernel *kernel, const OrtKernelInfo *info,
                                  const char *name, int required, int64_t fallback, int64_t *out);
/* A float attribute; `required` ones must be present, others default to fallback. */
OrtStatus *obx_read_float_attribute(const ObxOpKernel *kernel, const OrtKernelInfo *info,
                                    const char *name, int required, float fallback, float *out);
/* act_scale, the static activation scale of act_quant = 2 (TernaryMatMul and
 * TernaryConv): required, finite and > 0 there; refused with other modes (a
 * scale that would silently be ignored is a mistake). 0 when absent. */
OrtStatus *obx_read_act_scale_attribute(const ObxOpKernel *kernel, const OrtKernelInfo *info,
                                        int act_quant, float *act_scale);
/* An ints attribute of at most `capacity` values; when absent, *count = 0
 * (the caller applies its defaults). */
OrtStatus *obx_read_ints_attribute(const ObxOpKernel *kernel, const OrtKernelInfo *info,
                                   const char *name, int64_t *out, size_t capacity, size_t *count);
/* Whether the node has an attribute called `name` of any type. */
int obx_has_attribute(const ObxOpKernel *kernel, const OrtKernelInfo *info, const char *name);
/* A required string attribute: its bytes into out (out_len at most, NUL
 * added) and its exact length, which counts any NUL bytes inside it.
 * `expected` lists the accepted values for messages. */
OrtStatus *obx_read_string_attribute(const ObxOpKernel *kernel, const OrtKernelInfo *info,
                                     const char *name, const char *expected, char *out,
                                     size_t out_len, size_t *length);

/* The required `format` attribute: a formats.h row format name exactly (no
 * hidden NUL; *stream = -1), or a streams.h stream name (*stream its id,
 * *fmt OBX_FMT_BASE3, the rows it decodes to). An error names the node and
 * the accepted names otherwise. */
OrtStatus *obx_read_format_attribute(const ObxOpKernel *kernel, const OrtKernelInfo *info, int *fmt,
                                     int *stream);

/* The optional `crc32c` attribute (0 .. 2^32 - 1) into *crc32c, or
 * OBX_NO_CHECKSUM when the node has none. */
#define OBX_NO_CHECKSUM INT64_MIN
OrtStatus *obx_read_crc32c_attribute(const ObxOpKernel *kernel, const OrtKernelInfo *info,
                                     int64_t *crc32c);
/* B's bytes followed by the scales' bytes must hash to crc32c (unless it is
 * OBX_NO_CHECKSUM or the session does not verify checksums): a flipped byte
 * anywhere in them fails here even where it would still decode to valid
 * codes and scales. B is checked as stored, before any stream is decoded. */
OrtStatus *obx_check_weights_crc32c(const ObxOpKernel *kernel, int64_t crc32c,
                                    const ObxTensorView *b, const ObxTensorView *scales);

/* Input `index` when the runtime can say it is a constant initializer (API
 * 15+), else NULL. */
const OrtValue *obx_constant_input(const ObxOpKernel *kernel, const OrtKernelInfo *info,
                                   size_t index);

#endif
