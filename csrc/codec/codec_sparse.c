/* The "sparse" stream decoder (layout: onnxbit/sparse.h). The Python encoder
 * is onnxbit/sparse.py, the numpy reference decoder onnxbit/reference/sparse.py. */
#include "onnxbit/sparse.h"

#include "codec_streams_internal.h"
#include "obx_common.h"
#include "onnxbit/formats.h"

enum { SPARSE_VERSION = 1 };

static const char *varint_problem(int status)
{
    return status == -1 ? "is truncated" : "is longer than 9 bytes";
}

OBX_API int obx_sparse_decode_base3(const uint8_t *stream, size_t len, size_t n, size_t k,
                                    uint8_t *base3_out, char *err, size_t err_len)
{
    if (obx_stream_base3_zeros(n, k, base3_out, "sparse", err, err_len) != 0)
        return -1;
    const size_t row_bytes = obx_packed_row_bytes(OBX_FMT_BASE3, k);
    const uint64_t total = (uint64_t)n * k;
    if (len < 1)
        return obx_stream_fail(err, err_len, "sparse stream is empty (needs a version byte)");
    if (stream[0] != SPARSE_VERSION)
        return obx_stream_fail(err, err_len, "sparse stream has version %u; this library reads version %d",
                               stream[0], SPARSE_VERSION);
    size_t pos = 1;
    uint64_t nonzeros = 0;
    int status = obx_read_varint(stream, len, &pos, &nonzeros);
    if (status != 0)
        return obx_stream_fail(err, err_len, "sparse stream: nonzero count %s", varint_problem(status));
    if (nonzeros > total)
        return obx_stream_fail(err, err_len, "sparse stream claims %llu nonzeros in %llu codes",
                               (unsigned long long)nonzeros, (unsigned long long)total);
    const size_t sign_bytes = (size_t)((nonzeros + 7) / 8);
    if (sign_bytes > len - pos)
        return obx_stream_fail(err, err_len, "sparse stream is truncated in its %zu sign bytes", sign_bytes);
    const uint8_t *signs = stream + pos;
    if (nonzeros % 8 && (signs[sign_bytes - 1] >> (nonzeros % 8)) != 0)
        return obx_stream_fail(err, err_len, "sparse stream has sign bits set past its %llu nonzeros",
                               (unsigned long long)nonzeros);
    pos += sign_bytes;
    uint64_t placed = 0;
    for (size_t row = 0; row < n; row++) {
        uint64_t count = 0;
        status = obx_read_varint(stream, len, &pos, &count);
        if (status != 0)
            return obx_stream_fail(err, err_len, "sparse stream: the count of row %zu %s", row,
                                   varint_problem(status));
        if (count > k || count > nonzeros - placed)
            return obx_stream_fail(err, err_len, "sparse stream: row %zu claims %llu nonzeros (K=%zu, "
                                   "%llu left of %llu)", row, (unsigned long long)count, k,
                                   (unsigned long long)(nonzeros - placed), (unsigned long long)nonzeros);
        uint64_t col = 0; /* the next column a nonzero may take */
        for (uint64_t i = 0; i < count; i++, placed++) {
            uint64_t gap = 0;
            status = obx_read_varint(stream, len, &pos, &gap);
            if (status != 0)
                return obx_stream_fail(err, err_len, "sparse stream: position %llu of row %zu %s",
                                       (unsigned long long)i, row, varint_problem(status));
            if (gap >= k - col)
                return obx_stream_fail(err, err_len, "sparse stream: position %llu of row %zu is past K=%zu",
                                       (unsigned long long)i, row, k);
            col += gap;
            obx_base3_set_nonzero(base3_out, row_bytes, row, (size_t)col, (signs[placed / 8] >> (placed % 8)) & 1);
            col++;
        }
    }
    if (placed != nonzeros)
        return obx_stream_fail(err, err_len, "sparse stream: its rows hold %llu nonzeros, its header says %llu",
                               (unsigned long long)placed, (unsigned long long)nonzeros);
    if (pos != len)
        return obx_stream_fail(err, err_len, "sparse stream has %zu bytes after its last row", len - pos);
    return 0;
}
