/* The conv row kernels built for scalar (tconv_rows_body.h): 128-bit vectors,
 * what SSE2 (x86-64's baseline) and NEON hold. */
#define TCONV_NATIVE_FLOATS 4
#define TCONV_ROWS_TABLE tconv_rows_scalar
#include "conv/tconv_rows_body.h"
