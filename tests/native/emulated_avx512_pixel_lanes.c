/* tconv_pixel_lanes_avx512.c on emulated intrinsics, under its own name. */
#include "emulated_x86_intrinsics.h"
#define tconv_lanes_avx512 emulated_tconv_lanes_avx512
#include "conv/tconv_pixel_lanes_avx512.c"
