/* Per-thread scratch cache (tmm_scratch.h): a few slots per thread, each a
 * block kept after use; the thread's blocks are freed when it exits or the
 * library is unloaded. */
#include "tmm_scratch.h"

#include <stdlib.h>

#include "obx_common.h"
#include "obx_thread_state.h"
#include "tmm_internal.h"

/* Blocks one thread holds at once at most: a call nests three (the
 * activation buffer, the GEMM path's transposed rows and a task's sums). */
#define SCRATCH_SLOTS 4
/* Larger blocks are not kept: a rare huge call should not pin its memory
 * (16 MiB covers M = 128 at K = 4096 several times over; at most
 * SCRATCH_SLOTS such blocks stay per calling thread). */
#define SCRATCH_KEEP_MAX ((size_t)16 << 20)

struct scratch_slot {
    void *block;
    size_t bytes;
    int in_use;
};

struct scratch_cache {
    struct scratch_slot slots[SCRATCH_SLOTS];
};

static void free_cache(void *arg) {
    struct scratch_cache *cache = arg;
    for (int i = 0; i < SCRATCH_SLOTS; i++) free(cache->slots[i].block);
}

static obx_thread_state caches = OBX_THREAD_STATE_INIT(free_cache, sizeof(struct scratch_cache));

/* Every thread's blocks go with the library (obx_thread_state.h says why). */
__attribute__((destructor)) static void release_caches(void) { obx_thread_state_release_all(&caches); }

static struct scratch_cache *thread_cache(void) { return obx_thread_state_get(&caches); }

static void *allocate(size_t bytes) {
    _Static_assert(TMM_ALIGN == OBX_CACHE_LINE, "scratch blocks are aligned to TMM_ALIGN");
    return obx_alloc_lines(bytes);
}

void *tmm_scratch_get(size_t bytes) {
    struct scratch_cache *cache = bytes <= SCRATCH_KEEP_MAX ? thread_cache() : NULL;
    if (!cache) return allocate(bytes);
    /* The smallest free block that fits; else an empty slot, else replace
     * the largest free block (too small). */
    struct scratch_slot *fit = NULL, *spare = NULL;
    for (int i = 0; i < SCRATCH_SLOTS; i++) {
        struct scratch_slot *s = &cache->slots[i];
        if (s->in_use) continue;
        if (s->block && s->bytes >= bytes && (!fit || s->bytes < fit->bytes)) fit = s;
        if (!spare || (spare->block && (!s->block || s->bytes > spare->bytes))) spare = s;
    }
    if (fit) {
        fit->in_use = 1;
        return fit->block;
    }
    if (!spare) return allocate(bytes); /* every slot busy: not kept */
    free(spare->block);
    spare->block = allocate(bytes);
    spare->bytes = spare->block ? bytes : 0;
    spare->in_use = spare->block != NULL;
    return spare->block;
}

void tmm_scratch_put(void *block) {
    if (!block) return;
    struct scratch_cache *cache = thread_cache();
    if (cache)
        for (int i = 0; i < SCRATCH_SLOTS; i++)
            if (cache->slots[i].block == block && cache->slots[i].in_use) {
                cache->slots[i].in_use = 0;
                return;
            }
    free(block);
}
