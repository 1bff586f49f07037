/* Shared between the conv paths (not public). */
#ifndef ONNXBIT_TCONV_INTERNAL_H
#define ONNXBIT_TCONV_INTERNAL_H

#include "conv/tconv_rows.h"
#include "obx_common.h"
#include "onnxbit/tconv.h"

struct obx_tconv_weights {
    size_t m, cg, group, m_per_group, k; /* k = cg * kernel positions */
    size_t kernel_positions;
    obx_tmm_weights **groups; /* im2col path: one prepacked matrix per conv group */
    int channels_last;        /* im2col path with K in (kh, kw, c) order (tconv_channels_last.c) */
    int32_t *codes;           /* depthwise path: [kernel_positions][m] (int32: vector lanes as wide as the sums) */
    float *weights;           /* depthwise path: the codes as floats, [kernel_positions][m] */
    float *scales;            /* depthwise and per-pixel paths: m per-channel scales */
    obx_tmm_weights **taps;   /* per-pixel path (act_quant 3): [group][kernel_positions], K = cg, scale 1 */
    int pixel_depthwise;      /* act_quant 3 on a depthwise conv: the depthwise layout, X dequantized per pixel */
    /* pixel-lanes path (tconv_pixel_lanes.c), also prepacked for act_quant 1 and 2 on CPUs that can run it:
     * [m][kernel_positions][ceil(cg / 4)] dwords of 4 codes, 128 * each row's code sum, m scales */
    int32_t *lane_codes;
    int32_t *lane_correction;
    int32_t *lane_tap_correction; /* [m][kernel_positions]: 128 * each tap's code sum (act_quant 3) */
    float *lane_scales;
};

/* act_quant = 3 (tconv_per_pixel.c): fills w->taps and w->scales from B
 * (w's sizes set, one scale group along K); 0, or -1 with a message. */
int tconv_prepack_per_pixel(obx_tconv_weights *w, int fmt, const uint8_t *b, const float *scales, size_t n_scales,
                            char *err, size_t err_len);
int tconv_compute_per_pixel(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                            const float *bias, float *y, obx_parallel_for_fn par, void *runner, char *err,
                            size_t err_len);

/* B's M rows of K codes as int8 (-1, 0, 1); NULL with a message naming the
 * first invalid code, or when out of memory. */
int8_t *tconv_decode_codes(int fmt, const uint8_t *b, size_t m, size_t k, char *err, size_t err_len);

/* The pixel-lanes path (one scale group along K, not depthwise): fills
 * w->lane_* from the decoded codes (w's sizes set); 0, or -1 with a message. */
int tconv_prepack_pixel_lanes(obx_tconv_weights *w, const int8_t *codes, const float *scales, size_t n_scales,
                              char *err, size_t err_len);
/* 1 when the pixel-lanes path computes this call (ISA, shape, mode and the
 * size rule; ONNXBIT_CONV_PATH=pixel_lanes or channels_last overrides the
 * rule), else 0. */
int tconv_pixel_lanes_applies(const obx_tconv_weights *w, const obx_conv_geometry *g, int act_quant);
int tconv_compute_pixel_lanes(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                              const float *bias, int act_quant, float act_scale, float *y,
                              obx_parallel_for_fn par, void *runner, char *err, size_t err_len);

/* act_quant = 3 on weights prepacked depthwise (tconv_depthwise_pixel.c). */
int tconv_compute_depthwise_per_pixel(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                      const float *bias, float *y, obx_parallel_for_fn par, void *runner,
                                      char *err, size_t err_len);

/* Pixel scales of act_quant 3 (tconv_depthwise_pixel.c) for n pixels: x
 * points at the first in channel 0, plane_stride floats between channels;
 * scale[p] = 127 * (1 / max(absmax over the channels, 1e-5)), inverse[p] =
 * 1 / scale[p] (NaN where bad[p]: the pixel holds NaN or Inf). */
