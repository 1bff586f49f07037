/* The generic codec row routine (codec_internal.h) and the three row
 * operations it runs: decode, encode and ternarize-and-pack. */
#include "codec_internal.h"

int64_t obx_codec_run_row(const obx_codec_row_op *op, size_t k, size_t *first_bad) {
    size_t full = k / obx_codes_per_byte(op->fmt), done = full * obx_codes_per_byte(op->fmt);
    size_t offset = 0;
    int64_t bad = 0;
    if (op->span(op, full)) bad = op->scalar(op, 0, done, first_bad);
    if (done < k) {
        int64_t tail = op->scalar(op, done, k - done, &offset);
        if (tail > 0 && bad == 0) *first_bad = done + offset;
        bad += tail;
    }
    return bad;
}

static int decode_span(const obx_codec_row_op *op, size_t n_bytes) {
    return op->kernels->decode[op->fmt](op->src, n_bytes, op->dst);
}

static int64_t decode_scalar(const obx_codec_row_op *op, size_t start, size_t count,
                             size_t *first) {
    const uint8_t *in = (const uint8_t *)op->src + start / obx_codes_per_byte(op->fmt);
    return obx_codec_decode_row_scalar(op->fmt, in, count, (int8_t *)op->dst + start, first);
}

obx_codec_row_op obx_codec_decode_op(const obx_codec_kernels *kernels, int fmt,
                                     const uint8_t *in, int8_t *out) {
    return (obx_codec_row_op){decode_span, decode_scalar, kernels, fmt, in, out, 0.0f};
}

static int encode_span(const obx_codec_row_op *op, size_t n_bytes) {
    return op->kernels->encode[op->fmt](op->src, n_bytes, op->dst);
}

static int64_t encode_scalar(const obx_codec_row_op *op, size_t start, size_t count,
                             size_t *first) {
    uint8_t *out = (uint8_t *)op->dst + start / obx_codes_per_byte(op->fmt);
    return obx_codec_encode_row_scalar(op->fmt, (const int8_t *)op->src + start, count, out,
                                       first);
}

obx_codec_row_op obx_codec_encode_op(const obx_codec_kernels *kernels, int fmt, const int8_t *w,
                                     uint8_t *out) {
    return (obx_codec_row_op){encode_span, encode_scalar, kernels, fmt, w, out, 0.0f};
}

static int ternarize_span(const obx_codec_row_op *op, size_t n_bytes) {
    return op->kernels->ternarize[op->fmt](op->src, n_bytes, op->inv_scale, op->dst);
}

static int64_t ternarize_scalar(const obx_codec_row_op *op, size_t start, size_t count,
                                size_t *first) {
    uint8_t *out = (uint8_t *)op->dst + start / obx_codes_per_byte(op->fmt);
    return obx_codec_ternarize_row_scalar(op->fmt, (const float *)op->src + start, count,
                                          op->inv_scale, out, first);
}

obx_codec_row_op obx_codec_ternarize_op(const obx_codec_kernels *kernels, int fmt,
                                        const float *w, float inv_scale, uint8_t *out) {
    return (obx_codec_row_op){ternarize_span, ternarize_scalar, kernels, fmt, w, out, inv_scale};
}
