/* Static activation quantization (act_quant = OBX_ACT_INT8_STATIC): one
 * fixed scale s for every row, calibrated offline, instead of each row's
 * absmax scale. The rounding and range are those of the per-token quantizer
 * (tmatmul.h), so the same integer kernels and epilogue apply:
 *     q[i] = (int8) clamp(rint(a[i] * s), -128, 127)      (float32, half to even)
 * One pass over the row: there is no absmax to find first. */
#ifndef ONNXBIT_TMM_QUANTIZE_STATIC_H
#define ONNXBIT_TMM_QUANTIZE_STATIC_H

#include <stddef.h>
#include <stdint.h>

/* Writes q[0..k) from a[0..k) and s; returns 0 when the row holds NaN or Inf
 * (q is then unspecified: the caller gives such rows a NaN result, as the
 * per-token path does), 1 otherwise. */
typedef int (*tmm_quantize_static_fn)(const float *a, size_t k, float s, int8_t *q);

/* The reference every SIMD version must equal bit for bit. */
int tmm_quantize_static_scalar(const float *a, size_t k, float s, int8_t *q);
#if defined(ONNXBIT_X86)
int tmm_quantize_static_avx2(const float *a, size_t k, float s, int8_t *q);
int tmm_quantize_static_avx512(const float *a, size_t k, float s, int8_t *q);
#endif

#endif