void tconv_pixel_scales(const struct tconv_row_kernels *rows, const float *x, size_t plane_stride, size_t channels,
                        size_t n, float *scale, float *inverse, uint8_t *bad);

/* Where stage_phases puts `rows` input rows from image row ih0 on, padded
 * row first_padded (even) being the first phase row: phase planes `plane`
 * floats apart and phase_w wide, phase-column plane b's columns starting
 * shift[b] floats into it (shift NULL: 0). Input column 2k is padded
 * column 2k + pad_left: plane pad_left & 1, column k + pad_left / 2; column
 * 2k + 1 follows. Columns past phase_w are read by no output. */
static inline struct tconv_phase_layout tconv_phase_layout_at(const obx_conv_geometry *g, size_t ih0, size_t rows,
                                                              size_t first_padded, size_t phase_w, size_t plane,
                                                              const size_t *shift) {
    const size_t even_b = g->pad_left & 1, even_col = g->pad_left / 2;
    const size_t odd_b = (g->pad_left + 1) & 1, odd_col = (g->pad_left + 1) / 2;
    return (struct tconv_phase_layout){
        .rows = rows,
        .in_w = g->in_w,
        .pad_top = ih0 + g->pad_top - first_padded,
        .phase_w = phase_w,
        .plane = plane,
        .even_at = even_b * plane + (shift ? shift[even_b] : 0) + even_col,
        .n_even = even_col < phase_w ? OBX_MIN((g->in_w + 1) / 2, phase_w - even_col) : 0,
        .odd_at = odd_b * plane + (shift ? shift[odd_b] : 0) + odd_col,
        .n_odd = odd_col < phase_w ? OBX_MIN(g->in_w / 2, phase_w - odd_col) : 0,
    };
}

/* A band's pixel scales (tconv_pixel_scales) in buffer, which holds
 * tconv_band_scales_floats(n) floats: the scales, then the inverses (set to
 * *scale and *inverse), then the flags. */
static inline size_t tconv_band_scales_floats(size_t n) { return 2 * n + OBX_DIV_UP(n, sizeof(float)); }
static inline void tconv_band_scales(const struct tconv_row_kernels *rows, const float *x, size_t plane_stride,
                                     size_t channels, size_t n, float *buffer, const float **scale,
                                     const float **inverse) {
    tconv_pixel_scales(rows, x, plane_stride, channels, n, buffer, buffer + n, (uint8_t *)(buffer + 2 * n));
    *scale = buffer;
    *inverse = buffer + n;
}

/* Output rows a band of act_quant 3 on the flat and phase planes: bands
 * enough for TCONV_BANDS tasks but at least twice the rows a window reaches
 * past its own (a band restages those: 960 @7x7 in bands of one row took 4x
 * the channel blocks' time), and few enough that a band's input over all
 * channels, input_row_bytes a row of outputs plus the reach, stays under
 * TCONV_BAND_BYTES (in L2 between its scales and its staging). */
enum { TCONV_BANDS = 8, TCONV_BAND_BYTES = 512 * 1024 };
static inline size_t tconv_band_rows(size_t out_h, size_t input_row_bytes, size_t reach) {
    const size_t fit = TCONV_BAND_BYTES / input_row_bytes, most = fit > reach + 1 ? fit - reach : 1;
    return OBX_MAX((size_t)1, OBX_MIN(OBX_MAX(OBX_DIV_UP(out_h, TCONV_BANDS), 2 * reach), most));
}

/* A flat or phase task's output rows [*oh0, *oh1) and channels [*o0, *o1):
 * with bands (per_pixel), band `index` of every channel; else every row of
 * channels_per_task channels. */
