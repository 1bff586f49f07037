/* Portable static activation quantizer (tmm_quantize_static.h). */
#include <float.h>
#include <math.h>

#include "tmm_quantize_static.h"

int tmm_quantize_static_scalar(const float *a, size_t k, float s, int8_t *q) {
    int finite = 1;
    for (size_t i = 0; i < k; i++) {
        /* NaN fails the comparison, and so does Inf. */
        if (!(fabsf(a[i]) <= FLT_MAX)) finite = 0;
        float r = rintf(a[i] * s);
        if (r > 127.0f) r = 127.0f;
        if (r < -128.0f) r = -128.0f;
        q[i] = finite ? (int8_t)r : 0;
    }
    return finite;
}
