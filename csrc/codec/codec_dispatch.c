/* Public codec entry points: argument checks and the walk over rows (each row
 * through obx_codec_run_row with the platform's kernels).
 *
 * Bad arguments (unknown fmt, NULL buffers for a non-empty tensor, a scale
 * count other than 1 or rows) return -1 and write nothing; obx_packed_row_bytes
 * returns 0 for an unknown fmt. first_bad may be NULL when the caller only
 * wants the count.
 *
 * Invalid encoder inputs (outside {-1,0,1}) and non-finite weights in the fused
 * quantizer are packed as the ternary value 0; invalid packed codes decode to 0. */
#include "codec_internal.h"
#include "isa/platform.h"
#include "obx_common.h"

/* Running tally of bad elements: their number and the first global offset. */
typedef struct {
    int64_t count;
    size_t first;
} bad_tally;

static void tally_add(bad_tally *t, int64_t count, size_t base, size_t offset) {
    if (count <= 0) return;
    if (t->count == 0) t->first = base + offset;
    t->count += count;
}

/* Runs one row starting at global element `base` and tallies its bad elements. */
static void run_row(bad_tally *t, const obx_codec_row_op *op, size_t k, size_t base) {
    size_t offset = 0;
    int64_t bad = obx_codec_run_row(op, k, &offset);
    tally_add(t, bad, base, offset);
}

static int64_t tally_finish(const bad_tally *t, size_t *first_bad) {
    if (t->count > 0 && first_bad != NULL) *first_bad = t->first;
    return t->count;
}

/* Decodes one logical row of k codes starting at global element `base`. */
static void decode_row_i8(const obx_codec_kernels *kern, int fmt, const uint8_t *in, size_t k,
                          int8_t *out, size_t base, bad_tally *t) {
    obx_codec_row_op op = obx_codec_decode_op(kern, fmt, in, out);
    run_row(t, &op, k, base);
}

OBX_API int64_t obx_decode_i8(int fmt, const uint8_t *packed, size_t rows, size_t k,
                              int8_t *out, size_t *first_bad) {
    if (!obx_format_known(fmt)) return -1;
    if (rows == 0 || k == 0) return 0;
    if (packed == NULL || out == NULL) return -1;
    const obx_codec_kernels *kern = obx_platform()->codec;
    size_t row_bytes = obx_packed_row_bytes(fmt, k);
    bad_tally t = {0, 0};
    if (k % obx_codes_per_byte(fmt) == 0) {
        /* no padding: the whole tensor is one run of codes */
        decode_row_i8(kern, fmt, packed, rows * k, out, 0, &t);
    } else {
        for (size_t r = 0; r < rows; r++)
            decode_row_i8(kern, fmt, packed + r * row_bytes, k, out + r * k, r * k, &t);
    }
    return tally_finish(&t, first_bad);
}

/* Decode chunk: whole packed bytes, small enough for a stack buffer of codes. */
enum { F32_CHUNK_BYTES = 512 };

static void decode_row_f32(const obx_codec_kernels *kern, int fmt, const uint8_t *in, size_t k,
                           float scale, float *out, size_t base, bad_tally *t) {
    int8_t codes[F32_CHUNK_BYTES * 5];
    size_t per = obx_codes_per_byte(fmt), row_bytes = OBX_DIV_UP(k, per);
    for (size_t byte = 0; byte < row_bytes; byte += F32_CHUNK_BYTES) {
        size_t start = byte * per;
        size_t n_codes = OBX_MIN((size_t)F32_CHUNK_BYTES * per, k - start);
        decode_row_i8(kern, fmt, in + byte, n_codes, codes, base + start, t);
        kern->scale_i8_f32(codes, n_codes, scale, out + start);
    }
}

OBX_API int64_t obx_decode_f32(int fmt, const uint8_t *packed, size_t rows, size_t k,
                               const float *scales, size_t n_scales, float *out,
                               size_t *first_bad) {
    if (!obx_format_known(fmt)) return -1;
    if (rows == 0 || k == 0) return 0;
    if (packed == NULL || out == NULL || scales == NULL) return -1;
    if (n_scales != 1 && n_scales != rows) return -1;
    const obx_codec_kernels *kern = obx_platform()->codec;
    size_t row_bytes = obx_packed_row_bytes(fmt, k);
    bad_tally t = {0, 0};
    if (k % obx_codes_per_byte(fmt) == 0 && n_scales == 1) {
        decode_row_f32(kern, fmt, packed, rows * k, scales[0], out, 0, &t);
    } else {
        for (size_t r = 0; r < rows; r++)
            decode_row_f32(kern, fmt, packed + r * row_bytes, k, scales[n_scales == 1 ? 0 : r],
                           out + r * k, r * k, &t);
    }
    return tally_finish(&t, first_bad);
}

static void encode_row(const obx_codec_kernels *kern, int fmt, const int8_t *w, size_t k,
                       uint8_t *out, size_t base, bad_tally *t) {
    obx_codec_row_op op = obx_codec_encode_op(kern, fmt, w, out);
    run_row(t, &op, k, base);
}

OBX_API int64_t obx_encode_i8(int fmt, const int8_t *w, size_t rows, size_t k, uint8_t *out,
                              size_t *first_bad) {
    if (!obx_format_known(fmt)) return -1;
    if (rows == 0 || k == 0) return 0;
    if (w == NULL || out == NULL) return -1;
    const obx_codec_kernels *kern = obx_platform()->codec;
    size_t row_bytes = obx_packed_row_bytes(fmt, k);
    bad_tally t = {0, 0};
    if (k % obx_codes_per_byte(fmt) == 0) {
        encode_row(kern, fmt, w, rows * k, out, 0, &t);
    } else {
        for (size_t r = 0; r < rows; r++)
            encode_row(kern, fmt, w + r * k, k, out + r * row_bytes, r * k, &t);
    }
    return tally_finish(&t, first_bad);
}

static void ternarize_row(const obx_codec_kernels *kern, int fmt, const float *w, size_t k,
                          float inv_scale, uint8_t *out, size_t base, bad_tally *t) {
    obx_codec_row_op op = obx_codec_ternarize_op(kern, fmt, w, inv_scale, out);
    run_row(t, &op, k, base);
}

OBX_API int64_t obx_ternarize_pack_f32(int fmt, const float *w, size_t rows, size_t k,
                                       const float *inv_scales, size_t n_inv_scales,
                                       uint8_t *out, size_t *first_bad) {
    if (!obx_format_known(fmt)) return -1;
    if (rows == 0 || k == 0) return 0;
    if (w == NULL || out == NULL || inv_scales == NULL) return -1;
    if (n_inv_scales != 1 && n_inv_scales != rows) return -1;
    const obx_codec_kernels *kern = obx_platform()->codec;
    size_t row_bytes = obx_packed_row_bytes(fmt, k);
    bad_tally t = {0, 0};
    if (k % obx_codes_per_byte(fmt) == 0 && n_inv_scales == 1) {
        ternarize_row(kern, fmt, w, rows * k, inv_scales[0], out, 0, &t);
    } else {
        for (size_t r = 0; r < rows; r++)
            ternarize_row(kern, fmt, w + r * k, k, inv_scales[n_inv_scales == 1 ? 0 : r],
                          out + r * row_bytes, r * k, &t);
    }
    return tally_finish(&t, first_bad);
}

OBX_API void obx_abs_sum_rows_f32(const float *w, size_t rows, size_t k, double *out) {
    if (out == NULL || (w == NULL && rows > 0 && k > 0)) return;
    const obx_codec_kernels *kern = obx_platform()->codec;
    for (size_t r = 0; r < rows; r++) out[r] = k == 0 ? 0.0 : kern->abs_sum(w + r * k, k);
}
