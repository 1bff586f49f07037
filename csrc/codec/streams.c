/* The stream formats by id (streams.h): names and one decoder entry point,
 * so the ops accept every stream format without knowing each one. */
#include "onnxbit/streams.h"

#include <stdio.h>
#include <string.h>

#include "obx_common.h"
#include "onnxbit/formats.h"
#include "onnxbit/rans.h"
#include "onnxbit/sparse.h"
#include "onnxbit/zero_runs.h"

static const char *const stream_names[OBX_STREAM_COUNT] = {
    [OBX_STREAM_RANS] = "rans",
    [OBX_STREAM_ZERO_RUNS] = "zeroruns",
    [OBX_STREAM_SPARSE] = "sparse",
};

OBX_API const char *obx_stream_name(int stream)
{
    return stream >= 0 && stream < OBX_STREAM_COUNT ? stream_names[stream] : NULL;
}

OBX_API int obx_stream_from_name(const char *name, size_t len)
{
    for (int stream = 0; stream < OBX_STREAM_COUNT; stream++) {
        if (strlen(stream_names[stream]) == len && memcmp(stream_names[stream], name, len) == 0)
            return stream;
    }
    return -1;
}

OBX_API int obx_stream_decode_base3(int stream, const uint8_t *data, size_t len, size_t n,
                                    size_t k, uint8_t *base3_out, char *err, size_t err_len)
{
    switch (stream) {
    case OBX_STREAM_RANS:
        return obx_rans_decode_base3(data, len, n, obx_packed_row_bytes(OBX_FMT_BASE3, k),
                                     base3_out, err, err_len);
    case OBX_STREAM_ZERO_RUNS:
        return obx_zero_runs_decode_base3(data, len, n, k, base3_out, err, err_len);
    case OBX_STREAM_SPARSE:
        return obx_sparse_decode_base3(data, len, n, k, base3_out, err, err_len);
    default:
        if (err && err_len)
            snprintf(err, err_len, "unknown stream format id %d", stream);
        return -1;
    }
}