static inline void tconv_task_range(int per_pixel, size_t index, size_t band_rows, size_t out_h,
                                    size_t channels_per_task, size_t m, size_t *oh0, size_t *oh1, size_t *o0,
                                    size_t *o1) {
    *oh0 = per_pixel ? index * band_rows : 0;
    *oh1 = per_pixel ? OBX_MIN(out_h, *oh0 + band_rows) : out_h;
    *o0 = per_pixel ? 0 : index * channels_per_task;
    *o1 = per_pixel ? m : OBX_MIN(m, *o0 + channels_per_task);
}

/* Where act_quant 3 on a depthwise conv takes its pixel scales: band by band
 * inside the flat and phase planes of large images (tconv_depthwise.c
 * takes_bands; tconv_compute_depthwise_banded); from one pass over the
 * image, dequantizing as the channel blocks, same-size planes and the other
 * flat and phase planes stage X (tconv_compute_depthwise_dequantized with
 * dq); or from that pass and a dequantized copy for the other paths
 * (without dq). */
enum tconv_pixel_staging { TCONV_PIXEL_BANDED, TCONV_PIXEL_STAGED, TCONV_PIXEL_COPIED };
/* The float path chosen for act_quant 3 (tconv_depthwise.c's path index;
 * ONNXBIT_DEPTHWISE_PATH read once a call) and its staging. */
typedef struct tconv_depthwise_plan {
    int path;
    enum tconv_pixel_staging staging;
} tconv_depthwise_plan;
tconv_depthwise_plan tconv_depthwise_pixel_plan(const obx_tconv_weights *w, const obx_conv_geometry *g);
int tconv_compute_depthwise_banded(const tconv_depthwise_plan *plan, const obx_tconv_weights *w,
                                   const obx_conv_geometry *g, const float *x, const float *bias, float *y,
                                   obx_parallel_for_fn par, void *runner, char *err, size_t err_len);

/* act_quant 3 on a depthwise conv, for the float paths that stage X
 * (channel blocks, same-size planes; flat and phase planes not in bands):
 * each value is dequantized as it is
 * staged, x' = (float)clamp(rint(x * scale[p]), -128, 127) * inverse[p]
 * (tconv_depthwise_pixel.c), planes [batch][in_h * in_w]. NULL: X as is. */
typedef struct tconv_pixel_dequant {
    const float *scale, *inverse;
} tconv_pixel_dequant;

/* act_quant 1 or 2 on a depthwise path: each output's window quantized to
 * int8 (tconv_rows.h depthwise_plane_i8, depthwise_block_i8,
 * depthwise_pixel_i8) with its own absmax scale (static_scale 0) or
 * static_scale (act_quant 2). NULL: float activations. */
typedef struct tconv_window_quant {
    float static_scale;
} tconv_window_quant;

/* A flat or phase plane's band of out_rows x out_w outputs into y (rows
 * out_w apart) from its staged plane x (rows x_w apart, readable past the
 * band's grid of n outputs by 16 floats and the last tap's offset): float
 * activations straight into y; int8 ones per window (wq) on the grid, then
 * copied out of it. */
static inline void tconv_depthwise_band(const struct tconv_row_kernels *rows, const tconv_window_quant *wq, float *y,
                                        size_t out_rows, size_t out_w, float *grid, const float *x, size_t x_w,
                                        size_t n, const size_t *offset, const float *w, size_t taps, float scale,
                                        const float *bias) {
    if (!wq) {
        rows->depthwise_rows_f32(y, out_w, x, x_w, out_rows, out_w, offset, w, taps, scale, bias);
        return;
    }
    rows->depthwise_plane_i8(grid, x, n, offset, w, taps, wq->static_scale, scale, bias);
    rows->copy_rows(y, out_w, grid, x_w, out_rows, out_w, NULL, NULL);
}

/* One image of a call for a depthwise path's tasks: its X and Y, and its
 * per-pixel dequantization planes (NULL without). */
typedef struct tconv_image {
    const float *x;
    float *y;
    const float *dq_scale, *dq_inverse;
} tconv_image;

