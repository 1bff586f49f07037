/* Per-thread state of the library's caches (conv scratch buffers, matmul
 * scratch blocks): created zeroed on a thread's first use, released when the
 * thread exits, and released for every thread when the library is unloaded.
 *
 * The unload matters: onnxruntime unloads a custom-op library when the
 * sessions that registered it are gone, and loads it again for the next one.
 * A pthread key created per load and never deleted ran out after about 1000
 * loads (glibc has 1024); the conv buffers then read another library's
 * thread value as their own and corrupted the heap (found by a fuzz that
 * made about 1000 sessions in one process). */
#ifndef ONNXBIT_THREAD_STATE_H
#define ONNXBIT_THREAD_STATE_H

#include <pthread.h>
#include <stddef.h>

struct obx_thread_node;

typedef struct obx_thread_state {
    void (*release)(void *state); /* frees what one thread's state holds (not the state itself) */
    size_t size;                  /* bytes of one thread's state */
    pthread_mutex_t lock;         /* guards the fields below */
    int ready, key_ok;
    pthread_key_t key;
    struct obx_thread_node *nodes; /* every live thread's state */
} obx_thread_state;

#define OBX_THREAD_STATE_INIT(release_fn, bytes) {release_fn, bytes, PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, NULL}

/* This thread's state (zeroed when new), or NULL when out of memory or of
 * pthread keys. */
void *obx_thread_state_get(obx_thread_state *ts);

/* Releases every thread's state and deletes the key: for the library's
 * destructor (no thread may use ts any more). */
void obx_thread_state_release_all(obx_thread_state *ts);

#endif
