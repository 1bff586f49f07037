/* Per-thread scratch cache (tmm_scratch.h): a few slots per thread, each a
 * block kept after use; the thread's blocks are freed when it exits. */
#include "tmm_scratch.h"

#include <pthread.h>
#include <stdlib.h>

#include "obx_common.h"
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

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static int cache_key_ok;

static void free_cache(void *arg) {
    struct scratch_cache *cache = arg;
    for (int i = 0; i < SCRATCH_SLOTS; i++) free(cache->slots[i].block);
    free(cache);
}

static void make_key(void) { cache_key_ok = pthread_key_create(&cache_key, free_cache) == 0; }

static struct scratch_cache *thread_cache(void) {
    pthread_once(&cache_once, make_key);
    if (!cache_key_ok) return NULL;
    struct scratch_cache *cache = pthread_getspecific(cache_key);
    if (!cache) {
        cache = calloc(1, sizeof *cache);
        if (cache && pthread_setspecific(cache_key, cache) != 0) {
            free(cache);
            cache = NULL;
        }
    }
    return cache;
}

static void *allocate(size_t bytes) {
    return aligned_alloc(TMM_ALIGN, OBX_DIV_UP(OBX_MAX(bytes, 1), TMM_ALIGN) * TMM_ALIGN);
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
    pthread_once(&cache_once, make_key);
    struct scratch_cache *cache = cache_key_ok ? pthread_getspecific(cache_key) : NULL;
    if (cache)
        for (int i = 0; i < SCRATCH_SLOTS; i++)
            if (cache->slots[i].block == block && cache->slots[i].in_use) {
                cache->slots[i].in_use = 0;
                return;
            }
    free(block);
}
