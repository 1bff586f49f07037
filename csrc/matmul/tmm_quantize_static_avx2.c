/* Static activation quantizer, AVX2 (tmm_quantize_static.h): 32 floats per
 * step, multiplied, rounded half to even, clamped and packed to bytes. */
#include <float.h>
#include <immintrin.h>
#include <math.h>

#include "tmm_quantize_static.h"

int tmm_quantize_static_avx2(const float *a, size_t k, float s, int8_t *q) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 flt_max = _mm256_set1_ps(FLT_MAX);
    const __m256 vs = _mm256_set1_ps(s);
    const __m256 lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256 finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    size_t i = 0;
    for (; i + 32 <= k; i += 32) {
        __m256i parts[4];
        for (int p = 0; p < 4; p++) {
            __m256 v = _mm256_loadu_ps(a + i + 8 * p);
            /* Ordered <=: false for NaN and for Inf. */
            finite = _mm256_and_ps(finite, _mm256_cmp_ps(_mm256_and_ps(v, abs_mask), flt_max,
                                                         _CMP_LE_OQ));
            __m256 x = _mm256_round_ps(_mm256_mul_ps(v, vs),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
            parts[p] = _mm256_cvtps_epi32(x);
        }
        /* packs works within 128-bit lanes; the permute restores k order. */
        __m256i w01 = _mm256_packs_epi32(parts[0], parts[1]);
        __m256i w23 = _mm256_packs_epi32(parts[2], parts[3]);
        __m256i b = _mm256_packs_epi16(w01, w23);
        _mm256_storeu_si256((__m256i *)(q + i), _mm256_permutevar8x32_epi32(b, order));
    }
    if (_mm256_movemask_ps(finite) != 0xff) return 0;
    return tmm_quantize_static_scalar(a + i, k - i, s, q + i);
}
