/* Table-driven base3 bulk helpers used by the SIMD paths. One table load and
 * one overlapping 8-byte store per packed byte is faster than digit
 * arithmetic on CPUs with slow vector multiplies, and exact by construction. */
#include <string.h>

#include "codec_internal.h"

/* Five digits (minus one) of every byte value; bytes >= 243 decode to zeros
 * (callers reject them before trusting the output). Padded to 8 bytes. */
#define OBX_B3(b)                                                                      \
    {(int8_t)((b) < 243 ? (b) % 3 - 1 : 0), (int8_t)((b) < 243 ? (b) / 3 % 3 - 1 : 0),     \
     (int8_t)((b) < 243 ? (b) / 9 % 3 - 1 : 0), (int8_t)((b) < 243 ? (b) / 27 % 3 - 1 : 0), \
     (int8_t)((b) < 243 ? (b) / 81 % 3 - 1 : 0), 0, 0, 0}
#define OBX_B3_4(b) OBX_B3(b), OBX_B3((b) + 1), OBX_B3((b) + 2), OBX_B3((b) + 3)
#define OBX_B3_16(b) OBX_B3_4(b), OBX_B3_4((b) + 4), OBX_B3_4((b) + 8), OBX_B3_4((b) + 12)
#define OBX_B3_64(b) OBX_B3_16(b), OBX_B3_16((b) + 16), OBX_B3_16((b) + 32), OBX_B3_16((b) + 48)

static const int8_t base3_digits[256][8] __attribute__((aligned(64))) = {
    OBX_B3_64(0), OBX_B3_64(64), OBX_B3_64(128), OBX_B3_64(192)};

void obx_codec_base3_decode_lut(const uint8_t *in, size_t n_bytes, int8_t *out) {
    if (n_bytes == 0) return;
    size_t j = 0;
    /* each 8-byte store spills 3 bytes that the next store overwrites */
    for (; j + 1 < n_bytes; j++) memcpy(out + 5 * j, base3_digits[in[j]], 8);
    memcpy(out + 5 * j, base3_digits[in[j]], 5);
}

void obx_codec_base3_pack_codes(const uint8_t *codes, size_t n_bytes, uint8_t *out) {
    size_t j = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* Multiplying the five code bytes c0..c4 (as a little-endian word) by
     * 81 + 27*2^8 + 9*2^16 + 3*2^24 + 2^32 puts c0 + 3c1 + 9c2 + 27c3 + 81c4 in
     * byte 4 of the product: every partial byte sum is at most 242, so no carry
     * ever crosses a byte, and bytes above c4 only reach higher bytes. */
    const uint64_t weights = 81ull | 27ull << 8 | 9ull << 16 | 3ull << 24 | 1ull << 32;
    for (; j + 2 <= n_bytes; j++) { /* reading 8 bytes needs 3 beyond this group */
        uint64_t word;
        memcpy(&word, codes + 5 * j, 8);
        out[j] = (uint8_t)((word * weights) >> 32);
    }
#endif
    for (; j < n_bytes; j++) {
        const uint8_t *c = codes + 5 * j;
        out[j] = (uint8_t)(c[0] + 3 * c[1] + 9 * c[2] + 27 * c[3] + 81 * c[4]);
    }
}
