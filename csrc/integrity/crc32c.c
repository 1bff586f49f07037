/* obx_crc32c (checksum.h): the kernel of the platform table in use, with the
 * standard pre- and post-inversion around it. */
#include "onnxbit/checksum.h"

#include "isa/platform.h"
#include "obx_common.h"

OBX_API uint32_t obx_crc32c(uint32_t crc, const void *data, size_t len)
{
    if (len == 0)
        return crc;
    return ~obx_platform()->crc32c(~crc, (const uint8_t *)data, len);
}
