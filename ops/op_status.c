/* OrtStatus helpers (see op_status.h). */
#include "op_status.h"

#include <stdio.h>

enum { OBX_STATUS_MESSAGE_MAX = 1024 };

OrtStatus *obx_status_vfmt(const OrtApi *api, OrtErrorCode code, const char *fmt, va_list args)
{
    char message[OBX_STATUS_MESSAGE_MAX];
    vsnprintf(message, sizeof message, fmt, args);
    return api->CreateStatus(code, message);
}

OrtStatus *obx_status_fmt(const OrtApi *api, OrtErrorCode code, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    OrtStatus *status = obx_status_vfmt(api, code, fmt, args);
    va_end(args);
    return status;
}

OrtStatus *obx_status_wrap(const OrtApi *api, OrtStatus *cause, const char *prefix)
{
    OrtErrorCode code = api->GetErrorCode(cause);
    OrtStatus *status = obx_status_fmt(api, code == ORT_OK ? ORT_FAIL : code, "%s: %s", prefix,
                                       api->GetErrorMessage(cause));
    api->ReleaseStatus(cause);
    return status;
}

void obx_status_discard(const OrtApi *api, OrtStatus *status)
{
    if (status)
        api->ReleaseStatus(status);
}
