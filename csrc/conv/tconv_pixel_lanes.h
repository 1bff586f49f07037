/* The pixel-lanes conv kernel (tconv_pixel_lanes.c drives it): stride-1
 * convs with act_quant 1, 2 or 3 computed straight from NCHW planes, with
 * consecutive output pixels in the lanes of a vector (16 on AVX-512 VNNI, 8
 * on AVX2), so neither the input nor the output is ever transposed. The
 * x86 ISAs fill the platform slot (isa/platform.h); the others keep the
 * channels-last path and, for act_quant 3, one matmul per tap. */
#ifndef ONNXBIT_TCONV_PIXEL_LANES_H
#define ONNXBIT_TCONV_PIXEL_LANES_H

#include <stddef.h>
#include <stdint.h>

/* Output pixels per tile: LANES_VECTORS vectors of 16. */
enum { TCONV_LANES_VECTORS = 4, TCONV_LANES_TILE = 16 * TCONV_LANES_VECTORS };

/* One task: `pixels` (1..TCONV_LANES_TILE) consecutive positions p0.. of the
 * output grid laid on the input's flat (zero-padded) plane of width
 * flat_w, for output channels [0, m) of the arrays given (already offset).
 *
 * Input: src[c] (c < 4 * quads; channels past C point at any readable plane:
 * their codes are 0) is channel c's flat plane at p0; tap t reads
 * src[c][offset[t] + lane]. Window absmax: window_amax (at p0) holds each
 * flat pixel's absmax bit pattern over the channels, and a lane's window
 * takes the max over the taps; window_amax NULL means a 1-tap conv whose
 * absmax comes from src[0 .. channels) directly.
 *
 * Weights: codes [m][taps][quads] dwords of 4 int8 codes (channel 4 j + i in
 * byte i), correction[o] = 128 * sum of row o's codes (the activations go
 * in as q + 128, unsigned), weight_scale[o], bias (NULL: none).
 *
 * Output: lane p (flat position p0 + p, p < pixels) is output pixel
 * (p / flat_w, p % flat_w) when p % flat_w < out_w (the columns past it are
 * the padding's and are dropped); y[o * plane + oh * out_w + ow]. Each value
 * is computed as the TernaryMatMul epilogue does (tmm_compute.h):
 * ((0 + (float)isum * weight_scale) / s) + bias, NaN for a window holding
 * NaN or Inf; s = 127 * (1 / max(window absmax, 1e-5)), or static_scale when
 * it is > 0 (act_quant 2); q = clamp(rint(x * s), -128, 127).
 *
 * per_pixel (act_quant 3, tconv_per_pixel.c has the arithmetic): every flat
 * pixel the tile reads (p0 + [0, span), span = TCONV_LANES_TILE + the last
 * tap's offset, rounded up to 16) is quantized once with its own scale s =
 * 127 * (1 / max(absmax, 1e-5)) over all channels (window_amax holds those
 * absmaxes, or NULL for a 1x1 conv as above) and r = 1 / s (NaN for a pixel
 * holding NaN or Inf); per output lane, acc = 0, then per tap in order
 * acc = acc + (float)(isum_tap) * r[lane + offset[tap]], with
 * tap_correction[o * taps + tap] = 128 * the tap's code sum; y = acc *
 * weight_scale + bias. A padding pixel (x = 0) adds +0. When `quantized`
 * is set (a padded image quantized whole beforehand by the pixels kernel
 * below, the same arithmetic), the tile reads its pixels there instead:
 * [quad][quantized_stride] dwords and their r at pixel_r, both at p0. */
struct tconv_lanes_task {
    const float *const *src;
    const size_t *offset;
    size_t taps, quads, channels;
    const int32_t *window_amax;
    float static_scale;
    int prefetch_next; /* a next tile exists, often computed next by the same thread: read its input ahead */
    size_t pixels, p0, flat_w, out_w, plane;
    const int32_t *codes;
    const int32_t *correction;
    const float *weight_scale;
    const float *bias;
    size_t m;
    float *y;
    int per_pixel;
    const int32_t *tap_correction; /* per_pixel: [m][taps] */
    const int32_t *quantized;      /* per_pixel: the image's pixels at p0, or NULL (quantized per tile) */
    const float *pixel_r;
    size_t quantized_stride;
    /* Scratch, 64-byte aligned: TCONV_LANES_TILE * taps * 4 * quads bytes;
     * per_pixel: span * (4 * quads + 4) bytes (tconv_lanes_span). */
    uint8_t *tile;
};

/* per_pixel: the flat pixels a tile reads, from its first. */
static inline size_t tconv_lanes_span(size_t last_offset) {
    return (TCONV_LANES_TILE + last_offset + 15) / 16 * 16;
}

/* Where a task's vectors of `lanes` pixels go: bit l of keep[v] set when
 * lane l is an output pixel (its flat column < out_w; the others are the
 * padding's and are dropped), dst[v] the output index of the vector's first
 * kept lane (the kept lanes are consecutive outputs). One division a task,
 * then the columns walked: a division per lane had cost a 1x1 conv of 16
 * channels at 112x112 a twentieth of its time. */
static inline void tconv_lanes_stores(const struct tconv_lanes_task *t, size_t lanes, size_t vectors,
                                      unsigned *keep, size_t *dst) {
    size_t row = t->p0 / t->flat_w, col = t->p0 % t->flat_w;
    for (size_t v = 0; v < vectors; v++) {
        unsigned bits = 0;
        size_t first = 0;
        for (size_t l = 0; l < lanes && lanes * v + l < t->pixels; l++) {
            if (col < t->out_w) {
                if (!bits) first = row * t->out_w + col;
                bits |= 1u << l;
            }
            if (++col == t->flat_w) col = 0, row++;
        }
        keep[v] = bits;
        dst[v] = first;
    }
}

/* act_quant 3 on a zero-padded image: every pixel quantized once, as the
 * tiles would (q + 128 bytes in the dword of its quad; r = 1 / s), so that
 * tiles, whose spans overlap by the window's height in rows, read the codes
 * instead of quantizing each pixel up to three times. Pixel p of the flat
 * plane (row p / flat_w, column p % flat_w) is image pixel (row - pad_top,
 * column - pad_left) of x's C planes, 0 outside the image. */
struct tconv_lanes_image {
    const float *x;
    size_t channels, in_h, in_w, pad_top, pad_left, flat_w, quads;
    int32_t *q;      /* [quads][stride] */
    float *r;        /* [stride] */
    size_t stride;
};

struct tconv_lanes_kernels {
    void (*tile)(const struct tconv_lanes_task *task);
    /* n <= TCONV_LANES_TILE pixels of flat row `row` from flat pixel p (its
     * column col) on, into image->q and image->r */
    void (*quantize_run)(const struct tconv_lanes_image *image, size_t p, size_t row, size_t col, size_t n);
    /* Output pixels per image below which a conv of several taps keeps the
     * other paths (tconv_pixel_lanes_applies has the measurements): with
     * act_quant 1 or 2 (the channels-last path), and with 3 (per-tap matmuls). */
    size_t min_multi_tap_outputs, min_multi_tap_outputs_per_pixel;
};

#if defined(ONNXBIT_X86)
extern const struct tconv_lanes_kernels tconv_lanes_avx512;
extern const struct tconv_lanes_kernels tconv_lanes_avx2;
extern const struct tconv_lanes_kernels tconv_lanes_avxvnni;
#endif

#endif
