/* The "zeroruns" stream decoder (layout: onnxbit/zero_runs.h). The Python
 * encoder is onnxbit/zero_runs.py, the numpy reference decoder
 * onnxbit/reference/zero_runs.py. */
#include "onnxbit/zero_runs.h"

#include "codec_streams_internal.h"
#include "obx_common.h"
#include "onnxbit/formats.h"

enum { ZERO_RUNS_VERSION = 1 };

OBX_API int obx_zero_runs_decode_base3(const uint8_t *stream, size_t len, size_t n, size_t k,
                               uint8_t *base3_out, char *err, size_t err_len)
{
    if (obx_stream_base3_zeros(n, k, base3_out, "zeroruns", err, err_len) != 0)
        return -1;
    const size_t row_bytes = obx_packed_row_bytes(OBX_FMT_BASE3, k);
    const uint64_t total = (uint64_t)n * k;
    if (len < 1)
        return obx_stream_fail(err, err_len, "zeroruns stream is empty (needs a version byte)");
    if (stream[0] != ZERO_RUNS_VERSION)
        return obx_stream_fail(err, err_len, "zeroruns stream has version %u; this library reads version %d",
                    stream[0], ZERO_RUNS_VERSION);
    size_t pos = 1;
    uint64_t nonzeros = 0;
    int status = obx_read_varint(stream, len, &pos, &nonzeros);
    if (status != 0)
        return obx_stream_fail(err, err_len, "zeroruns stream: nonzero count %s", status == -1 ? "is truncated"
                                                                                    : "is longer than 9 bytes");
    if (nonzeros > total)
        return obx_stream_fail(err, err_len, "zeroruns stream claims %llu nonzeros in %llu codes",
                    (unsigned long long)nonzeros, (unsigned long long)total);
    uint64_t position = 0; /* of the next code to place */
    for (uint64_t i = 0; i < nonzeros; i++) {
        uint64_t entry = 0;
        status = obx_read_varint(stream, len, &pos, &entry);
        if (status != 0)
            return obx_stream_fail(err, err_len, "zeroruns stream: entry %llu of %llu %s at byte %zu",
                        (unsigned long long)i, (unsigned long long)nonzeros,
                        status == -1 ? "is truncated" : "is longer than 9 bytes", pos);
        uint64_t zeros = entry >> 1;
        if (zeros >= total - position)
            return obx_stream_fail(err, err_len, "zeroruns stream: entry %llu runs past the %llu codes",
                        (unsigned long long)i, (unsigned long long)total);
        position += zeros;
        obx_base3_set_nonzero(base3_out, row_bytes, (size_t)(position / k), (size_t)(position % k),
                              (int)(entry & 1));
        position++;
    }
    if (pos != len)
        return obx_stream_fail(err, err_len, "zeroruns stream has %zu bytes after its last nonzero", len - pos);
    return 0;
}
