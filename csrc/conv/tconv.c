/* Ternary convolution: prepacking, the choice of path (tconv.h; calls enter
 * through tconv_entry.c), and the
 * im2col path in (c, kh, kw) order that weights with K-grouped scales take
 * (the others: tconv_channels_last.c, tconv_depthwise.c). The im2col matrix
 * is never built whole: each task fills a tile of output positions (bounded
 * scratch), multiplies it by its group's prepacked weights and writes the
 * tile back in NCHW order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conv/tconv_internal.h"
#include "obx_common.h"
#include "onnxbit/codec.h"
#include "onnxbit/formats.h"
#include "onnxbit/isa.h"

/* Bytes of one im2col tile: small enough for L2, large enough that a tile
 * amortizes streaming the group's weights. */
enum { TCONV_TILE_BYTES = 256 * 1024, TCONV_MIN_TILE_ROWS = 8, TCONV_PARALLEL_TILES = 4, TCONV_CHANNELS_LAST_MIN = 8 };

OBX_API void obx_tconv_free(obx_tconv_weights *w) {
    if (!w) return;
    if (w->groups)
        for (size_t g = 0; g < w->group; g++) obx_tmm_free(w->groups[g]);
    if (w->taps)
        for (size_t i = 0; i < w->group * w->kernel_positions; i++) obx_tmm_free(w->taps[i]);
    free(w->groups);
    free(w->taps);
    free(w->codes);
    free(w->weights);
    free(w->scales);
    free(w->lane_codes);
    free(w->lane_correction);
    free(w->lane_tap_correction);
    free(w->lane_scales);
    free(w);
}

OBX_API int obx_tconv_is_depthwise(const obx_tconv_weights *w) { return w && w->codes != NULL; }

int8_t *tconv_decode_codes(int fmt, const uint8_t *b, size_t m, size_t k, char *err, size_t err_len) {
    int8_t *codes = malloc(m * k + 1);
    if (!codes) {
        obx_set_error(err, err_len, "out of memory");
        return NULL;
    }
    size_t first_bad = 0;
    int64_t bad = obx_decode_i8(fmt, b, m, k, codes, &first_bad);
    if (bad != 0) {
        obx_set_error(err, err_len, "%lld invalid code(s) in B, the first at element %zu", (long long)bad,
                      first_bad);
        free(codes);
        return NULL;
    }
    return codes;
}

static int prepack_depthwise(obx_tconv_weights *w, int fmt, const uint8_t *b, const float *scales,
                             size_t n_scales, char *err, size_t err_len) {
    int8_t *rows = tconv_decode_codes(fmt, b, w->m, w->k, err, err_len); /* [m][taps] as stored */
    if (!rows) return -1;
    w->codes = malloc(w->m * w->k * sizeof(int32_t) + 1);
    w->weights = malloc(w->m * w->k * sizeof(float) + 1);
    w->scales = malloc(w->m * sizeof(float));
    if (!w->codes || !w->weights || !w->scales) {
        free(rows);
        obx_set_error(err, err_len, "out of memory");
        return -1;
    }
    /* Tap-major: the depthwise kernel combines one tap of every channel at once. */
    for (size_t o = 0; o < w->m; o++)
        for (size_t t = 0; t < w->k; t++) {
            w->codes[t * w->m + o] = rows[o * w->k + t];
            w->weights[t * w->m + o] = (float)rows[o * w->k + t];
        }
    free(rows);
    for (size_t i = 0; i < w->m; i++) {
        float s = scales[n_scales == 1 ? 0 : i];
        if (!(isfinite(s) && s > 0.0f)) {
            obx_set_error(err, err_len, "scale %zu = %g must be finite and > 0", n_scales == 1 ? 0 : i,
                          (double)s);
            return -1;
        }
        w->scales[i] = s;
    }
    return 0;
}

OBX_API obx_tconv_weights *obx_tconv_prepack(int fmt, const uint8_t *b, size_t b_bytes,
                                             const obx_conv_params *params, const float *scales,
                                             size_t n_scales, int64_t group_size, char *err, size_t err_len) {
    return obx_tconv_prepack_act(fmt, b, b_bytes, params, scales, n_scales, group_size, OBX_ACT_NONE, err, err_len);
}

