/* Per-thread scratch buffers of the conv paths, kept between tasks and
 * calls: a fresh allocation of tile size is a new mapping whose pages fault
 * in on every use (measured: the page faults cost more than the im2col
 * copies; the channels-last copy of a 64x56x56 input spent 8% of its call
 * clearing fresh pages). Freed when the thread exits. */
#include <pthread.h>
#include <stdlib.h>

#include "conv/tconv_internal.h"

typedef struct ThreadBuffers {
    float *data[TCONV_BUFFER_COUNT];
    size_t capacity[TCONV_BUFFER_COUNT]; /* floats */
} ThreadBuffers;

static pthread_key_t buffers_key;
static pthread_once_t buffers_key_once = PTHREAD_ONCE_INIT;

static void free_buffers(void *arg) {
    ThreadBuffers *buffers = arg;
    for (int i = 0; i < TCONV_BUFFER_COUNT; i++) free(buffers->data[i]);
    free(buffers);
}

static void create_buffers_key(void) { (void)pthread_key_create(&buffers_key, free_buffers); }

float *tconv_thread_buffer(enum tconv_buffer which, size_t floats) {
    pthread_once(&buffers_key_once, create_buffers_key);
    ThreadBuffers *buffers = pthread_getspecific(buffers_key);
    if (!buffers) {
        buffers = calloc(1, sizeof *buffers);
        if (!buffers || pthread_setspecific(buffers_key, buffers) != 0) {
            free(buffers);
            return NULL;
        }
    }
    if (buffers->capacity[which] < floats) {
        free(buffers->data[which]);
        buffers->data[which] = malloc(floats * sizeof(float));
        buffers->capacity[which] = buffers->data[which] ? floats : 0;
    }
    return buffers->data[which];
}
