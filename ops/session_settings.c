/* Reading onnxbit's session config entries (session_settings.h). */
#include "session_settings.h"

#include <string.h>

#include "op_status.h"

/* A "0"/"1" entry; absent leaves *out as it is. */
static OrtStatus *read_flag(const OrtApi *api, const OrtSessionOptions *options, const char *key,
                            int *out)
{
    int present = 0;
    OrtStatus *status = api->HasSessionConfigEntry(options, key, &present);
    if (status)
        return obx_status_wrap(api, status, "onnxbit: reading session config");
    if (!present)
        return NULL;
    char value[16] = "";
    size_t size = sizeof value;
    status = api->GetSessionConfigEntry(options, key, value, &size);
    if (status) { /* longer than any valid value */
        obx_status_discard(api, status);
        return obx_status_fmt(api, ORT_INVALID_ARGUMENT,
                              "onnxbit: session config entry %s must be \"0\" or \"1\"", key);
    }
    if (strcmp(value, "0") == 0 || strcmp(value, "1") == 0) {
        *out = value[0] == '1';
        return NULL;
    }
    return obx_status_fmt(api, ORT_INVALID_ARGUMENT,
                          "onnxbit: session config entry %s='%s' must be \"0\" or \"1\"", key,
                          value);
}

OrtStatus *obx_read_session_settings(const OrtApi *api, uint32_t api_version,
                                     const OrtSessionOptions *options, ObxSessionSettings *out)
{
    *out = (ObxSessionSettings){.verify_checksums = 1};
    if (api_version < ORT_API_WITH_SESSION_CONFIG || !options)
        return NULL; /* older runtimes: the defaults */
    return read_flag(api, options, OBX_CONFIG_VERIFY_CHECKSUMS, &out->verify_checksums);
}