/* Depthwise convs with float activations (or int8 ones per window with wq),
 * channel multiplier 1, on input planes up to 1024 pixels
 * (tconv_depthwise_blocks.c): 1 when they fit. */
int tconv_depthwise_blocks_fit(const obx_tconv_weights *w, const obx_conv_geometry *g);
int tconv_compute_depthwise_blocks(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                   const float *bias, const tconv_pixel_dequant *dq,
                                   const tconv_window_quant *wq, float *y,
                                   obx_parallel_for_fn par, void *runner, char *err, size_t err_len);

/* Stride-2 depthwise convs (float activations, or int8 ones per window with
 * wq) on planes up to about 1 MiB of phase planes (tconv_depthwise_phases.c):
 * 1 when they fit. */
int tconv_depthwise_phases_fit(const obx_conv_geometry *g);
/* The output rows of a band with per_pixel, and the phase rows its windows
 * reach past them (*reach_rows). */
size_t tconv_depthwise_phases_band_rows(const obx_conv_geometry *g, size_t *reach_rows);
/* per_pixel: act_quant 3, in bands of output rows, each taking its own pixel
 * scales (X read from memory once: a band stays in L2 between its scales
 * and its staging); dq: act_quant 3 with the scales of a pass over the whole
 * image, dequantized as staged. */
int tconv_compute_depthwise_phases(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                   const float *bias, int per_pixel, const tconv_pixel_dequant *dq,
                                   const tconv_window_quant *wq, float *y, obx_parallel_for_fn par, void *runner,
                                   char *err, size_t err_len);

/* 3x3 and 5x5 depthwise convs at stride 1 or 2, dilation 1, pad_left at
 * most kernel / 2, read straight from the planes (tconv_depthwise_direct.c):
 * 1 when they fit (whatever the ISA: its plain loops serve where it has no
 * kernel); the kernel for g, *native set when the ISA has its own. */
int tconv_depthwise_direct_fits(const obx_conv_geometry *g);
tconv_direct_fn tconv_depthwise_direct_kernel(const struct tconv_row_kernels *rows, const obx_conv_geometry *g,
                                              int *native);
/* 1 when the direct planes take int8 activations per window (act_quant 1,
 * 2) on g: 3x3 kernels (tconv_rows.h direct_i8). */
int tconv_depthwise_direct_i8_fits(const obx_conv_geometry *g);
/* The ISA's kernel for two channels at once where this geometry takes one
 * (3x3 at stride 2 on rows at most TCONV_DIRECT_PAIR_MAX_WIDTH wide, at
 * stride 1 on rows and outputs at most TCONV_DIRECT_PAIR_MAX_WIDTH_STRIDE1
 * wide), else NULL; the same with int8 windows (3x3 at stride 2). */
tconv_direct_pairs_fn tconv_depthwise_direct_pairs_kernel(const struct tconv_row_kernels *rows,
                                                          const obx_conv_geometry *g);
tconv_direct_i8_pair_fn tconv_depthwise_direct_i8_pair_kernel(const struct tconv_row_kernels *rows,
                                                              const obx_conv_geometry *g);
/* The output rows of a band with per_pixel, and the input rows its windows
 * reach past them (*reach_rows). */
size_t tconv_depthwise_direct_band_rows(const obx_conv_geometry *g, size_t *reach_rows);
/* per_pixel: act_quant 3, in bands of output rows, each taking its own pixel
 * scales; dq: act_quant 3 with the scales of a pass over the whole image,
 * dequantized as the taps load X; neither: float activations. */
int tconv_compute_depthwise_direct(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                   const float *bias, int per_pixel, const tconv_pixel_dequant *dq,
                                   const tconv_window_quant *wq, float *y,
                                   obx_parallel_for_fn par, void *runner, char *err, size_t err_len);

/* Stride-1 depthwise convs with an output plane the input's size, float
 * activations (tconv_depthwise_same.c): 1 when they fit. */
