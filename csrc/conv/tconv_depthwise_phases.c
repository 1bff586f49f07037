/* Stride-2 depthwise convolution with float activations (or int8 ones per
 * window, tconv_window_quant), from the input's
 * four phase planes. Padded row 2i + a, column 2j + b of a channel is phase
 * plane (a, b) at (i, j); an output (r, c) then reads, for a tap at padded
 * offset (u, v) from its window's corner, plane (u & 1, v & 1) at
 * (r + u / 2, c + v / 2): a stride-1 read. So the planes, stacked in one
 * buffer, run like the stride-1 planes (depthwise_rows_f32), 16
 * outputs a vector load per tap and no edge cases, on rows of phase_w with
 * phase_w = out_w + (the widest tap offset) / 2, rounded up to a cache line.
 *
 * The stride-2 planes ran flat on the stride-1 grid before (four times the
 * outputs, then every second one picked) and, on wide rows, row by row with
 * scalar edges: 0.51x and 0.74x onnxruntime's fp32 Conv on 512 x 14x14 and
 * 96 x 112x112 (one thread). Splitting a row into its phases is one pair of
 * shuffles per 32 inputs (stage_phases, a channel a call); an earlier split
 * element by element cost more than the outputs it saved.
 *
 * Arithmetic: the documented float order (tconv_depthwise.c), a padding tap
 * adding x * w = +-0 (a sum that starts at +0 never becomes -0). */
#include <string.h>

#include "conv/tconv_internal.h"
#include "isa/platform.h"
#include "obx_common.h"

/* About 4096 grid outputs a task (a task per 7x7 channel costs more in
 * hand-offs than its arithmetic), and at most PHASE_TASKS tasks (a task
 * clears its planes once: per 112x112 channel that was 4% of the time).
 * Planes up to 2^18 staged floats (1 MiB, an L2) run here; larger ones take
 * the row path. */
enum { PHASE_TASK_VALUES = 4096, PHASE_TASKS = 32, PHASE_MAX_STAGED = 1 << 18 };
/* Floats in a cache line: the staged rows are aligned to them (tconv_compute_depthwise_phases). */
enum { PHASE_ALIGN = OBX_CACHE_LINE / sizeof(float) };

typedef struct PhaseJob {
    const obx_tconv_weights *w;
    const obx_conv_geometry *g;
    const struct tconv_row_kernels *rows;
    tconv_image img; /* this image */
    const float *bias;
    const size_t *offset; /* each tap's offset in the stacked planes from its output's grid position */
    size_t band_rows;               /* output rows a band (all of them without per_pixel) */
    size_t phase_h, phase_w, plane; /* a band's phase plane: phase_h rows of phase_w floats, plane floats apart */
    size_t shift[2];                /* plane (a, b) starts at (2a + b) * plane + shift[b] */
    size_t staged;                  /* the four planes and the reads past their end */
    size_t grid;                    /* a band's rows of phase_w outputs, rounded up to 16 */
    size_t channels_per_task;
    const tconv_window_quant *wq; /* int8 activations per window, or NULL */
    int per_pixel;                /* act_quant 3: a task is a band of all channels, with its own scales */
    int failed;
} PhaseJob;

/* One phase plane: rows r + u / 2 for every output row r and tap row u. */
static void phase_size(const obx_conv_geometry *g, size_t *phase_h, size_t *phase_w) {
    *phase_h = g->out_h + ((g->kernel_h - 1) * g->dilation_h) / 2;
    *phase_w = g->out_w + ((g->kernel_w - 1) * g->dilation_w) / 2;
}

int tconv_depthwise_phases_fit(const obx_conv_geometry *g) {
    if (g->stride_h != 2 || g->stride_w != 2) return 0;
    size_t phase_h, phase_w;
    phase_size(g, &phase_h, &phase_w);
    /* The stacked planes with the reads past them (under 5 planes and a
     * block) and the grid (a plane and a block). */
    return phase_h * phase_w <= PHASE_MAX_STAGED / 7 - 16;
}

size_t tconv_depthwise_phases_band_rows(const obx_conv_geometry *g, size_t *reach_rows) {
    *reach_rows = ((g->kernel_h - 1) * g->dilation_h) / 2; /* phase rows past a band's outputs */
    /* an output row reads two input rows over all channels */
    return tconv_band_rows(g->out_h, 2 * g->in_w * g->channels * sizeof(float), *reach_rows);
}

/* Channels [o0, o1) over output rows [oh0, oh1) (a band's phase rows start
 * at row oh0 of the whole planes); per_pixel: the band's pixel scales first. */
