/* CRC32C, portable: slicing-by-8 over tables built once from the polynomial. */
#include <pthread.h>

#include "integrity/crc32c_internal.h"

#define CRC32C_POLY 0x82F63B78u /* Castagnoli, reflected */

static uint32_t tables[8][256];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void build_tables(void)
{
    for (uint32_t byte = 0; byte < 256; byte++) {
        uint32_t crc = byte;
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (CRC32C_POLY & (0u - (crc & 1u)));
        tables[0][byte] = crc;
    }
    for (int slice = 1; slice < 8; slice++)
        for (int byte = 0; byte < 256; byte++) {
            uint32_t prev = tables[slice - 1][byte];
            tables[slice][byte] = (prev >> 8) ^ tables[0][prev & 0xFF];
        }
}

uint32_t obx_crc32c_scalar(uint32_t state, const uint8_t *data, size_t len)
{
    pthread_once(&tables_once, build_tables);
    while (len >= 8) {
        /* Bytes assembled explicitly: the same result on any endianness. */
        uint32_t low = state ^ ((uint32_t)data[0] | (uint32_t)data[1] << 8 |
                                (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24);
        state = tables[7][low & 0xFF] ^ tables[6][(low >> 8) & 0xFF] ^
                tables[5][(low >> 16) & 0xFF] ^ tables[4][low >> 24] ^ tables[3][data[4]] ^
                tables[2][data[5]] ^ tables[1][data[6]] ^ tables[0][data[7]];
        data += 8;
        len -= 8;
    }
    while (len--)
        state = (state >> 8) ^ tables[0][(state ^ *data++) & 0xFF];
    return state;
}
