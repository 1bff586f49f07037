/* 3x3 depthwise convs at stride 1 or 2, and 5x5 ones, read straight from
 * the NCHW planes (tconv_rows.h direct_f32): a row kernel walks a strip of
 * outputs (16 on AVX-512, 8 on AVX2) down the rows and loads each input row
 * once a strip, at stride 2 splitting its even and odd columns in
 * registers, so nothing is staged. At stride 2 on rows of at most 16
 * columns, AVX-512 takes two channels a vector (direct_pairs_3x3_stride2,
 * direct_i8_pair_stride2): 512 @14x14 one strip a channel filled 7 of 16
 * lanes (float 0.97x of fp32 Conv one thread, two channels a vector 1.65x).
 * The flat and phase planes stage a padded or deinterleaved copy of every
 * plane first; on a Zen 5 core that copy took
 * half of a 96 @112x112 stride-2 call (float, one thread: the op 165 us on
 * the phase planes, 112 us here; fp32 Conv 171 us). The ISAs bring kernels
 * for 3x3 at both strides and 5x5 at stride 1 (direct_native); plain loops
 * serve the rest where the path is forced.
 *
 * Float activations: a task is a run of whole channels. act_quant 3 on
 * images up to 4 MiB: the same, with the pixel scales of one pass over the
 * image (tconv_depthwise_pixel.c). On larger ones a task is a band of output
 * rows over every channel, which takes its input rows' pixel scales (one
 * pass over the band, all channels: X comes from memory once, and the band
 * stays in L2 for the taps). Either way the taps dequantize each value as
 * they load it (x' = rint(x * s) * (1 / s), as every other path has it); at
 * stride 2 a channel loads each input value once (dequantizing a channel's
 * band rows into a buffer first ran 1.02-1.07x slower at one thread and
 * 1.15x at two, 96 @112x112), at stride 1 once for each column tap. int8
 * activations per window (act_quant 1, 2; 3x3 only, direct_i8): tasks of
 * whole channels, each output's window quantized as the taps load it.
 *
 * Arithmetic: the documented float order (tconv_depthwise.c), padding taps
 * left out (adding their +-0 products would change nothing); int8 windows,
 * the reference's (tconv_rows.h depthwise_pixel_i8). */
#include "conv/tconv_internal.h"
#include "isa/platform.h"
#include "obx_common.h"

/* About DIRECT_TASK_OUTPUTS outputs a float task (a task per 7x7 channel
 * costs more in hand-offs than its arithmetic). */
enum { DIRECT_TASK_OUTPUTS = 4096 };

typedef struct DirectJob {
    const obx_tconv_weights *w;
    const obx_conv_geometry *g;
    tconv_direct_fn kernel;
    tconv_direct_pairs_fn pairs; /* or NULL */
    tconv_direct_i8_fn i8;       /* int8 activations per window (with their static scale), or NULL */
    tconv_direct_i8_pair_fn i8_pair; /* the same two channels at once, or NULL */
    float static_scale;
    tconv_image img;
    const float *bias;
    size_t stride;
    size_t band_rows;         /* per_pixel: output rows a task */
    size_t channels_per_task; /* otherwise: channels a task */
    const struct tconv_row_kernels *rows;
    int failed;
} DirectJob;

int tconv_depthwise_direct_fits(const obx_conv_geometry *g) {
    return (g->kernel_h == 3 || g->kernel_h == 5) && g->kernel_w == g->kernel_h && g->stride_h == g->stride_w &&
           (g->stride_h == 1 || g->stride_h == 2) && g->dilation_h == 1 && g->dilation_w == 1 &&
           g->pad_left <= g->kernel_w / 2;
}

tconv_direct_fn tconv_depthwise_direct_kernel(const struct tconv_row_kernels *rows, const obx_conv_geometry *g,
                                              int *native) {
    const size_t k = g->kernel_h == 5, s = g->stride_h - 1;
    if (native) *native = rows->direct_native[k][s];
    return rows->direct_f32[k][s];
}

int tconv_depthwise_direct_i8_fits(const obx_conv_geometry *g) {
    return tconv_depthwise_direct_fits(g) && g->kernel_h == 3;
}

