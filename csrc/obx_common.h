/* Internal helpers shared by all of csrc/ and ops/ (not part of the public API). */
#ifndef ONNXBIT_COMMON_H
#define ONNXBIT_COMMON_H

/* Symbols of the public API; everything else stays hidden (-fvisibility=hidden). */
#define OBX_API __attribute__((visibility("default")))

#define OBX_MIN(a, b) ((a) < (b) ? (a) : (b))
#define OBX_MAX(a, b) ((a) > (b) ? (a) : (b))
#define OBX_DIV_UP(a, b) (((a) + (b)-1) / (b))

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "onnxbit/tmatmul.h" /* obx_task_fn, obx_parallel_for_fn */

enum { OBX_CACHE_LINE = 64 };

/* bytes rounded up to whole cache lines, starting on a line (free() it): a
 * block that shares no line with another allocation, so a thread writing
 * near it does not take lines another thread reads from it. NULL when out
 * of memory. */
static inline void *obx_alloc_lines(size_t bytes) {
    const size_t lines = OBX_DIV_UP(OBX_MAX(bytes, (size_t)1), (size_t)OBX_CACHE_LINE);
    return lines <= SIZE_MAX / OBX_CACHE_LINE ? aligned_alloc(OBX_CACHE_LINE, lines * OBX_CACHE_LINE) : NULL;
}

/* Formats a message into the caller's error buffer (err may be NULL). */
__attribute__((format(printf, 3, 4)))
static inline void obx_set_error(char *err, size_t err_len, const char *fmt_text, ...) {
    if (!err || err_len == 0) return;
    va_list args;
    va_start(args, fmt_text);
    vsnprintf(err, err_len, fmt_text, args);
    va_end(args);
}

/* fn(arg, i) for i < count: through the caller's parallel-for when there is
 * one and more than one task, else in this thread. */
static inline void obx_run_tasks(obx_parallel_for_fn par, void *runner, obx_task_fn fn, void *arg,
                                 size_t count) {
    if (par && count > 1)
        par(runner, fn, arg, count);
    else
        for (size_t i = 0; i < count; i++) fn(arg, i);
}

/* 0 when a compute call's buffers are usable (a may be NULL only when k is
 * 0), else -1 with a message naming the NULL one. */
static inline int obx_check_operands(const void *a, const void *y, size_t k, char *err,
                                     size_t err_len) {
    if (y && (a || k == 0)) return 0;
    obx_set_error(err, err_len, "%s is NULL", y ? "activation pointer a" : "output pointer y");
    return -1;
}

#endif