OBX_API obx_tconv_weights *obx_tconv_prepack_act(int fmt, const uint8_t *b, size_t b_bytes,
                                                 const obx_conv_params *params, const float *scales,
                                                 size_t n_scales, int64_t group_size, int act_quant, char *err,
                                                 size_t err_len) {
    if (obx_conv_params_check(params, err, err_len) != 0) return NULL;
    size_t positions = 1;
    for (size_t i = 0; i < params->spatial_rank; i++) positions *= (size_t)params->weight_shape[2 + i];
    size_t m = (size_t)params->weight_shape[0], cg = (size_t)params->weight_shape[1];
    obx_tmm_shape shape;
    if (obx_tmm_shape_init(&shape, fmt, (int64_t)(cg * positions), (int64_t)m, group_size, err, err_len) != 0 ||
        obx_tmm_shape_check_buffers(&shape, b_bytes, n_scales, err, err_len) != 0)
        return NULL;
    obx_tconv_weights *w = calloc(1, sizeof *w);
    if (!w) {
        obx_set_error(err, err_len, "out of memory");
        return NULL;
    }
    w->m = m;
    w->cg = cg;
    w->group = (size_t)params->group;
    w->m_per_group = m / w->group;
    w->kernel_positions = positions;
    w->k = cg * positions;
    const int depthwise = cg == 1 && w->group > 1 && shape.n_groups == 1;
    /* The pixel-lanes path takes stride-1 convs on CPUs with AVX2 or AVX-512
     * VNNI, and 2-D stride-2 ones (dilation 1) with act_quant 1 and 2; its
     * layout (a byte per weight) is kept beside the others there (another ISA
     * may be forced later). */
    int lanes_cpu = obx_isa_supported(OBX_ISA_AVX2); /* AVX-512 VNNI CPUs have it too (isa.c) */
    int lanes_phases = lanes_cpu && params->spatial_rank == 2;
    for (size_t i = 0; i < params->spatial_rank; i++) {
        lanes_cpu = lanes_cpu && params->strides[i] == 1;
        lanes_phases = lanes_phases && params->strides[i] == 2 && params->dilations[i] == 1;
    }
    if (act_quant == OBX_ACT_INT8_PIXEL) {
        if (shape.n_groups != 1) {
            obx_set_error(err, err_len,
                          "act_quant = 3 (per input pixel) needs one weight scale group along K, got "
                          "group_size = %lld for K = %zu",
                          (long long)group_size, w->k);
            obx_tconv_free(w);
            return NULL;
        }
        /* A depthwise conv's per-tap integer dots are single products: the
         * direct float kernel on X quantized and dequantized per pixel gives
         * the same bits (tconv_depthwise_pixel.c) at a fraction of the
         * cost of one tiny matmul per tap (144 channels at 56x56: 99 ms
         * against 1 ms for fp32 Conv). */
        w->pixel_depthwise = depthwise;
        if ((depthwise ? prepack_depthwise(w, fmt, b, scales, n_scales, err, err_len)
                       : tconv_prepack_per_pixel(w, fmt, b, scales, n_scales, err, err_len)) != 0) {
            obx_tconv_free(w);
            return NULL;
        }
        /* Ungrouped convs also run on the pixel-lanes kernel, the per-tap
         * matmuls staying for the other ISAs. */
        if (!depthwise && w->group == 1 && lanes_cpu) {
            int8_t *codes = tconv_decode_codes(fmt, b, m, w->k, err, err_len);
            if (!codes || tconv_prepack_pixel_lanes(w, codes, scales, n_scales, err, err_len) != 0) {
                free(codes);
                obx_tconv_free(w);
                return NULL;
            }
            free(codes);
        }
        return w;
    }
    /* Depthwise: one input channel per output channel; the direct kernel
     * applies one scale per channel, so K-grouped scales take the im2col path. */
    if (depthwise) {
        if (prepack_depthwise(w, fmt, b, scales, n_scales, err, err_len) != 0) {
            obx_tconv_free(w);
            return NULL;
        }
        return w;
    }
    w->groups = calloc(w->group, sizeof *w->groups);
    if (!w->groups) {
        obx_set_error(err, err_len, "out of memory");
        obx_tconv_free(w);
        return NULL;
    }
    /* The pixel-lanes layout (int8 activations, one K group). */
    const int lanes = (act_quant == OBX_ACT_INT8_TOKEN || act_quant == OBX_ACT_INT8_STATIC) &&
                      shape.n_groups == 1 && (lanes_cpu || lanes_phases);
    /* One scale group along K: K can be reordered to (kh, kw, c) for the
     * channels-last path (K-groups would be cut apart). Its rows are channel
     * runs, one call each: runs of fewer than TCONV_CHANNELS_LAST_MIN values
     * cost more than they save (a 7x7 stem conv on 3 channels measured 1.4x
     * slower that way, 8 channels even, 16 and up faster). */
    const int channels_last = shape.n_groups == 1 && cg >= TCONV_CHANNELS_LAST_MIN;
    /* Both layouts start from the codes, decoded once. */
    int8_t *codes = lanes || channels_last ? tconv_decode_codes(fmt, b, m, w->k, err, err_len) : NULL;
    if ((lanes || channels_last) && !codes) {
        obx_tconv_free(w);
        return NULL;
    }
    if (lanes && tconv_prepack_pixel_lanes(w, codes, scales, n_scales, err, err_len) != 0) {
        free(codes);
        obx_tconv_free(w);
        return NULL;
    }
    uint8_t *reordered = NULL;
    size_t row_bytes = shape.row_bytes;
    if (channels_last) {
        reordered = tconv_taps_first_2bit(codes, m, cg, positions, err, err_len);
        if (!reordered) {
            free(codes);
            obx_tconv_free(w);
            return NULL;
        }
        w->channels_last = 1;
        b = reordered;
        fmt = OBX_FMT_2BIT;
        row_bytes = OBX_DIV_UP(w->k, 4);
    }
    free(codes);
    size_t scales_per_group = n_scales == 1 ? 1 : w->m_per_group * shape.n_groups;
    for (size_t g = 0; g < w->group; g++) {
        const float *group_scales = n_scales == 1 ? scales : scales + g * scales_per_group;
        char inner[384] = "";
        w->groups[g] = obx_tmm_prepack(fmt, b + g * w->m_per_group * row_bytes,
                                       w->m_per_group * row_bytes, (int64_t)w->k, (int64_t)w->m_per_group,
                                       group_scales, scales_per_group, group_size, inner, sizeof inner);
        if (!w->groups[g]) {
            obx_set_error(err, err_len, "group %zu (output channels %zu..%zu): %s", g, g * w->m_per_group,
                          (g + 1) * w->m_per_group - 1, inner);
            free(reordered);
            obx_tconv_free(w);
            return NULL;
        }
    }
    free(reordered);
    return w;
}

/* ---- im2col path --------------------------------------------------------- */

typedef struct ConvJob {
    const obx_tconv_weights *w;
    const obx_conv_geometry *g;
    const float *x;
    const float *bias;
    float *y;
    int act_quant;
    float act_scale; /* act_quant 2 */
    size_t tile_rows, tiles_per_plane;
    obx_parallel_for_fn inner_par; /* used when the tasks are too few to share the threads */
    void *inner_runner;
    int failed;
    char err[256];
} ConvJob;

/* Row of the im2col matrix for output position (oh, ow) of one image and group. */
static void fill_im2col_row(const obx_conv_geometry *g, const float *group_x, size_t cg, size_t oh, size_t ow,
                            float *row) {
    const ptrdiff_t h0 = (ptrdiff_t)(oh * g->stride_h) - (ptrdiff_t)g->pad_top;
    const ptrdiff_t w0 = (ptrdiff_t)(ow * g->stride_w) - (ptrdiff_t)g->pad_left;
    const ptrdiff_t in_h = (ptrdiff_t)g->in_h, in_w = (ptrdiff_t)g->in_w;
    const size_t kw = g->kernel_w, dw = g->dilation_w;
    /* Most windows lie inside the row: then the kW values need no checks. */
    const int inside = w0 >= 0 && w0 + (ptrdiff_t)((kw - 1) * dw) < in_w;
    for (size_t c = 0; c < cg; c++) {
        const float *plane = group_x + c * g->in_h * g->in_w;
        for (size_t i = 0; i < g->kernel_h; i++) {
            ptrdiff_t ih = h0 + (ptrdiff_t)(i * g->dilation_h);
            if (ih < 0 || ih >= in_h) {
                memset(row, 0, kw * sizeof *row);
            } else if (inside) {
                const float *line = plane + ih * in_w + w0;
                for (size_t j = 0; j < kw; j++) row[j] = line[j * dw];
            } else {
                const float *line = plane + ih * in_w;
                for (size_t j = 0; j < kw; j++) {
                    ptrdiff_t iw = w0 + (ptrdiff_t)(j * dw);
                    row[j] = iw >= 0 && iw < in_w ? line[iw] : 0.0f;
                }
            }
            row += kw;
        }
    }
}

/* A pointwise conv (1x1, stride 1, no padding) reads X [C, positions] as it
 * is: its im2col tile is a transposed block, copied in small squares so both
 * sides stay in cache lines. */
static int is_pointwise(const obx_conv_geometry *g) {
    return g->kernel_h == 1 && g->kernel_w == 1 && g->stride_h == 1 && g->stride_w == 1 && g->pad_top == 0 &&
           g->pad_left == 0 && g->out_h == g->in_h && g->out_w == g->in_w;
}

static void fill_pointwise_tile(const float *group_x, size_t cg, size_t positions, size_t first, size_t rows,
                                float *tile) {
    enum { BLOCK = 8 };
    for (size_t r0 = 0; r0 < rows; r0 += BLOCK) {
        size_t r1 = OBX_MIN(rows, r0 + BLOCK);
        for (size_t c0 = 0; c0 < cg; c0 += BLOCK) {
            size_t c1 = OBX_MIN(cg, c0 + BLOCK);
            for (size_t c = c0; c < c1; c++) {
                const float *src = group_x + c * positions + first;
                for (size_t r = r0; r < r1; r++) tile[r * cg + c] = src[r];
            }
        }
    }
}

static void run_tile(void *arg, size_t index) {
    ConvJob *job = arg;
    const obx_tconv_weights *w = job->w;
    const obx_conv_geometry *g = job->g;
    const size_t positions = g->out_h * g->out_w;
    const size_t plane = index / job->tiles_per_plane; /* image * group + group index */
    const size_t image = plane / w->group, grp = plane % w->group;
    const size_t first = (index % job->tiles_per_plane) * job->tile_rows;
    const size_t rows = OBX_MIN(job->tile_rows, positions - first);
    float *tile = tconv_thread_buffer(TCONV_BUFFER_TILE, rows * w->k + rows * w->m_per_group);
    if (!tile) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    float *out = tile + rows * w->k;
    const float *group_x = job->x + (image * g->channels + grp * w->cg) * g->in_h * g->in_w;
    if (is_pointwise(g)) {
        fill_pointwise_tile(group_x, w->cg, positions, first, rows, tile);
    } else {
        for (size_t r = 0; r < rows; r++) {
            size_t p = first + r;
            fill_im2col_row(g, group_x, w->cg, p / g->out_w, p % g->out_w, tile + r * w->k);
        }
    }
    char err[256] = "";
    const float *bias = job->bias ? job->bias + grp * w->m_per_group : NULL;
    if (obx_tmm_compute_scaled(w->groups[grp], tile, rows, bias, job->act_quant, job->act_scale, out,
                               job->inner_par, job->inner_runner, err, sizeof err) != 0) {
        if (!__atomic_exchange_n(&job->failed, 1, __ATOMIC_RELAXED)) memcpy(job->err, err, sizeof err);
        return;
    }
    float *y = job->y + (image * w->m + grp * w->m_per_group) * positions + first;
    /* Channel-major: each output plane's run is written contiguously (the tile's reads stay in cache). */
    for (size_t o = 0; o < w->m_per_group; o++)
        for (size_t r = 0; r < rows; r++) y[o * positions + r] = out[r * w->m_per_group + o];
}

static void run_serially(obx_task_fn fn, void *arg, size_t count) {
    for (size_t i = 0; i < count; i++) fn(arg, i);
}

/* The path a call takes (tconv.h), for a call tconv_entry.c has checked. */
int tconv_compute_paths(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x, const float *bias,
                        int act_quant, float act_scale, float *y, obx_parallel_for_fn par, void *runner, char *err,
                        size_t err_len) {
    const size_t positions = g->out_h * g->out_w;
    if (w->taps) {
        if (tconv_pixel_lanes_applies(w, g, act_quant))
            return tconv_compute_pixel_lanes(w, g, x, bias, act_quant, act_scale, y, par, runner, err, err_len);
        return tconv_compute_per_pixel(w, g, x, bias, y, par, runner, err, err_len);
    }
    if (w->pixel_depthwise) return tconv_compute_depthwise_per_pixel(w, g, x, bias, y, par, runner, err, err_len);
    if (w->codes) return tconv_compute_depthwise(w, g, x, bias, act_quant, act_scale, y, par, runner, err, err_len);
    if (tconv_pixel_lanes_applies(w, g, act_quant))
        return tconv_compute_pixel_lanes(w, g, x, bias, act_quant, act_scale, y, par, runner, err, err_len);
    if (w->channels_last)
        return tconv_compute_channels_last(w, g, x, bias, act_quant, act_scale, y, par, runner, err, err_len);
    size_t rows = OBX_MAX((size_t)1, TCONV_TILE_BYTES / (w->k * sizeof(float)));
    /* Enough tiles for the threads to share when the batch and groups are few. */
    size_t planes = g->batch * w->group;
    if (planes < TCONV_PARALLEL_TILES)
        rows = OBX_MIN(rows, OBX_MAX((size_t)TCONV_MIN_TILE_ROWS,
                                     OBX_DIV_UP(positions, TCONV_PARALLEL_TILES / planes)));
    rows = OBX_MIN(rows, positions);
    ConvJob job = {w, g, x, bias, y, act_quant, act_scale, rows, OBX_DIV_UP(positions, rows), NULL, NULL, 0, ""};
    size_t tasks = planes * job.tiles_per_plane;
    if (par && tasks >= 2) {
        par(runner, run_tile, &job, tasks);
    } else {
        job.inner_par = par;
        job.inner_runner = runner;
        run_serially(run_tile, &job, tasks);
    }
    if (job.failed) {
        obx_set_error(err, err_len, "%s", job.err[0] ? job.err : "out of memory for an im2col tile");
        return -1;
    }
    return 0;
}
