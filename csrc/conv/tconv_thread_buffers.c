/* Per-thread scratch buffers of the conv paths, kept between tasks and
 * calls: a fresh allocation of tile size is a new mapping whose pages fault
 * in on every use (measured: the page faults cost more than the im2col
 * copies; the channels-last copy of a 64x56x56 input spent 8% of its call
 * clearing fresh pages). Freed when the thread exits or the library is
 * unloaded. */
#include <stdlib.h>

#include "conv/tconv_internal.h"
#include "obx_common.h"
#include "obx_thread_state.h"

typedef struct ThreadBuffers {
    float *data[TCONV_BUFFER_COUNT];
    size_t capacity[TCONV_BUFFER_COUNT]; /* floats */
} ThreadBuffers;

static void free_buffers(void *arg) {
    ThreadBuffers *buffers = arg;
    for (int i = 0; i < TCONV_BUFFER_COUNT; i++) free(buffers->data[i]);
}

static obx_thread_state thread_buffers = OBX_THREAD_STATE_INIT(free_buffers, sizeof(ThreadBuffers));

/* Every thread's buffers go with the library (obx_thread_state.h says why). */
__attribute__((destructor)) static void release_thread_buffers(void) {
    obx_thread_state_release_all(&thread_buffers);
}

/* Whole cache lines of their own (obx_alloc_lines). The calling thread's
 * image buffer holds tables every task reads (the same-size planes' lane
 * masks); when its last line also held the start of that thread's tile
 * buffer, written per channel, the other thread's reads and this thread's
 * writes passed the line back and forth: two threads took 0.8-1.0x one
 * thread's time on a 2304 x 14x14 depthwise conv instead of 0.55x. */
float *tconv_thread_buffer(enum tconv_buffer which, size_t floats) {
    ThreadBuffers *buffers = obx_thread_state_get(&thread_buffers);
    if (!buffers) return NULL;
    if (buffers->capacity[which] < floats) {
        free(buffers->data[which]);
        const size_t per_line = OBX_CACHE_LINE / sizeof(float);
        const size_t capacity =
            floats <= SIZE_MAX / sizeof(float) - per_line ? OBX_DIV_UP(OBX_MAX(floats, (size_t)1), per_line) * per_line : 0;
        buffers->data[which] = capacity ? obx_alloc_lines(capacity * sizeof(float)) : NULL;
        buffers->capacity[which] = buffers->data[which] ? capacity : 0;
    }
    return buffers->data[which];
}