static int pairs_stride2_fit(const obx_conv_geometry *g) {
    return g->kernel_h == 3 && g->stride_h == 2 && g->in_w <= TCONV_DIRECT_PAIR_MAX_WIDTH;
}

tconv_direct_pairs_fn tconv_depthwise_direct_pairs_kernel(const struct tconv_row_kernels *rows,
                                                          const obx_conv_geometry *g) {
    if (pairs_stride2_fit(g)) return rows->direct_pairs_3x3_stride2;
    const int stride1 = g->kernel_h == 3 && g->stride_h == 1 && g->in_w <= TCONV_DIRECT_PAIR_MAX_WIDTH_STRIDE1 &&
                        g->out_w <= TCONV_DIRECT_PAIR_MAX_WIDTH_STRIDE1;
    return stride1 ? rows->direct_pairs_3x3_stride1 : NULL;
}

tconv_direct_i8_pair_fn tconv_depthwise_direct_i8_pair_kernel(const struct tconv_row_kernels *rows,
                                                              const obx_conv_geometry *g) {
    return pairs_stride2_fit(g) ? rows->direct_i8_pair_stride2 : NULL;
}

size_t tconv_depthwise_direct_band_rows(const obx_conv_geometry *g, size_t *reach_rows) {
    /* an output row reads `stride` new input rows over all channels, and kernel - stride past the band */
    *reach_rows = g->kernel_h - g->stride_h;
    return tconv_band_rows(g->out_h, g->stride_h * g->in_w * g->channels * sizeof(float), *reach_rows);
}

/* Channels [o0, o1), output rows [oh0, oh1), from input rows [ih0, ih1) at
 * `rows_at` floats into each plane; up to TCONV_DIRECT_PAIRS_MAX at a time,
 * two to a vector, where the ISA has a kernel for this geometry. */
static void channels(const DirectJob *job, size_t o0, size_t o1, size_t oh0, size_t oh1, size_t rows_at,
                     const float *scale, const float *inverse, size_t ih0, size_t ih1) {
    const obx_tconv_weights *w = job->w;
    const obx_conv_geometry *g = job->g;
    const size_t pixels = g->in_h * g->in_w, positions = g->out_h * g->out_w, multiplier = w->m_per_group;
    float *out[TCONV_DIRECT_PAIRS_MAX];
    const float *x[TCONV_DIRECT_PAIRS_MAX];
    size_t o = o0;
    while (job->pairs && o + 2 <= o1) {
        const size_t count = o + TCONV_DIRECT_PAIRS_MAX <= o1 ? TCONV_DIRECT_PAIRS_MAX : 2;
        for (size_t j = 0; j < count; j++) {
            out[j] = job->img.y + (o + j) * positions;
            x[j] = job->img.x + ((o + j) / multiplier) * pixels + rows_at;
        }
        job->pairs(count, out, g->out_w, oh0, oh1, x, scale, inverse, ih0, ih1, g->in_w, g->pad_top, g->pad_left,
                   w->weights + o, w->m, w->scales + o, job->bias ? job->bias + o : NULL);
        o += count;
    }
    if (job->i8_pair)
        for (; o + 2 <= o1; o += 2) {
            for (size_t j = 0; j < 2; j++) {
                out[j] = job->img.y + (o + j) * positions;
                x[j] = job->img.x + ((o + j) / multiplier) * pixels + rows_at;
            }
            job->i8_pair(out, g->out_w, oh0, oh1, x, ih0, ih1, g->in_w, g->pad_top, g->pad_left, w->weights + o, w->m,
                         job->static_scale, w->scales + o, job->bias ? job->bias + o : NULL);
        }
    float taps[25];
    for (; o < o1; o++) {
        for (size_t t = 0; t < w->kernel_positions; t++) taps[t] = w->weights[t * w->m + o];
        if (job->i8) {
            job->i8(job->img.y + o * positions, g->out_w, oh0, oh1, job->img.x + (o / multiplier) * pixels + rows_at,
                    ih0, ih1, g->in_w, g->pad_top, g->pad_left, taps, job->static_scale, w->scales[o],
                    job->bias ? job->bias + o : NULL);
            continue;
        }
        job->kernel(job->img.y + o * positions, g->out_w, oh0, oh1, job->img.x + (o / multiplier) * pixels + rows_at,
                    scale, inverse, ih0, ih1, g->in_w, g->pad_top, g->pad_left, taps, w->scales[o],
                    job->bias ? job->bias + o : NULL);
    }
}

