/* tmm_kernel_avxvnni.c on emulated intrinsics, under its own table name. */
#include "emulated_x86_intrinsics.h"
#define tmm_kernels_avxvnni emulated_tmm_kernels_avxvnni
#include "matmul/tmm_kernel_avxvnni.c"
