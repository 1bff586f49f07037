/* Runs TernaryConv's pixel-lanes path with the AVX-512 kernel on emulated
 * intrinsics (emulated_avx512_pixel_lanes.c), or with argument "avxvnni" the
 * AVX-VNNI one on an emulated vpdpbusd (emulated_avxvnni_pixel_lanes.c), against the channels-last /
 * im2col path of the same library code on scalar kernels, bit for bit, on
 * random stride-1 convs: 1x1 (read in place or padded) and 3x3 (pads,
 * sometimes dilated), channel counts off multiples of 4, widths off
 * multiples of 16, batches, groups, act_quant 1 and 2 (a static scale that
 * clips and one that makes rounding ties) and 3 (ungrouped, against its
 * per-tap matmuls), all-zero windows, windows
 * holding NaN or Inf, with and without bias. Both paths go through
 * obx_tconv_compute_scaled; ONNXBIT_CONV_PATH picks the path and the
 * library's run counter proves the pixel-lanes one ran. Prints the count of
 * mismatches; exit status 0 when there are none. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv/tconv_internal.h"
#include "isa/platform.h"
#include "onnxbit/formats.h"
#include "onnxbit/isa.h"

extern const struct tconv_lanes_kernels emulated_tconv_lanes_avx512, emulated_tconv_lanes_avxvnni;

/* Linked instead of csrc/isa/platform.c: the scalar kernels everywhere and
 * the emulated kernel in the pixel-lanes slot, whatever this CPU has. */
static struct obx_platform emulated_platform = {
    OBX_ISA_SCALAR, &obx_codec_kernels_scalar, obx_cols_gather_scalar,
    &tmm_kernels_scalar, &tconv_rows_scalar, obx_crc32c_scalar,
    tmm_quantize_static_scalar, &emulated_tconv_lanes_avx512, &bf16_kernels_scalar};

const struct obx_platform *obx_platform(void) { return &emulated_platform; }
const char *obx_isa_error(void) { return ""; }

static size_t pick(size_t lo, size_t hi) { return lo + (size_t)rand() % (hi - lo + 1); }

struct conv_case {
    obx_conv_params params;
    size_t batch, channels, in_h, in_w;
    int act_quant;
    float static_scale;
    int ties;       /* inputs on a grid of 1/4 with static scale 2: x * s often lands on k + 1/2 */
    int non_finite; /* a few NaN / Inf pixels */
    int with_bias, per_channel_scales;
};

static struct conv_case random_case(int t) {
    struct conv_case c;
    memset(&c, 0, sizeof c);
    const int three_by_three = t % 2;
    const size_t group = rand() % 4 == 0 ? pick(2, 3) : 1;
    const size_t cg = pick(group > 1 ? 2 : 1, 21); /* 1 per group would be depthwise */
    const size_t m = group * pick(1, 14);
    const size_t kh = three_by_three ? 3 : 1, kw = kh;
    const size_t dilation = three_by_three && rand() % 5 == 0 ? 2 : 1;
    c.params.spatial_rank = 2;
    c.params.weight_shape[0] = (int64_t)m;
    c.params.weight_shape[1] = (int64_t)cg;
    c.params.weight_shape[2] = (int64_t)kh;
    c.params.weight_shape[3] = (int64_t)kw;
    c.params.group = (int64_t)group;
    c.params.strides[0] = c.params.strides[1] = 1;
    c.params.dilations[0] = c.params.dilations[1] = (int64_t)dilation;
    c.params.auto_pad = OBX_AUTO_PAD_NOTSET;
    /* 1x1: mostly unpadded (X read in place), sometimes padded (copied) */
    const int padded = three_by_three ? rand() % 4 != 0 : rand() % 3 == 0;
    for (int i = 0; i < 4; i++) c.params.pads[i] = padded ? (int64_t)pick(0, three_by_three ? 2 : 1) : 0;
    const size_t span = (kh - 1) * dilation + 1;
    c.batch = pick(1, 2);
    c.channels = group * cg;
    /* widths off (and sometimes on) multiples of 16, the window always fits */
    c.in_h = pick(span > 2 ? span - 2 : 1, 9) + (three_by_three ? 2 : 0);
    c.in_w = rand() % 6 == 0 ? 16 * pick(1, 2) : pick(span, 37);
    /* act_quant 3 (per input pixel) on ungrouped convs, against its per-tap matmuls */
    c.act_quant = group == 1 && rand() % 3 == 0 ? OBX_ACT_INT8_PIXEL
                  : rand() % 2                  ? OBX_ACT_INT8_TOKEN
                                                : OBX_ACT_INT8_STATIC;
    c.ties = c.act_quant == OBX_ACT_INT8_STATIC && rand() % 2;
    c.static_scale = c.ties ? 2.0f : 127.0f / 2.5f; /* 127 / 2.5 clips the largest inputs */
    c.non_finite = rand() % 4 == 0;
    c.with_bias = rand() % 2;
    c.per_channel_scales = rand() % 2;
    return c;
}

static float random_input(const struct conv_case *c, size_t i) {
    if (c->ties) return (float)((int)pick(0, 240) - 120) / 4.0f; /* up to |30|: clipped too */
    float v = (float)((double)rand() / RAND_MAX * 6.0 - 3.0);
    return i % 3 == 0 ? 20.0f * v : v; /* pixels of very different ranges: distinct window scales */
}

/* 1 when the two results agree: the same bits, or both NaN. */
static int same(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return memcmp(&a, &b, sizeof a) == 0;
}

static int compute(const obx_tconv_weights *w, const obx_conv_geometry *g, const float *x, const float *bias,
                   const struct conv_case *c, const char *path, float *y) {
    char err[256];
    setenv("ONNXBIT_CONV_PATH", path, 1);
    if (obx_tconv_compute_scaled(w, g, x, bias, c->act_quant, c->static_scale, y, NULL, NULL, err, sizeof err) != 0) {
        printf("%s compute failed: %s\n", path, err);
        return -1;
    }
    return 0;
}

/* Runs one case on both paths; returns its mismatching outputs, or -1 when a
 * call failed or the pixel-lanes path did not run. */
static long run_case(int t, const struct conv_case *c) {
    const obx_conv_params *p = &c->params;
    const size_t m = (size_t)p->weight_shape[0], cg = (size_t)p->weight_shape[1];
    const size_t k = cg * (size_t)(p->weight_shape[2] * p->weight_shape[3]), row_bytes = (k + 3) / 4;
    uint8_t *b = calloc(m * row_bytes, 1);
    for (size_t o = 0; o < m; o++)
        for (size_t i = 0; i < k; i++) b[o * row_bytes + i / 4] |= (uint8_t)(pick(0, 2) << (2 * (i % 4)));
    const size_t n_scales = c->per_channel_scales ? m : 1;
    float *scales = malloc(n_scales * sizeof(float)), *bias = malloc(m * sizeof(float));
    for (size_t i = 0; i < n_scales; i++) scales[i] = 0.05f + (float)pick(0, 100) / 37.0f;
    for (size_t i = 0; i < m; i++) bias[i] = (float)((int)pick(0, 200) - 100) / 13.0f;
    char err[256];
    obx_tconv_weights *w = obx_tconv_prepack_act(OBX_FMT_2BIT, b, m * row_bytes, p, scales, n_scales, 0,
                                                 c->act_quant, err, sizeof err);
    /* the library prepacks this layout only where the CPU has AVX2 or AVX-512 */
    if (w && !w->lane_codes) {
        int8_t *codes = tconv_decode_codes(OBX_FMT_2BIT, b, m, w->k, err, sizeof err);
        if (!codes || tconv_prepack_pixel_lanes(w, codes, scales, n_scales, err, sizeof err) != 0) {
            obx_tconv_free(w);
            w = NULL;
        }
        free(codes);
    }
    obx_conv_geometry g;
    const int64_t dims[4] = {(int64_t)c->batch, (int64_t)c->channels, (int64_t)c->in_h, (int64_t)c->in_w};
    if (!w || obx_conv_geometry_init(&g, p, dims, 4, err, sizeof err) != 0) {
        printf("case %d: setup failed: %s\n", t, err);
        obx_tconv_free(w);
        free(b), free(scales), free(bias);
        return -1;
    }
    const size_t x_count = c->batch * c->channels * c->in_h * c->in_w;
    const size_t y_count = c->batch * m * g.out_h * g.out_w;
    float *x = malloc(x_count * sizeof(float));
    for (size_t i = 0; i < x_count; i++) x[i] = random_input(c, i);
    /* an all-zero row of the first channels: windows with absmax 0 (floored at 1e-5) */
    if (c->in_h > 2)
        for (size_t ch = 0; ch < c->channels; ch++) memset(x + (ch * c->in_h + 1) * c->in_w, 0, c->in_w * sizeof(float));
    if (c->non_finite) {
        const float bad[3] = {NAN, INFINITY, -INFINITY};
        for (int i = 0; i < 3; i++) x[pick(0, x_count - 1)] = bad[i];
    }
    float *expected = malloc(y_count * sizeof(float)), *got = malloc(y_count * sizeof(float));
    for (size_t i = 0; i < y_count; i++) got[i] = expected[i] = -12345.0f; /* any output left unwritten shows */
    const float *b_or_null = c->with_bias ? bias : NULL;
    const size_t runs_before = obx_tconv_pixel_lanes_runs();
    long bad = -1;
    if (compute(w, &g, x, b_or_null, c, "channels_last", expected) == 0 &&
        compute(w, &g, x, b_or_null, c, "pixel_lanes", got) == 0) {
        if (obx_tconv_pixel_lanes_runs() != runs_before + 1) {
            printf("case %d: the pixel-lanes path did not run\n", t);
        } else {
            bad = 0;
            for (size_t i = 0; i < y_count; i++)
                if (!same(expected[i], got[i])) {
                    if (bad < 3)
                        printf("case %d (batch %zu C %zu %zux%zu M %zu kernel %lldx%lld group %lld act_quant %d) "
                               "output %zu: reference %a, pixel lanes %a\n",
                               t, c->batch, c->channels, c->in_h, c->in_w, m, (long long)p->weight_shape[2],
                               (long long)p->weight_shape[3], (long long)p->group, c->act_quant, i, expected[i],
                               got[i]);
                    bad++;
                }
        }
    }
    obx_tconv_free(w);
    free(b), free(scales), free(bias), free(x), free(expected), free(got);
    return bad;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "avxvnni") == 0) emulated_platform.conv_lanes = &emulated_tconv_lanes_avxvnni;
    srand(11);
    long mismatches = 0;
    int cases = 0;
    for (int t = 0; t < 160; t++) {
        const struct conv_case c = random_case(t);
        const long bad = run_case(t, &c);
        if (bad < 0) return 2;
        mismatches += bad;
        cases++;
    }
    printf("%d convs, %ld mismatches\n", cases, mismatches);
    return mismatches != 0;
}
