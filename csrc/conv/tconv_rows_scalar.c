/* The conv row kernels built for scalar (tconv_rows_body.h). */
#define TCONV_ROWS_TABLE tconv_rows_scalar
#include "conv/tconv_rows_body.h"
