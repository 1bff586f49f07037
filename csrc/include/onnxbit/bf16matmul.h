/* Matrix multiply with bfloat16 weights: Y[M,N] = A[M,K] @ float(W[K,N]) (+ bias).
 *
 * For float layers whose weights are exactly bfloat16 numbers (a bf16
 * checkpoint exported to a float32 ONNX model, as every released BitNet model
 * is): the weights are stored in half the bytes and multiplied as the float32
 * values they are, so the layer computes what the original computes with half
 * the memory traffic (what decides the speed of an LLM's output layer).
 *
 * W arrives as ONNX stores a bfloat16 MatMul weight: K rows of N uint16 (the
 * high half of each float32). obx_bf16_prepack repacks it once for the
 * kernels; obx_bf16_compute then runs any number of times, from any number of
 * threads. Arithmetic, the same on every ISA (the paths agree bit for bit):
 *   acc = 0.0f; for k in 0..K-1: acc = fmaf(a[m,k], float(w[k,n]), acc)
 *   y[m,n] = acc, then y = y + bias[n] when bias is given
 *
 * This header is parsed by cffi: keep declarations free of macros. */
#ifndef ONNXBIT_BF16MATMUL_H
#define ONNXBIT_BF16MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "onnxbit/tmatmul.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct obx_bf16_weights obx_bf16_weights;

/* Largest k and n (the repacked copy is indexed with size_t; these keep
 * every product of sizes far from overflow). */
enum { OBX_BF16_MAX_K = 16777215, OBX_BF16_MAX_N = 2147483647 };

/* w: k * n uint16, row-major [K, N]; w_count must equal k * n. Returns NULL
 * with a message in err on bad sizes or when out of memory. */
obx_bf16_weights *obx_bf16_prepack(const uint16_t *w, size_t w_count, int64_t k, int64_t n,
                                   char *err, size_t err_len);
void obx_bf16_free(obx_bf16_weights *w);

/* a: m rows of k floats (contiguous); y: m rows of n floats; bias: n floats or
 * NULL. par == NULL runs serially. Returns 0, or -1 with a message in err. */
int obx_bf16_compute(const obx_bf16_weights *w, const float *a, size_t m, const float *bias,
                     float *y, obx_parallel_for_fn par, void *runner, char *err, size_t err_len);

size_t obx_bf16_k(const obx_bf16_weights *w);
size_t obx_bf16_n(const obx_bf16_weights *w);

#ifdef __cplusplus
}
#endif
#endif
