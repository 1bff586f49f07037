/* Per-thread reusable scratch memory for the compute paths. Freshly mapped
 * pages cost a page fault and a kernel zeroing each (14% of an M = 128 float
 * call measured with perf when every call allocated its buffers anew), so
 * each thread keeps its last few blocks for the next call. */
#ifndef ONNXBIT_TMM_SCRATCH_H
#define ONNXBIT_TMM_SCRATCH_H

#include <stddef.h>

/* At least `bytes` bytes, TMM_ALIGN aligned, contents unspecified; NULL when
 * out of memory. Give it back with tmm_scratch_put on the same thread. */
void *tmm_scratch_get(size_t bytes);
void tmm_scratch_put(void *block);

#endif
