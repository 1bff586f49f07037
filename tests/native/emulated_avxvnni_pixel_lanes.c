/* tconv_pixel_lanes_avxvnni.c (the AVX2 kernel with vpdpbusd) on an emulated
 * vpdpbusd, under its own name: runs on any AVX2 CPU. */
#include "emulated_x86_intrinsics.h"
#define TCONV_LANES_AVXVNNI 1
#define TCONV_LANES_KERNELS emulated_tconv_lanes_avxvnni
#include "conv/tconv_pixel_lanes_avx2.c"
