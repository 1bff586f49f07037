/* Helpers of the stream decoders (codec_streams_internal.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "codec_streams_internal.h"
#include "onnxbit/formats.h"

const uint8_t obx_base3_digit_weight[OBX_BASE3_CODES_PER_BYTE] = {1, 3, 9, 27, 81};

int obx_stream_fail(char *err, size_t err_len, const char *fmt, ...)
{
    if (err && err_len) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(err, err_len, fmt, args);
        va_end(args);
    }
    return -1;
}

int obx_read_varint(const uint8_t *stream, size_t len, size_t *pos, uint64_t *value)
{
    uint64_t result = 0;
    for (int i = 0; i < OBX_VARINT_MAX_BYTES; i++) {
        if (*pos >= len)
            return -1;
        uint8_t byte = stream[(*pos)++];
        result |= (uint64_t)(byte & 0x7f) << (7 * i);
        if (!(byte & 0x80)) {
            *value = result;
            return 0;
        }
    }
    return -2;
}

int obx_stream_base3_zeros(size_t n, size_t k, uint8_t *base3_out, const char *format, char *err,
                           size_t err_len)
{
    if (k == 0 || n == 0)
        return obx_stream_fail(err, err_len, "%s stream: N=%zu and K=%zu must be > 0", format, n, k);
    if ((uint64_t)n * k / n != k)
        return obx_stream_fail(err, err_len, "%s stream: N=%zu x K=%zu codes overflow", format, n, k);
    const size_t row_bytes = obx_packed_row_bytes(OBX_FMT_BASE3, k);
    const size_t tail = k % OBX_BASE3_CODES_PER_BYTE;
    uint8_t last_byte = 121; /* 1 + 3 + 9 + 27 + 81: five zero codes */
    if (tail) {
        last_byte = 0;
        for (size_t j = 0; j < tail; j++)
            last_byte += obx_base3_digit_weight[j];
    }
    for (size_t r = 0; r < n; r++) {
        memset(base3_out + r * row_bytes, 121, row_bytes);
        base3_out[r * row_bytes + row_bytes - 1] = last_byte;
    }
    return 0;
}
