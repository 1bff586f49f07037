/* CRC32C kernels behind obx_crc32c (checksum.h), one per ISA; the platform
 * table (isa/platform.h) picks one. Each takes and returns the raw register
 * (already inverted), so chaining needs no extra inversions. */
#ifndef ONNXBIT_CRC32C_INTERNAL_H
#define ONNXBIT_CRC32C_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

typedef uint32_t (*obx_crc32c_fn)(uint32_t state, const uint8_t *data, size_t len);

/* Table-driven, eight bytes a step (slicing-by-8); the reference, and what
 * NEON builds use. */
uint32_t obx_crc32c_scalar(uint32_t state, const uint8_t *data, size_t len);
#if defined(ONNXBIT_X86)
/* SSE4.2 crc32 instruction (every AVX2 CPU has it). */
uint32_t obx_crc32c_avx2(uint32_t state, const uint8_t *data, size_t len);
#endif

#endif
