/* The depthwise row kernels built for avx2 (tconv_rows_body.h). */
#define TCONV_ROWS_TABLE tconv_rows_avx2
#include "conv/tconv_rows_body.h"
