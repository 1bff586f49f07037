/* Per-thread state with a registry of live threads (obx_thread_state.h). */
#include "obx_thread_state.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

struct obx_thread_node {
    struct obx_thread_node *prev, *next;
    obx_thread_state *owner;
    alignas(max_align_t) unsigned char state[];
};

static void unlink_node(obx_thread_state *ts, struct obx_thread_node *node) {
    if (node->prev) node->prev->next = node->next;
    else ts->nodes = node->next;
    if (node->next) node->next->prev = node->prev;
}

/* The key's destructor: the thread is exiting. */
static void thread_exit(void *arg) {
    struct obx_thread_node *node = arg;
    obx_thread_state *ts = node->owner;
    pthread_mutex_lock(&ts->lock);
    unlink_node(ts, node);
    pthread_mutex_unlock(&ts->lock);
    ts->release(node->state);
    free(node);
}

void *obx_thread_state_get(obx_thread_state *ts) {
    if (!__atomic_load_n(&ts->ready, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&ts->lock);
        if (!ts->ready) {
            ts->key_ok = pthread_key_create(&ts->key, thread_exit) == 0;
            __atomic_store_n(&ts->ready, 1, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&ts->lock);
    }
    if (!ts->key_ok) return NULL;
    struct obx_thread_node *node = pthread_getspecific(ts->key);
    if (node) return node->state;
    node = calloc(1, sizeof *node + ts->size);
    if (!node) return NULL;
    node->owner = ts;
    if (pthread_setspecific(ts->key, node) != 0) {
        free(node);
        return NULL;
    }
    pthread_mutex_lock(&ts->lock);
    node->next = ts->nodes;
    if (ts->nodes) ts->nodes->prev = node;
    ts->nodes = node;
    pthread_mutex_unlock(&ts->lock);
    return node->state;
}

void obx_thread_state_release_all(obx_thread_state *ts) {
    pthread_mutex_lock(&ts->lock);
    if (ts->ready && ts->key_ok) {
        /* Deleted first: no thread exit calls thread_exit for these nodes any more. */
        pthread_key_delete(ts->key);
        while (ts->nodes) {
            struct obx_thread_node *node = ts->nodes;
            ts->nodes = node->next;
            ts->release(node->state);
            free(node);
        }
    }
    ts->ready = 0;
    ts->key_ok = 0;
    pthread_mutex_unlock(&ts->lock);
}
