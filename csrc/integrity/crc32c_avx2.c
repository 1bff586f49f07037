/* CRC32C with the SSE4.2 crc32 instruction (implied by -mavx2; every AVX2 CPU
 * has it): eight bytes an instruction, bit-exact with the table version. */
#include <nmmintrin.h>
#include <string.h>

#include "integrity/crc32c_internal.h"

uint32_t obx_crc32c_avx2(uint32_t state, const uint8_t *data, size_t len)
{
    uint64_t wide = state;
    while (len >= 8) {
        uint64_t word;
        memcpy(&word, data, sizeof word); /* x86 is little-endian, as the CRC reads bytes */
        wide = _mm_crc32_u64(wide, word);
        data += 8;
        len -= 8;
    }
    uint32_t narrow = (uint32_t)wide;
    while (len--)
        narrow = _mm_crc32_u8(narrow, *data++);
    return narrow;
}
