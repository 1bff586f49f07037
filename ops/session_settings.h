/* Session config entries the onnxbit ops read, from the session options the
 * library is registered on (set them before register_custom_ops_library;
 * onnxbit.InferenceSession does).
 *
 *   onnxbit.verify_checksums  "1" (default) | "0": recompute the CRC32C of
 *       constant B and scales at kernel creation and fail on a mismatch with
 *       the node's `crc32c` attribute. The cost is one pass over the packed
 *       bytes at well over 1 GB/s, a few percent of prepacking them. */
#ifndef ONNXBIT_SESSION_SETTINGS_H
#define ONNXBIT_SESSION_SETTINGS_H

#include <stdint.h>

#include "op_kernel.h"
#include "ort_abi.h"

#define OBX_CONFIG_VERIFY_CHECKSUMS "onnxbit.verify_checksums"

/* The defaults, overridden by entries present in options; an error status for
 * an entry with a value it cannot mean. */
OrtStatus *obx_read_session_settings(const OrtApi *api, uint32_t api_version,
                                     const OrtSessionOptions *options, ObxSessionSettings *out);

#endif
