/* Static activation quantizer, AVX-512 (tmm_quantize_static.h): 16 floats per
 * vector, rounded half to even, clamped and narrowed to bytes with vpmovsdb
 * (the clamp already keeps every value in int8 range). */
#include <float.h>
#include <immintrin.h>
#include <math.h>

#include "tmm_quantize_static.h"

int tmm_quantize_static_avx512(const float *a, size_t k, float s, int8_t *q) {
    const __m512 flt_max = _mm512_set1_ps(FLT_MAX);
    const __m512 vs = _mm512_set1_ps(s);
    const __m512 lo = _mm512_set1_ps(-128.0f), hi = _mm512_set1_ps(127.0f);
    __mmask16 finite = 0xffff;
    size_t i = 0;
    for (; i + 16 <= k; i += 16) {
        __m512 v = _mm512_loadu_ps(a + i);
        /* Ordered <=: false for NaN and for Inf. */
        finite &= _mm512_cmp_ps_mask(_mm512_abs_ps(v), flt_max, _CMP_LE_OQ);
        __m512 x = _mm512_roundscale_ps(_mm512_mul_ps(v, vs),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
        _mm_storeu_si128((__m128i *)(q + i), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(x)));
    }
    if (finite != 0xffff) return 0;
    return tmm_quantize_static_scalar(a + i, k - i, s, q + i);
}
