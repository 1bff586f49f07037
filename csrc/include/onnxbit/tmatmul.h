/* Ternary matrix multiply: Y[M,N] = A[M,K] @ (W[K,N] * scale) (+ bias).
 *
 * W arrives in a packed file format (codec.h) as W transposed: N rows of K
 * codes. obx_tmm_prepack validates it once and repacks it into the layout the
 * active ISA computes fastest with; obx_tmm_compute then runs any number of
 * times, from any number of threads.
 *
 * Scales: n_scales == 1 (per tensor), N (per output channel), or
 * N * ceil(K / group_size) with group_size > 0 (per group along K, row-major
 * [N, groups]). Every scale must be finite and > 0.
 *
 * act_quant = OBX_ACT_NONE: float32 arithmetic,
 *   y[m,n] = sum_g scale[n,g] * (sum_{k in g} a[m,k] * w[k,n]) + bias[n]
 *   (summation order depends on the path, so on M and the ISA). One path is
 *   pinned down bit for bit on every ISA: with one scale group (per tensor or
 *   per channel) and M >= 8 rows,
 *     acc = 0.0f; for k in 0..K-1: acc = fmaf(a[m,k], w[k,n], acc)
 *     y[m,n] = acc * scale[n], then y = y + bias[n] when bias is given
 *   (w * a is exact, so fmaf here is one float32 addition per k).
 * act_quant = OBX_ACT_INT8_TOKEN (BitNet W1.58A8), exact integer core:
 *   amax = max_k |a[m,k]|;  s = 127.0f * (1.0f / fmaxf(amax, 1e-5f))
 *   (PyTorch evaluates BitNet's 127 / t as reciprocal(t) * 127, and both
 *   torch.onnx exporters emit it so: two roundings, kept for bit-exactness)
 *   q[k] = (int8) clamp(rint(a[m,k] * s), -128, 127)       (float32, half to even)
 *   isum_g = sum_{k in g} q[k] * w[k,n]                      (exact, int32)
 *   acc = 0.0f; for g in 0..G-1: acc = acc + (float) isum_g * scale[n,g]
 *   y[m,n] = acc / s, then y = y + bias[n] when bias is given (all float32)
 *   A row holding NaN or Inf gives a row of NaN.
 * act_quant = OBX_ACT_INT8_STATIC (obx_tmm_compute_scaled only): as
 *   OBX_ACT_INT8_TOKEN with s = act_scale, one calibrated scale for every row,
 *   instead of each row's absmax scale (no absmax pass):
 *   q[k] = (int8) clamp(rint(a[m,k] * act_scale), -128, 127), y = acc / act_scale
 *   (+ bias), NaN rows for rows holding NaN or Inf. act_scale is finite and > 0.
 * |isum_g| <= 128 * K, so int32 is exact for any K below 2^24.
 *
 * This header is parsed by cffi: keep declarations free of macros. */
#ifndef ONNXBIT_TMATMUL_H
#define ONNXBIT_TMATMUL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* OBX_ACT_INT8_PIXEL: TernaryConv only (tconv.h), one scale per input pixel. */
enum { OBX_ACT_NONE = 0, OBX_ACT_INT8_TOKEN = 1, OBX_ACT_INT8_STATIC = 2, OBX_ACT_INT8_PIXEL = 3 };

typedef struct obx_tmm_weights obx_tmm_weights;

/* Runs fn(task_arg, i) for i in [0, count), possibly in parallel, and returns
 * when all calls have returned (onnxruntime's KernelContext_ParallelFor has
 * this shape). */
typedef void (*obx_task_fn)(void *task_arg, size_t index);
typedef void (*obx_parallel_for_fn)(void *runner, obx_task_fn fn, void *task_arg, size_t count);

/* The sizes of one ternary matmul, checked against each other once, with
 * overflow-safe arithmetic, for every caller (the Python API and the
 * custom op): obx_tmm_shape_init, then obx_tmm_shape_check_buffers. */
typedef struct obx_tmm_shape {
    int fmt;
    size_t k, n;
    size_t group_size; /* 0: no groups along k */
    size_t row_bytes;  /* packed bytes of one of the n rows of B */
    size_t b_bytes;    /* n * row_bytes */
    size_t n_groups;   /* ceil(k / group_size), 1 without groups */
} obx_tmm_shape;

/* Largest k (|isum| <= 128 k must stay exact in int32) and largest n. */
enum { OBX_TMM_MAX_K = 16777215, OBX_TMM_MAX_N = 2147483647 };

/* Fills shape from the format and sizes: 0 <= k <= OBX_TMM_MAX_K,
 * 0 <= n <= OBX_TMM_MAX_N, group_size >= 0 (any size; one at least k makes
 * one group). Returns 0, or -1 with a message in err. */
int obx_tmm_shape_init(obx_tmm_shape *shape, int fmt, int64_t k, int64_t n, int64_t group_size,
                       char *err, size_t err_len);
/* Checks buffer lengths against the shape: b_bytes >= shape->b_bytes, and
 * n_scales is 1 or n without groups, n * n_groups with them. Returns 0, or
 * -1 with a message in err. */
int obx_tmm_shape_check_buffers(const obx_tmm_shape *shape, uint64_t b_bytes, uint64_t n_scales,
                                char *err, size_t err_len);

/* Validates the shape and buffers as above, b's codes and the scales (finite,
 * > 0), and repacks for the active ISA. Returns NULL with a message in err on
 * bad input. */
obx_tmm_weights *obx_tmm_prepack(int fmt, const uint8_t *b, size_t b_bytes, int64_t k, int64_t n,
                                 const float *scales, size_t n_scales, int64_t group_size,
                                 char *err, size_t err_len);
void obx_tmm_free(obx_tmm_weights *w);

/* a: m rows of k floats (contiguous); y: m rows of n floats; bias: n floats or
 * NULL. par == NULL runs serially. Returns 0, or -1 with a message in err. */
int obx_tmm_compute(const obx_tmm_weights *w, const float *a, size_t m, const float *bias,
                    int act_quant, float *y, obx_parallel_for_fn par, void *runner, char *err,
                    size_t err_len);

/* obx_tmm_compute with act_scale, the fixed activation scale that act_quant =
 * OBX_ACT_INT8_STATIC needs (finite, > 0; ignored by the other modes). */
int obx_tmm_compute_scaled(const obx_tmm_weights *w, const float *a, size_t m, const float *bias,
                           int act_quant, float act_scale, float *y, obx_parallel_for_fn par,
                           void *runner, char *err, size_t err_len);

/* The name of the compute path obx_tmm_compute takes for m rows with the
 * active ISA's kernels ("i8_gemv", "i8_lut", "i8_grouped", "i8_multiply",
 * "f32_gemm", "f32_scaled", "f32_decoded", "f32_multiply"): lets tests and
 * benchmarks check which kernels ran. */
const char *obx_tmm_path_name(const obx_tmm_weights *w, size_t m, int act_quant);

/* Dimensions the weights were prepacked with. */
size_t obx_tmm_k(const obx_tmm_weights *w);
size_t obx_tmm_n(const obx_tmm_weights *w);

#ifdef __cplusplus
}
#endif
#endif
