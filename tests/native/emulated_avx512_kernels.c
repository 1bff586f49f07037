/* tmm_kernel_avx512.c on emulated intrinsics, under its own table name. */
#include "emulated_x86_intrinsics.h"
#define tmm_kernels_avx512 emulated_tmm_kernels_avx512
#include "matmul/tmm_kernel_avx512.c"