static void phase_task(void *arg, size_t index) {
    PhaseJob *job = arg;
    const obx_tconv_weights *w = job->w;
    const obx_conv_geometry *g = job->g;
    const size_t taps = w->kernel_positions, pixels = g->in_h * g->in_w, positions = g->out_h * g->out_w;
    const size_t pw = job->phase_w;
    size_t oh0, oh1, o0, o1;
    tconv_task_range(job->per_pixel, index, job->band_rows, g->out_h, job->channels_per_task, w->m, &oh0, &oh1, &o0,
                     &o1);
    /* The band's phase rows hold padded rows [2 oh0, 2 (oh0 + phase_h)): these input rows. */
    const size_t ih0 = 2 * oh0 > g->pad_top ? 2 * oh0 - g->pad_top : 0;
    const size_t end = 2 * (oh0 + job->phase_h);
    const size_t ih1 = OBX_MIN(g->in_h, end > g->pad_top ? end - g->pad_top : 0);
    const size_t in_rows = ih1 > ih0 ? ih1 - ih0 : 0, band_pixels = in_rows * g->in_w;
    /* tap weights, the planes, the grid; per_pixel: the band's scales, inverses and flags */
    const size_t scales = job->per_pixel ? tconv_band_scales_floats(band_pixels) : 0;
    float *weight = tconv_thread_buffer(TCONV_BUFFER_TILE,
                                        OBX_DIV_UP(taps, PHASE_ALIGN) * PHASE_ALIGN + job->staged + job->grid + scales);
    if (!weight) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    float *phases = weight + OBX_DIV_UP(taps, PHASE_ALIGN) * PHASE_ALIGN, *grid = phases + job->staged;
    const float *scale = NULL, *inverse = NULL;
    if (job->per_pixel)
        tconv_band_scales(job->rows, job->img.x + ih0 * g->in_w, pixels, g->channels, band_pixels, grid + job->grid,
                          &scale, &inverse);
    else if (job->img.dq_scale)
        scale = job->img.dq_scale + ih0 * g->in_w, inverse = job->img.dq_inverse + ih0 * g->in_w;
    /* The padding stays 0: every channel rewrites the same inside positions. */
    memset(phases, 0, job->staged * sizeof(float));
    /* the band's first padded row is 2 oh0; rows past the band's are read by no output */
    const struct tconv_phase_layout layout =
        tconv_phase_layout_at(g, ih0, in_rows, 2 * oh0, pw, job->plane, job->shift);
    for (size_t o = o0; o < o1; o++) {
        for (size_t t = 0; t < taps; t++) weight[t] = w->weights[t * w->m + o];
        const float *plane = job->img.x + (o / w->m_per_group) * pixels + ih0 * g->in_w;
        job->rows->stage_phases(phases, plane, &layout, scale, inverse);
        tconv_depthwise_band(job->rows, job->wq, job->img.y + o * positions + oh0 * g->out_w, oh1 - oh0, g->out_w,
                             grid, phases, pw, job->grid, job->offset, weight, taps, w->scales[o],
                             job->bias ? job->bias + o : NULL);
    }
}

int tconv_compute_depthwise_phases(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                   const float *bias, int per_pixel, const tconv_pixel_dequant *dq,
                                   const tconv_window_quant *wq, float *y, obx_parallel_for_fn par, void *runner,
                                   char *err, size_t err_len) {
    const size_t taps = w->kernel_positions;
    size_t *offset = (size_t *)tconv_thread_buffer(TCONV_BUFFER_IMAGE, taps * sizeof(size_t) / sizeof(float) + 1);
    if (!offset) {
        obx_set_error(err, err_len, "out of memory for the depthwise tap offsets");
        return -1;
    }
    size_t phase_h, phase_w;
    phase_size(g, &phase_h, &phase_w);
    size_t reach_rows;
    const size_t rows_a_band = tconv_depthwise_phases_band_rows(g, &reach_rows);
    const size_t band_rows = per_pixel ? rows_a_band : g->out_h;
    if (per_pixel) phase_h = OBX_MIN(phase_h, band_rows + reach_rows);
    /* Staging writes whole rows of 16 columns: with rows of a multiple of 16
     * floats and each plane shifted so that its first input column lands on
     * a cache line, those stores are aligned. Unaligned, each split two
     * lines, and back to back they ran at half speed (96 x 112x112 stride 2,
     * one thread: staging 12.2 us against 8.3 us on 8 channels). The int8
     * kernel computes every column of its grid, 12% more at 112x112, and
     * still gained: 1.17x -> 1.29x fp32 Conv with act_quant 1. */
    size_t shift[2];
    phase_w = OBX_DIV_UP(phase_w, PHASE_ALIGN) * PHASE_ALIGN;
    for (size_t b = 0; b < 2; b++) {
        const size_t first_col = b == (g->pad_left & 1) ? g->pad_left / 2 : (g->pad_left + 1) / 2;
        shift[b] = (PHASE_ALIGN - first_col % PHASE_ALIGN) % PHASE_ALIGN;
    }
    const size_t plane = OBX_DIV_UP(phase_h * phase_w + shift[0] + shift[1], PHASE_ALIGN) * PHASE_ALIGN;
    const size_t grid = OBX_DIV_UP(band_rows * phase_w, 16) * 16;
    /* A tap at padded (u, v) from its window's corner reads plane (u & 1, v & 1),
     * u / 2 rows and v / 2 columns on from its output's grid position. */
    size_t reach = 0;
    for (size_t t = 0; t < taps; t++) {
        const size_t u = (t / g->kernel_w) * g->dilation_h, v = (t % g->kernel_w) * g->dilation_w;
        offset[t] = ((u & 1) * 2 + (v & 1)) * plane + shift[v & 1] + (u / 2) * phase_w + v / 2;
        reach = OBX_MAX(reach, offset[t]);
    }
    PhaseJob job = {.w = w, .g = g, .rows = obx_platform()->conv_rows, .bias = bias, .offset = offset,
                    .band_rows = band_rows, .phase_h = phase_h, .phase_w = phase_w, .plane = plane,
                    .shift = {shift[0], shift[1]},
                    .staged = OBX_MAX(4 * plane, grid + 16 + reach), .grid = grid,
                    .channels_per_task = OBX_MAX(OBX_MAX((size_t)1, PHASE_TASK_VALUES / grid),
                                                 OBX_DIV_UP(w->m, (size_t)PHASE_TASKS)),
                    .wq = wq, .per_pixel = per_pixel};
    const size_t tasks = per_pixel ? OBX_DIV_UP(g->out_h, band_rows) : OBX_DIV_UP(w->m, job.channels_per_task);
    tconv_run_images(g, w->m, x, y, dq, &job.img, &job.failed, par, runner, phase_task, &job, tasks);
    if (job.failed) {
        obx_set_error(err, err_len, "out of memory for the depthwise phase planes");
        return -1;
    }
    return 0;
}
