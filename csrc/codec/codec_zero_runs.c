/* The "zeroruns" stream decoder (layout: onnxbit/zero_runs.h). The Python
 * encoder is onnxbit/zero_runs.py, the numpy reference decoder
 * onnxbit/reference/zero_runs.py. */
#include "onnxbit/zero_runs.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "obx_common.h"
#include "onnxbit/formats.h"

enum { ZERO_RUNS_VERSION = 1, VARINT_MAX_BYTES = 9, BASE3_CODES_PER_BYTE = 5 };

static int fail(char *err, size_t err_len, const char *fmt, ...)
{
    if (err && err_len) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(err, err_len, fmt, args);
        va_end(args);
    }
    return -1;
}

/* One LEB128 varint at *pos; 0 on success. 9 bytes hold 63 bits, so no
 * value read here can overflow uint64_t. */
static int read_varint(const uint8_t *stream, size_t len, size_t *pos, uint64_t *value)
{
    uint64_t result = 0;
    for (int i = 0; i < VARINT_MAX_BYTES; i++) {
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

static const uint8_t digit_weight[BASE3_CODES_PER_BYTE] = {1, 3, 9, 27, 81};

OBX_API int obx_zero_runs_decode_base3(const uint8_t *stream, size_t len, size_t n, size_t k,
                               uint8_t *base3_out, char *err, size_t err_len)
{
    if (k == 0 || n == 0)
        return fail(err, err_len, "zeroruns stream: N=%zu and K=%zu must be > 0", n, k);
    const size_t row_bytes = obx_packed_row_bytes(OBX_FMT_BASE3, k);
    const uint64_t total = (uint64_t)n * k;
    if (total / n != k)
        return fail(err, err_len, "zeroruns stream: N=%zu x K=%zu codes overflow", n, k);
    /* All zeros first: digit 1 for each code, digit 0 for the padding of a
     * row's last byte (base3's rule); each nonzero then moves one digit. */
    const size_t tail = k % BASE3_CODES_PER_BYTE;
    uint8_t last_byte = 121; /* 1 + 3 + 9 + 27 + 81 */
    if (tail) {
        last_byte = 0;
        for (size_t j = 0; j < tail; j++)
            last_byte += digit_weight[j];
    }
    for (size_t r = 0; r < n; r++) {
        memset(base3_out + r * row_bytes, 121, row_bytes);
        base3_out[r * row_bytes + row_bytes - 1] = last_byte;
    }

    if (len < 1)
        return fail(err, err_len, "zeroruns stream is empty (needs a version byte)");
    if (stream[0] != ZERO_RUNS_VERSION)
        return fail(err, err_len, "zeroruns stream has version %u; this library reads version %d",
                    stream[0], ZERO_RUNS_VERSION);
    size_t pos = 1;
    uint64_t nonzeros = 0;
    int status = read_varint(stream, len, &pos, &nonzeros);
    if (status != 0)
        return fail(err, err_len, "zeroruns stream: nonzero count %s", status == -1 ? "is truncated"
                                                                                    : "is longer than 9 bytes");
    if (nonzeros > total)
        return fail(err, err_len, "zeroruns stream claims %llu nonzeros in %llu codes",
                    (unsigned long long)nonzeros, (unsigned long long)total);
    uint64_t position = 0; /* of the next code to place */
    for (uint64_t i = 0; i < nonzeros; i++) {
        uint64_t entry = 0;
        status = read_varint(stream, len, &pos, &entry);
        if (status != 0)
            return fail(err, err_len, "zeroruns stream: entry %llu of %llu %s at byte %zu",
                        (unsigned long long)i, (unsigned long long)nonzeros,
                        status == -1 ? "is truncated" : "is longer than 9 bytes", pos);
        uint64_t zeros = entry >> 1;
        if (zeros >= total - position)
            return fail(err, err_len, "zeroruns stream: entry %llu runs past the %llu codes",
                        (unsigned long long)i, (unsigned long long)total);
        position += zeros;
        size_t row = (size_t)(position / k), col = (size_t)(position % k);
        uint8_t *byte = base3_out + row * row_bytes + col / BASE3_CODES_PER_BYTE;
        uint8_t weight = digit_weight[col % BASE3_CODES_PER_BYTE];
        /* digit 1 (code 0) -> 0 (code -1) or 2 (code +1) */
        *byte = (uint8_t)((entry & 1) ? *byte - weight : *byte + weight);
        position++;
    }
    if (pos != len)
        return fail(err, err_len, "zeroruns stream has %zu bytes after its last nonzero", len - pos);
    return 0;
}
