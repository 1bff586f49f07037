/* OrtStatus helpers for the custom-op layer: printf-style error statuses, and
 * folding a status onnxruntime returned into one of ours. */
#ifndef ONNXBIT_OP_STATUS_H
#define ONNXBIT_OP_STATUS_H

#include <stdarg.h>

#include "ort_abi.h"

/* A new status with a formatted message (truncated at 1 KiB). */
OrtStatus *obx_status_fmt(const OrtApi *api, OrtErrorCode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
OrtStatus *obx_status_vfmt(const OrtApi *api, OrtErrorCode code, const char *fmt, va_list args)
    __attribute__((format(printf, 3, 0)));

/* Releases `cause` (a non-NULL status from onnxruntime) and returns a new one
 * reading "<prefix>: <cause's message>", keeping cause's error code. */
OrtStatus *obx_status_wrap(const OrtApi *api, OrtStatus *cause, const char *prefix);

/* Releases a status whose failure the caller handles by other means. */
void obx_status_discard(const OrtApi *api, OrtStatus *status);

#endif
