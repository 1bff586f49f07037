/* The conv row kernels built for AVX-512 (tconv_rows_body.h); 512-bit
 * vectors: the file's flags allow them and -mprefer-vector-width is not set.
 * The transpose is the AVX2 file's 8 x 8 register one. */
#define TCONV_ROWS_TABLE tconv_rows_avx512
#define TCONV_ROWS_TRANSPOSE tconv_transpose_avx2
#include "conv/tconv_rows_body.h"
