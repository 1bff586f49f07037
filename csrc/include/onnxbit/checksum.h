/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78, initial and final
 * value 0xFFFFFFFF: the checksum of iSCSI, ext4 and RFC 3720), the checksum a
 * TernaryMatMul node carries for its packed weights (attribute `crc32c`:
 * B's bytes followed by the scales' bytes, as stored).
 *
 * Test vectors (RFC 3720 B.4): "123456789" -> 0xE3069283; 32 zero bytes ->
 * 0x8A9136AA; 32 bytes 0xFF -> 0x62A8AB43; bytes 0..31 -> 0x46DD794E.
 *
 * This header is parsed by cffi: keep declarations free of macros. */
#ifndef ONNXBIT_CHECKSUM_H
#define ONNXBIT_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The CRC32C of the bytes checksummed so far (`crc`, 0 to start) followed
 * by data[0 .. len): chaining calls equals one call over the concatenation. */
uint32_t obx_crc32c(uint32_t crc, const void *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif
