/* Stride-1 depthwise convs whose output plane is the input's size ("same"
 * padding, as MobileNet's 3x3 and 5x5 depthwise layers have), computed on
 * each channel's plane as one flat run of pixels, NCHW to NCHW: no
 * transposes and no padded rows.
 *
 * Output pixel p of the flat plane reads, for tap (i, j), input pixel
 * p + di * in_w + dj (di = i dH - pad_top, dj = j dW - pad_left): a constant
 * shift, so 16 consecutive outputs are one vector load per tap, whatever
 * rows they span. A shift wraps across a row edge where the tap falls in
 * the left or right padding, and reads outside the plane above and below
 * it. On ISAs with masked loads (depthwise_masked_plane_f32) each tap loads
 * the plane itself with those lanes masked to 0, from a mask per tap and
 * vector worked out once a call. Elsewhere each column offset dj gets its own
 * staged copy of the plane, shifted by dj, with the wrapped values masked to
 * 0 (masked_copy), and the rows above and below are zero margins around each
 * copy; the taps then run as depthwise_rows_f32 over the stacked copies.
 * With act_quant 3 the plane is dequantized per pixel first
 * (dequantize_pixels), one vector of pixel scales at a time.
 *
 * Measured before this path (one thread, 576 x 14x14): the channel blocks
 * spent a third of their time in the transposes to channels-last and back,
 * and with act_quant 3 a fifth more dequantizing the transposed tile.
 *
 * Arithmetic: the documented float order (tconv_depthwise.c), a padding tap
 * adding x * w = +-0 (a sum that starts at +0 never becomes -0). */
#include <string.h>

#include "conv/tconv_internal.h"
#include "isa/platform.h"
#include "obx_common.h"

/* About SAME_TASK_VALUES outputs a task (a task per 14x14 channel costs
 * more in hand-offs than its arithmetic); planes up to SAME_MAX_PIXELS (the
 * staged copies, about kW + 1 planes, stay in L2). */
enum { SAME_TASK_VALUES = 4096, SAME_MAX_PIXELS = 16384, SAME_MAX_KERNEL_W = 16 };

typedef struct SameJob {
    const obx_tconv_weights *w;
    const obx_conv_geometry *g;
    const struct tconv_row_kernels *rows;
    tconv_image img; /* this image, with its pixel scales under act_quant 3 */
    const float *bias;
    const int32_t *mask; /* [kW][vectors * 16]: all ones where column offset j stays in the row */
    const ptrdiff_t *shift;     /* masked planes: each tap's read from its output's pixel */
    const uint16_t *lane_mask;  /* masked planes: [tap][vector] the lanes whose read is inside the plane */
    const size_t *offset; /* each tap's read from an output's position in the stacked copies */
    size_t above;         /* zero floats before each copy: the rows the top taps read above the plane */
    size_t copy;          /* floats per copy: above, the plane rounded up to 16, and the rows below */
    size_t channels_per_task;
    int failed;
} SameJob;

/* At stride 1 an output the input's size has pads summing to the window's
 * reach, so pad_top and pad_left are at most the reach: every offset below
 * is >= 0. */
int tconv_depthwise_same_fits(const obx_conv_geometry *g) {
    return g->stride_h == 1 && g->stride_w == 1 && g->out_h == g->in_h && g->out_w == g->in_w &&
           g->in_h * g->in_w <= SAME_MAX_PIXELS && g->kernel_w <= SAME_MAX_KERNEL_W;
}

static size_t padded_pixels(const obx_conv_geometry *g) { return OBX_DIV_UP(g->in_h * g->in_w, 16) * 16; }

static void same_task(void *arg, size_t index) {
    SameJob *job = arg;
    const obx_tconv_weights *w = job->w;
    const obx_conv_geometry *g = job->g;
    const struct tconv_row_kernels *rows = job->rows;
    const size_t taps = w->kernel_positions, pixels = g->in_h * g->in_w, n = padded_pixels(g);
    const size_t kw = g->kernel_w;
    /* tap weights, the dequantized plane (act_quant 3), the copies */
    float *weight = tconv_thread_buffer(TCONV_BUFFER_TILE, taps + n + kw * job->copy);
    if (!weight) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    float *dequantized = weight + taps, *copies = dequantized + n;
    const size_t o1 = OBX_MIN(w->m, (index + 1) * job->channels_per_task);
    /* the taps read the plane itself, its outside masked, or its copies */
    const int masked = rows->depthwise_masked_plane_f32 != NULL;
    /* The margins stay 0: only each copy's plane is rewritten. */
    if (!masked) memset(copies, 0, kw * job->copy * sizeof(float));
    for (size_t o = index * job->channels_per_task; o < o1; o++) {
        for (size_t t = 0; t < taps; t++) weight[t] = w->weights[t * w->m + o];
        const float *plane = job->img.x + (o / w->m_per_group) * pixels;
        if (job->img.dq_scale) {
            rows->dequantize_pixels(dequantized, plane, job->img.dq_scale, job->img.dq_inverse, pixels);
            plane = dequantized;
        }
        const float *bias = job->bias ? job->bias + o : NULL;
        float *out = job->img.y + o * pixels;
        if (masked) {
            rows->depthwise_masked_plane_f32(out, plane, pixels, job->shift, job->lane_mask, weight, taps, w->scales[o],
                                             bias);
            continue;
        }
        for (size_t j = 0; j < kw; j++) {
            /* copy j holds x[p + dj] at p, 0 where that wraps (and past the plane) */
            const ptrdiff_t dj = (ptrdiff_t)(j * g->dilation_w) - (ptrdiff_t)g->pad_left;
            float *copy = copies + j * job->copy + job->above;
            const int32_t *mask = job->mask + j * n;
            /* the pixels p whose p + dj is in the plane; the others are masked anyway */
            const size_t first = dj < 0 ? OBX_MIN(pixels, (size_t)-dj) : 0;
            const size_t last = dj > 0 ? pixels - OBX_MIN(pixels, (size_t)dj) : pixels;
            memset(copy, 0, first * sizeof(float));
            if (last > first) rows->masked_copy(copy + first, plane + first + dj, mask + first, last - first);
            memset(copy + OBX_MAX(last, first), 0, (n - OBX_MAX(last, first)) * sizeof(float));
        }
        /* one row of every pixel: the last vector stored in part */
        rows->depthwise_rows_f32(out, pixels, copies, pixels, 1, pixels, job->offset, weight, taps, w->scales[o],
                                 bias);
    }
}

int tconv_compute_depthwise_same(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x,
                                 const float *bias, const tconv_pixel_dequant *dq, float *y,
                                 obx_parallel_for_fn par, void *runner, char *err, size_t err_len) {
    const size_t taps = w->kernel_positions, kw = g->kernel_w, in_w = g->in_w, n = padded_pixels(g);
    const size_t reach_h = (g->kernel_h - 1) * g->dilation_h, pixels = g->in_h * in_w, vectors = n / 16;
    /* the column masks, the tap offsets; the masked planes' shifts and lane masks */
    int32_t *mask = (int32_t *)tconv_thread_buffer(
        TCONV_BUFFER_IMAGE, kw * n + 2 * taps * sizeof(size_t) / sizeof(float) + taps * vectors / 2 + 4);
    if (!mask) {
        obx_set_error(err, err_len, "out of memory for the depthwise column masks");
        return -1;
    }
    size_t *offset = (size_t *)(mask + OBX_DIV_UP(kw * n, 2) * 2);
    ptrdiff_t *shift = (ptrdiff_t *)(offset + taps);
    uint16_t *lane_mask = (uint16_t *)(shift + taps);
    /* Worked out every call, serially, so without a division per pixel: a
     * p % in_w per mask and a test per lane had taken 2-3 us of a 576 @14x14
     * call, 8% of it at two threads. Column offset j's mask bits go into
     * lane_mask's row j first; the taps' rows are then built from the last
     * to the first, tap t from row t % kw <= t, not yet overwritten. */
    for (size_t j = 0; j < kw; j++) {
        const ptrdiff_t dj = (ptrdiff_t)(j * g->dilation_w) - (ptrdiff_t)g->pad_left;
        size_t column = 0;
        for (size_t v = 0; v < vectors; v++) {
            unsigned bits = 0;
            for (size_t l = 0; l < 16; l++) {
                const size_t p = 16 * v + l;
                const ptrdiff_t read = (ptrdiff_t)column + dj;
                const int inside = p < pixels && read >= 0 && read < (ptrdiff_t)in_w;
                mask[j * n + p] = inside ? -1 : 0;
                bits |= (unsigned)inside << l;
                if (++column == in_w) column = 0;
            }
            lane_mask[j * vectors + v] = (uint16_t)bits;
        }
    }
    /* The masked planes' lanes: a read whose column stays in its row (the
     * column mask) lands in the plane exactly when its row does, that is
     * when p + shift is in [0, pixels): lanes [lo, hi) of the flat run. */
    for (size_t t = taps; t-- > 0;) {
        const ptrdiff_t di = (ptrdiff_t)((t / kw) * g->dilation_h) - (ptrdiff_t)g->pad_top;
        const ptrdiff_t dj = (ptrdiff_t)((t % kw) * g->dilation_w) - (ptrdiff_t)g->pad_left;
        shift[t] = di * (ptrdiff_t)in_w + dj;
        const ptrdiff_t lo = -shift[t], hi = (ptrdiff_t)pixels - shift[t];
        for (size_t v = 0; v < vectors; v++) {
            const ptrdiff_t first = OBX_MIN(OBX_MAX(lo - (ptrdiff_t)(16 * v), (ptrdiff_t)0), (ptrdiff_t)16);
            const ptrdiff_t end = OBX_MIN(OBX_MAX(hi - (ptrdiff_t)(16 * v), (ptrdiff_t)0), (ptrdiff_t)16);
            const unsigned in_plane = (unsigned)((1u << end) - 1) & ~(unsigned)((1u << first) - 1);
            lane_mask[t * vectors + v] = (uint16_t)(lane_mask[(t % kw) * vectors + v] & in_plane);
        }
    }
    SameJob job = {.w = w, .g = g, .rows = obx_platform()->conv_rows, .bias = bias, .mask = mask, .offset = offset,
                   .shift = shift, .lane_mask = lane_mask};
    job.above = g->pad_top * in_w;
    /* The last vector's rows below the plane: up to reach_h - pad_top rows, and 16 more reads. */
    job.copy = OBX_DIV_UP(job.above + n + (reach_h - g->pad_top) * in_w + 16, 16) * 16;
    for (size_t t = 0; t < taps; t++) {
        const size_t i = t / kw, j = t % kw;
        /* copy j, row i dH - pad_top from the output's own */
        offset[t] = j * job.copy + job.above + i * g->dilation_h * in_w - g->pad_top * in_w;
    }
    job.channels_per_task = OBX_MAX((size_t)1, SAME_TASK_VALUES / n);
    const size_t tasks = OBX_DIV_UP(w->m, job.channels_per_task);
    tconv_run_images(g, w->m, x, y, dq, &job.img, &job.failed, par, runner, same_task, &job, tasks);
    if (job.failed) {
        obx_set_error(err, err_len, "out of memory for a depthwise plane");
        return -1;
    }
    return 0;
}
