/* Memory for weights repacked at session creation, which the kernels stream
 * once per call: zeroed, 64-byte aligned, and (on Linux with transparent
 * huge pages in "madvise" or "always" mode) on 2 MiB pages.
 *
 * Why: with 4 KiB pages a decode step's weight stream misses the TLB on
 * every page and the hardware prefetchers stop at every page boundary. On
 * 2 MiB pages a chain of the 0.7B BitNet model's 168 TernaryMatMul layers
 * at M = 1, weights cold, read 12-20% faster at one thread and 8-15% at
 * two (csrc/memory/weight_memory.c has the numbers).
 *
 * Allocations of 2 MiB or more get a mapping of their own; smaller ones
 * share 32 MiB chunks, each returned to the system when its last
 * allocation is freed (pages are backed as they are written, so a model
 * with little weight memory costs one 2 MiB page, not the chunk).
 * Thread-safe.
 *
 * This header is parsed by cffi: keep declarations free of macros. */
#ifndef ONNXBIT_WEIGHT_MEMORY_H
#define ONNXBIT_WEIGHT_MEMORY_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* `bytes` zeroed bytes (at least one), 64-byte aligned; NULL when out of
 * memory. Release with obx_weight_free. */
void *obx_weight_alloc(size_t bytes);

/* Releases what obx_weight_alloc returned; NULL is ignored. */
void obx_weight_free(void *p);

/* Bytes mapped for weights now (chunks and own mappings); 0 in builds that
 * use the C allocator instead (AddressSanitizer builds, so that it checks
 * weight buffers too). */
size_t obx_weight_memory_mapped(void);

#ifdef __cplusplus
}
#endif
#endif