int tconv_depthwise_same_fits(const obx_conv_geometry *g);
int tconv_compute_depthwise_same(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                 const float *bias, const tconv_pixel_dequant *dq, float *y,
                                 obx_parallel_for_fn par, void *runner, char *err, size_t err_len);

/* The path of a call (tconv.c), its arguments checked by the entry
 * (tconv_entry.c); 0, or -1 with a message. */
int tconv_compute_paths(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x, const float *bias,
                        int act_quant, float act_scale, float *y, obx_parallel_for_fn par, void *runner, char *err,
                        size_t err_len);

/* The direct depthwise path (tconv_depthwise.c). */
int tconv_compute_depthwise(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                            const float *bias, int act_quant, float act_scale, float *y, obx_parallel_for_fn par,
                            void *runner, char *err, size_t err_len);
/* The plan's float path (not a banded one); with dq (only where the plan
 * says TCONV_PIXEL_STAGED), on X dequantized per pixel as it is staged. 0,
 * or -1 with a message. */
int tconv_compute_depthwise_dequantized(const tconv_depthwise_plan *plan, const obx_tconv_weights *w,
                                        const obx_conv_geometry *g, const float *x, const float *bias,
                                        const tconv_pixel_dequant *dq, float *y, obx_parallel_for_fn par,
                                        void *runner, char *err, size_t err_len);

/* M rows of K = cg * taps decoded codes in (c, tap) order -> the same
 * codes in (tap, c) order as 2bit rows (ceil(K / 4) bytes each); NULL with
 * a message when out of memory. */
uint8_t *tconv_taps_first_2bit(const int8_t *codes, size_t m, size_t cg, size_t taps, char *err, size_t err_len);

/* Input pixel (h * in_w + w) of every kernel tap of output position p, -1
 * in the padding, in (kh, kw) order; returns the number of taps. */
size_t tconv_tap_pixels(const obx_conv_geometry *g, size_t p, ptrdiff_t *pixel);

/* The im2col path for weights prepacked channels_last. */
int tconv_compute_channels_last(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                const float *bias, int act_quant, float act_scale, float *y,
                                obx_parallel_for_fn par, void *runner, char *err, size_t err_len);

/* fn(arg, i) for i < tasks, for each image of the batch in turn with
 * `image` pointing at it; stops once *failed is set. */
static inline void tconv_run_images(const obx_conv_geometry *g, size_t out_channels, const float *x, float *y,
                                    const tconv_pixel_dequant *dq, tconv_image *image, const int *failed,
                                    obx_parallel_for_fn par, void *runner, obx_task_fn fn, void *arg,
                                    size_t tasks) {
    const size_t pixels = g->in_h * g->in_w, positions = g->out_h * g->out_w;
    for (size_t n = 0; n < g->batch && !*failed; n++) {
        image->x = x + n * g->channels * pixels;
        image->y = y + n * out_channels * positions;
        image->dq_scale = dq ? dq->scale + n * pixels : NULL;
        image->dq_inverse = dq ? dq->inverse + n * pixels : NULL;
        obx_run_tasks(par, runner, fn, arg, tasks);
    }
}

/* Zeroes all of plane[0, n) but the inside, rows [top, top + rows) x columns
 * [left, left + cols) of rows `width` floats long (tconv_depthwise.c; the
 * whole plane each channel was 4% of a 144 @56x56 call, a channel a task). */
void tconv_zero_margins(float *plane, size_t n, size_t width, size_t top, size_t left, size_t rows, size_t cols);

/* This thread's buffer `which` of at least `floats` floats, kept between
 * calls (tconv_thread_buffers.c); NULL when out of memory. */
enum tconv_buffer { TCONV_BUFFER_TILE, TCONV_BUFFER_IMAGE, TCONV_BUFFER_DEQUANTIZED, TCONV_BUFFER_COUNT };
float *tconv_thread_buffer(enum tconv_buffer which, size_t floats);

#endif
