/* What the stream decoders (zero_runs.h, sparse.h) share: LEB128 varints,
 * error messages, and base3 rows prefilled with zeros that a decoder then
 * sets nonzero codes in. */
#ifndef ONNXBIT_CODEC_STREAMS_INTERNAL_H
#define ONNXBIT_CODEC_STREAMS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

enum { OBX_VARINT_MAX_BYTES = 9, OBX_BASE3_CODES_PER_BYTE = 5 };
/* 3^j: digit j's weight in a base3 byte. */
extern const uint8_t obx_base3_digit_weight[OBX_BASE3_CODES_PER_BYTE];

/* Formats err, returns -1. */
int obx_stream_fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* One LEB128 varint at stream[*pos], advancing *pos: 0, -1 when it runs past
 * len, -2 when it is longer than OBX_VARINT_MAX_BYTES (9 bytes hold 63 bits,
 * so no value read overflows). */
int obx_read_varint(const uint8_t *stream, size_t len, size_t *pos, uint64_t *value);
/* n base3 rows of k zero codes (digit 1; a row's last byte padded with digit
 * 0, base3's rule); -1 with a message naming `format` for an empty or
 * overflowing shape. */
int obx_stream_base3_zeros(size_t n, size_t k, uint8_t *base3_out, const char *format, char *err,
                           size_t err_len);
/* Sets the code at (row, col) of zero-filled base3 rows to -1 or +1. */
static inline void obx_base3_set_nonzero(uint8_t *base3, size_t row_bytes, size_t row, size_t col,
                                         int negative)
{
    uint8_t *byte = base3 + row * row_bytes + col / OBX_BASE3_CODES_PER_BYTE;
    uint8_t weight = obx_base3_digit_weight[col % OBX_BASE3_CODES_PER_BYTE];
    /* digit 1 (code 0) -> 0 (code -1) or 2 (code +1) */
    *byte = (uint8_t)(negative ? *byte - weight : *byte + weight);
}

#endif