/* Whole channels: float activations, or act_quant 3 with the image's pixel
 * scales from one pass (img.dq_scale). */
static void channel_task(void *arg, size_t index) {
    const DirectJob *job = arg;
    const obx_conv_geometry *g = job->g;
    const size_t o1 = OBX_MIN(job->w->m, (index + 1) * job->channels_per_task);
    channels(job, index * job->channels_per_task, o1, 0, g->out_h, 0, job->img.dq_scale, job->img.dq_inverse, 0,
             g->in_h);
}

static void band_task(void *arg, size_t index) {
    DirectJob *job = arg;
    const obx_conv_geometry *g = job->g;
    const size_t pixels = g->in_h * g->in_w, s = job->stride;
    const size_t oh0 = index * job->band_rows, oh1 = OBX_MIN(g->out_h, oh0 + job->band_rows);
    /* the input rows the band's windows read, inside the image */
    const ptrdiff_t first = (ptrdiff_t)(s * oh0) - (ptrdiff_t)g->pad_top;
    const ptrdiff_t end = (ptrdiff_t)(s * (oh1 - 1) + g->kernel_h) - (ptrdiff_t)g->pad_top;
    const size_t ih0 = first > 0 ? (size_t)first : 0;
    const size_t ih1 = end > 0 ? OBX_MIN(g->in_h, (size_t)end) : 0;
    const size_t n = ih1 > ih0 ? (ih1 - ih0) * g->in_w : 0;
    float *buffer = tconv_thread_buffer(TCONV_BUFFER_TILE, tconv_band_scales_floats(n) + 1);
    if (!buffer) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    const float *scale = NULL, *inverse = NULL;
    if (n) tconv_band_scales(job->rows, job->img.x + ih0 * g->in_w, pixels, g->channels, n, buffer, &scale, &inverse);
    channels(job, 0, job->w->m, oh0, oh1, ih0 * g->in_w, scale, inverse, ih0, ih1);
}

int tconv_compute_depthwise_direct(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                   const float *bias, int per_pixel, const tconv_pixel_dequant *dq,
                                   const tconv_window_quant *wq, float *y, obx_parallel_for_fn par, void *runner,
                                   char *err, size_t err_len) {
    const struct tconv_row_kernels *rows = obx_platform()->conv_rows;
    DirectJob job = {.w = w, .g = g, .kernel = tconv_depthwise_direct_kernel(rows, g, NULL), .rows = rows,
                     .bias = bias, .stride = g->stride_h};
    if (wq && !tconv_depthwise_direct_i8_fits(g)) {
        obx_set_error(err, err_len, "the direct depthwise planes take int8 activations only on 3x3 kernels");
        return -1;
    }
    if (wq) {
        job.i8 = rows->direct_i8[g->stride_h - 1];
        job.i8_pair = tconv_depthwise_direct_i8_pair_kernel(rows, g);
        job.static_scale = wq->static_scale;
    }
    size_t reach_rows;
    job.pairs = wq ? NULL : tconv_depthwise_direct_pairs_kernel(rows, g);
    job.band_rows = tconv_depthwise_direct_band_rows(g, &reach_rows);
    job.channels_per_task = OBX_MAX((size_t)1, DIRECT_TASK_OUTPUTS / OBX_MAX((size_t)1, g->out_h * g->out_w));
    if (job.pairs || job.i8_pair) /* whole vectors a task */
        job.channels_per_task = OBX_DIV_UP(job.channels_per_task, TCONV_DIRECT_PAIRS_MAX) * TCONV_DIRECT_PAIRS_MAX;
    const size_t tasks = per_pixel ? OBX_DIV_UP(g->out_h, job.band_rows) : OBX_DIV_UP(w->m, job.channels_per_task);
    tconv_run_images(g, w->m, x, y, dq, &job.img, &job.failed, par, runner, per_pixel ? band_task : channel_task,
                     &job, tasks);
    if (job.failed) {
        obx_set_error(err, err_len, "out of memory for a depthwise band");
        return -1;
    }
    return 0;
}
