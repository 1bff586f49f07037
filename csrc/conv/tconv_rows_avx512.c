/* The depthwise row kernels built for AVX-512 (tconv_rows_body.h);
 * 512-bit vectors: the file's flags allow them and -mprefer-vector-width is not set. */
#define TCONV_ROWS_TABLE tconv_rows_avx512
#include "conv/tconv_rows_body.h"
