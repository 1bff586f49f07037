/* obx_weight_alloc (onnxbit/weight_memory.h): weights on transparent huge
 * pages.
 *
 * Measured (Sapphire Rapids VM, THP "madvise", 2 vCPU): a chain of the 0.7B
 * BitNet model's layer shapes (24 x {4 x 1536x1536, 2 x 1536x4096,
 * 4096x1536}, 170 MB of 2-bit codes), M = 1, a 256 MiB array swept between
 * calls so the weights come from DRAM; medians of 30 calls, three
 * alternations of two builds, twice: one thread 12.5-16.2 -> 12.1-12.5 ms
 * (13.9 GB/s, 87% of the 16 GB/s numpy read probe, which numpy itself
 * places on huge pages); two threads 7.9-9.1 -> 7.1-8.1 ms. `onnxbit bench
 * matmul`, M = 1, 4096 x 4096, cold: 0.302 ms, 86% of the probe (66-75%
 * before). BFloat16MatMul 1536 x 32000 at M = 1, two threads: 4.12-4.51
 * against 4.24-4.54 ms. The AVX2 lookup kernel (forced on this CPU) is
 * bound by its shuffles and gained nothing measurable.
 *
 * Layout: every allocation is preceded by a 64-byte header naming its
 * mapping. One of 2 MiB or more maps its own region, starting on a 2 MiB
 * boundary so that all of it but the tail lies in huge pages. Smaller ones
 * are cut one after the other from the current 32 MiB chunk (a 1536 x 1536
 * ternary layer is 576 KiB: alone it could never fill a huge page); a chunk
 * counts its live allocations and is unmapped when the count returns to
 * zero. Fresh mappings are zero, so nothing is cleared. */
#include "onnxbit/weight_memory.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "obx_common.h"

#if defined(__SANITIZE_ADDRESS__)
#define OBX_WEIGHT_MEMORY_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OBX_WEIGHT_MEMORY_MALLOC 1
#endif
#endif

#ifdef OBX_WEIGHT_MEMORY_MALLOC

/* AddressSanitizer checks heap blocks only: give it every weight buffer. */
OBX_API void *obx_weight_alloc(size_t bytes) {
    size_t rounded = OBX_DIV_UP(bytes ? bytes : 1, 64) * 64;
    void *p = aligned_alloc(64, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

OBX_API void obx_weight_free(void *p) { free(p); }

OBX_API size_t obx_weight_memory_mapped(void) { return 0; }

#else

#include <pthread.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)
#define CHUNK_BYTES ((size_t)32 << 20)
#define HEADER 64
#define MAGIC 0x6f627877u /* "obxw" */

struct mapping {
    size_t bytes;  /* of the whole mapping */
    size_t used;   /* chunks: bytes handed out, this header included */
    size_t live;   /* allocations not yet freed */
};

/* Just before every pointer handed out. */
struct header {
    uint32_t magic;
    struct mapping *mapping;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct mapping *current_chunk;
static size_t mapped_bytes;

/* `bytes` (a multiple of the page size) starting on a 2 MiB boundary. */
static void *map_aligned(size_t bytes) {
    size_t padded = bytes + HUGE_PAGE;
    uint8_t *raw = mmap(NULL, padded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    uint8_t *base = (uint8_t *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (base > raw) munmap(raw, (size_t)(base - raw));
    size_t tail = (size_t)(raw + padded - (base + bytes));
    if (tail) munmap(base + bytes, tail);
#ifdef MADV_HUGEPAGE
    /* Advice only: where THP is off the region keeps 4 KiB pages. */
    madvise(base, bytes, MADV_HUGEPAGE);
#endif
    return base;
}

static struct mapping *new_mapping(size_t bytes) {
    struct mapping *m = map_aligned(bytes);
    if (!m) return NULL;
    m->bytes = bytes;
    m->used = HEADER; /* the mapping's own record fills the first 64 bytes */
    m->live = 0;
    mapped_bytes += bytes;
    return m;
}

static void unmap(struct mapping *m) {
    mapped_bytes -= m->bytes;
    munmap(m, m->bytes);
}

static void *hand_out(struct mapping *m, size_t offset) {
    struct header *h = (struct header *)((uint8_t *)m + offset - HEADER);
    h->magic = MAGIC;
    h->mapping = m;
    m->live++;
    return (uint8_t *)m + offset;
}

OBX_API void *obx_weight_alloc(size_t bytes) {
    if (bytes == 0) bytes = 1;
    if (bytes > SIZE_MAX - 2 * HUGE_PAGE) return NULL;
    pthread_mutex_lock(&lock);
    void *p = NULL;
    if (bytes + 2 * HEADER >= HUGE_PAGE) {
        /* record + header + data, whole 4 KiB pages */
        struct mapping *m = new_mapping(OBX_DIV_UP(2 * HEADER + bytes, 4096) * 4096);
        if (m) p = hand_out(m, 2 * HEADER);
    } else {
        size_t need = HEADER + OBX_DIV_UP(bytes, 64) * 64;
        /* A full chunk is left to the free of its last allocation (a chunk
         * whose allocations are all freed is unmapped at once, so this one
         * still holds some). */
        if (current_chunk && current_chunk->used + need > current_chunk->bytes) current_chunk = NULL;
        if (!current_chunk) current_chunk = new_mapping(CHUNK_BYTES);
        if (current_chunk) {
            p = hand_out(current_chunk, current_chunk->used + HEADER);
            current_chunk->used += need;
        }
    }
    pthread_mutex_unlock(&lock);
    return p;
}

OBX_API void obx_weight_free(void *p) {
    if (!p) return;
    struct header *h = (struct header *)((uint8_t *)p - HEADER);
    if (h->magic != MAGIC) abort(); /* not ours, or freed twice: stop before corrupting more */
    h->magic = 0;
    pthread_mutex_lock(&lock);
    struct mapping *m = h->mapping;
    if (--m->live == 0) {
        if (m == current_chunk) current_chunk = NULL;
        unmap(m);
    }
    pthread_mutex_unlock(&lock);
}

OBX_API size_t obx_weight_memory_mapped(void) {
    pthread_mutex_lock(&lock);
    size_t bytes = mapped_bytes;
    pthread_mutex_unlock(&lock);
    return bytes;
}

#endif
