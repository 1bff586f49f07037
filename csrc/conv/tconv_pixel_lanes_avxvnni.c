/* The AVX2 pixel-lanes kernel (tconv_pixel_lanes_avx2.c) with AVX-VNNI's
 * vpdpbusd for its dot products: four products a lane straight into int32
 * sums, no 16-bit stage to widen. */
#define TCONV_LANES_AVXVNNI 1
#define TCONV_LANES_KERNELS tconv_lanes_avxvnni
#include "conv/tconv_pixel_lanes_avx2.c"
