/* Public codec entry points: argument checks, row/tail bookkeeping and the
 * choice of kernel table for the active ISA.
 *
 * Bad arguments (unknown fmt, NULL buffers for a non-empty tensor, a scale
 * count other than 1 or rows) return -1 and write nothing; obx_packed_row_bytes
 * returns 0 for an unknown fmt. first_bad may be NULL when the caller only
 * wants the count.
 *
 * Invalid encoder inputs (outside {-1,0,1}) and non-finite weights in the fused
 * quantizer are packed as the ternary value 0; invalid packed codes decode to 0. */
#include "codec_internal.h"
#include "obx_common.h"

static const obx_codec_kernels *const kernel_tables[OBX_ISA_COUNT] = {
    [OBX_ISA_SCALAR] = &obx_codec_kernels_scalar,
#if defined(ONNXBIT_X86)
    [OBX_ISA_AVX2] = &obx_codec_kernels_avx2,
    [OBX_ISA_AVX512] = &obx_codec_kernels_avx512,
#endif
#if defined(ONNXBIT_ARM64) && defined(__aarch64__)
    [OBX_ISA_NEON] = &obx_codec_kernels_neon,
#endif
};

const obx_codec_kernels *obx_codec_active_kernels(void) {
    int isa = obx_isa_active();
    /* Python refuses to run when selection failed; C callers get the scalar path. */
    if (isa < 0 || isa >= OBX_ISA_COUNT || kernel_tables[isa] == NULL)
        return &obx_codec_kernels_scalar;
    return kernel_tables[isa];
}

static int known_format(int fmt) { return fmt == OBX_FMT_2BIT || fmt == OBX_FMT_BASE3; }

static size_t codes_per_byte(int fmt) { return fmt == OBX_FMT_2BIT ? 4 : 5; }

OBX_API size_t obx_packed_row_bytes(int fmt, size_t k) {
    if (!known_format(fmt)) return 0;
    return OBX_DIV_UP(k, codes_per_byte(fmt));
}

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

static int64_t tally_finish(const bad_tally *t, size_t *first_bad) {
    if (t->count > 0 && first_bad != NULL) *first_bad = t->first;
    return t->count;
}

/* Decodes one logical row of k codes starting at global element `base`. */
static void decode_row_i8(const obx_codec_kernels *kern, int fmt, const uint8_t *in, size_t k,
                          int8_t *out, size_t base, bad_tally *t) {
    size_t per = codes_per_byte(fmt), full = k / per, done = full * per;
    size_t offset = 0;
    int64_t n;
    int flagged = fmt == OBX_FMT_2BIT ? kern->decode_2bit(in, full, out)
                                      : kern->decode_base3(in, full, out);
    if (flagged) {
        n = obx_codec_decode_row_scalar(fmt, in, done, out, &offset);
        tally_add(t, n, base, offset);
    }
    if (done < k) {
        n = obx_codec_decode_row_scalar(fmt, in + full, k - done, out + done, &offset);
        tally_add(t, n, base + done, offset);
    }
}

OBX_API int64_t obx_decode_i8(int fmt, const uint8_t *packed, size_t rows, size_t k,
                              int8_t *out, size_t *first_bad) {
    if (!known_format(fmt)) return -1;
    if (rows == 0 || k == 0) return 0;
    if (packed == NULL || out == NULL) return -1;
    const obx_codec_kernels *kern = obx_codec_active_kernels();
    size_t row_bytes = obx_packed_row_bytes(fmt, k);
    bad_tally t = {0, 0};
    if (k % codes_per_byte(fmt) == 0) {
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
    size_t per = codes_per_byte(fmt), row_bytes = OBX_DIV_UP(k, per);
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
    if (!known_format(fmt)) return -1;
    if (rows == 0 || k == 0) return 0;
    if (packed == NULL || out == NULL || scales == NULL) return -1;
    if (n_scales != 1 && n_scales != rows) return -1;
    const obx_codec_kernels *kern = obx_codec_active_kernels();
    size_t row_bytes = obx_packed_row_bytes(fmt, k);
    bad_tally t = {0, 0};
    if (k % codes_per_byte(fmt) == 0 && n_scales == 1) {
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
    size_t per = codes_per_byte(fmt), full = k / per, done = full * per;
    size_t offset = 0;
    int64_t n;
    int flagged = fmt == OBX_FMT_2BIT ? kern->encode_2bit(w, full, out)
                                      : kern->encode_base3(w, full, out);
    if (flagged) {
        n = obx_codec_encode_row_scalar(fmt, w, done, out, &offset);
        tally_add(t, n, base, offset);
    }
    if (done < k) {
        n = obx_codec_encode_row_scalar(fmt, w + done, k - done, out + full, &offset);
        tally_add(t, n, base + done, offset);
    }
}

OBX_API int64_t obx_encode_i8(int fmt, const int8_t *w, size_t rows, size_t k, uint8_t *out,
                              size_t *first_bad) {
    if (!known_format(fmt)) return -1;
    if (rows == 0 || k == 0) return 0;
    if (w == NULL || out == NULL) return -1;
    const obx_codec_kernels *kern = obx_codec_active_kernels();
    size_t row_bytes = obx_packed_row_bytes(fmt, k);
    bad_tally t = {0, 0};
    if (k % codes_per_byte(fmt) == 0) {
        encode_row(kern, fmt, w, rows * k, out, 0, &t);
    } else {
        for (size_t r = 0; r < rows; r++)
            encode_row(kern, fmt, w + r * k, k, out + r * row_bytes, r * k, &t);
    }
    return tally_finish(&t, first_bad);
}

static void ternarize_row(const obx_codec_kernels *kern, int fmt, const float *w, size_t k,
                          float inv_scale, uint8_t *out, size_t base, bad_tally *t) {
    size_t per = codes_per_byte(fmt), full = k / per, done = full * per;
    size_t offset = 0;
    int64_t n;
    int flagged = fmt == OBX_FMT_2BIT ? kern->ternarize_2bit(w, full, inv_scale, out)
                                      : kern->ternarize_base3(w, full, inv_scale, out);
    if (flagged) {
        n = obx_codec_ternarize_row_scalar(fmt, w, done, inv_scale, out, &offset);
        tally_add(t, n, base, offset);
    }
    if (done < k) {
        n = obx_codec_ternarize_row_scalar(fmt, w + done, k - done, inv_scale, out + full,
                                           &offset);
        tally_add(t, n, base + done, offset);
    }
}

OBX_API int64_t obx_ternarize_pack_f32(int fmt, const float *w, size_t rows, size_t k,
                                       const float *inv_scales, size_t n_inv_scales,
                                       uint8_t *out, size_t *first_bad) {
    if (!known_format(fmt)) return -1;
    if (rows == 0 || k == 0) return 0;
    if (w == NULL || out == NULL || inv_scales == NULL) return -1;
    if (n_inv_scales != 1 && n_inv_scales != rows) return -1;
    const obx_codec_kernels *kern = obx_codec_active_kernels();
    size_t row_bytes = obx_packed_row_bytes(fmt, k);
    bad_tally t = {0, 0};
    if (k % codes_per_byte(fmt) == 0 && n_inv_scales == 1) {
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
    const obx_codec_kernels *kern = obx_codec_active_kernels();
    for (size_t r = 0; r < rows; r++) out[r] = k == 0 ? 0.0 : kern->abs_sum(w + r * k, k);
}
