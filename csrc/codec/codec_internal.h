/* Internal contract between the codec entry points (codec_dispatch.c,
 * codec_columns.c) and the per-ISA kernels (codec_scalar.c, codec_avx2.c,
 * codec_avx512.c, codec_neon.c). The kernel table in use comes from the
 * platform table (isa/platform.h).
 *
 * Kernels work on spans of whole packed bytes (obx_format_codes_per_byte codes
 * a byte) and only say whether anything was invalid. obx_codec_run_row
 * handles row tails and, for any row that reported a problem, reruns the
 * scalar row functions, which count, locate and zero the bad elements. Every
 * ISA therefore produces byte-identical output, valid or not. */
#ifndef ONNXBIT_CODEC_INTERNAL_H
#define ONNXBIT_CODEC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "onnxbit/codec.h"
#include "onnxbit/isa.h"

/* Span kernels, one per format (indexed by OBX_FMT_*). */
typedef struct obx_codec_kernels {
    /* n_bytes packed bytes -> codes_per_byte * n_bytes values in {-1,0,1};
     * nonzero when an invalid code was seen (output then unspecified). */
    int (*decode[OBX_FMT_COUNT])(const uint8_t *in, size_t n_bytes, int8_t *out);
    /* codes_per_byte * n_bytes values -> n_bytes packed bytes; nonzero when an
     * input was outside {-1,0,1}. */
    int (*encode[OBX_FMT_COUNT])(const int8_t *w, size_t n_bytes, uint8_t *out);
    /* clip(rint(w * inv_scale), -1, 1) packed; nonzero when an input was not finite. */
    int (*ternarize[OBX_FMT_COUNT])(const float *w, size_t n_bytes, float inv_scale,
                                    uint8_t *out);
    /* out[i] = (float)q[i] * scale */
    void (*scale_i8_f32)(const int8_t *q, size_t n, float scale, float *out);
    /* Sum of |w| in double in the canonical order of obx_codec_abs_sum_scalar. */
    double (*abs_sum)(const float *w, size_t n);
} obx_codec_kernels;

extern const obx_codec_kernels obx_codec_kernels_scalar;
#if defined(ONNXBIT_X86)
extern const obx_codec_kernels obx_codec_kernels_avx2;
extern const obx_codec_kernels obx_codec_kernels_avx512;
#endif
#if defined(ONNXBIT_ARM64) && defined(__aarch64__)
extern const obx_codec_kernels obx_codec_kernels_neon;
#endif

/* Scalar row functions: exact counting and locating of invalid elements.
 * They return the number of bad elements and store the in-row offset of the
 * first one in *first_bad (untouched when there is none). Bad elements become 0. */
int64_t obx_codec_decode_row_scalar(int fmt, const uint8_t *in, size_t k, int8_t *out,
                                    size_t *first_bad);
int64_t obx_codec_encode_row_scalar(int fmt, const int8_t *w, size_t k, uint8_t *out,
                                    size_t *first_bad);
int64_t obx_codec_ternarize_row_scalar(int fmt, const float *w, size_t k, float inv_scale,
                                       uint8_t *out, size_t *first_bad);

/* Codes one packed byte of fmt holds (fmt known). */
static inline size_t obx_codes_per_byte(int fmt) { return (size_t)obx_format_codes_per_byte(fmt); }

/* One row of one codec operation, for obx_codec_run_row: which kernels, the
 * row's source and destination (element 0 of the row; whole bytes for the
 * packed side) and the quantizer's scale. */
typedef struct obx_codec_row_op obx_codec_row_op;
struct obx_codec_row_op {
    /* The SIMD span kernel over the row's first n_bytes packed bytes. */
    int (*span)(const obx_codec_row_op *op, size_t n_bytes);
    /* The scalar row function over `count` elements from element `start` (a
     * byte boundary); returns the bad elements, first one's offset in *first. */
    int64_t (*scalar)(const obx_codec_row_op *op, size_t start, size_t count, size_t *first);
    const obx_codec_kernels *kernels;
    int fmt;
    const void *src;
    void *dst;
    float inv_scale;
};

obx_codec_row_op obx_codec_decode_op(const obx_codec_kernels *kernels, int fmt,
                                     const uint8_t *in, int8_t *out);
obx_codec_row_op obx_codec_encode_op(const obx_codec_kernels *kernels, int fmt, const int8_t *w,
                                     uint8_t *out);
obx_codec_row_op obx_codec_ternarize_op(const obx_codec_kernels *kernels, int fmt,
                                        const float *w, float inv_scale, uint8_t *out);

/* Runs one row of k elements: the SIMD span kernel over the whole packed
 * bytes, the scalar rerun of those bytes when the kernel flagged anything
 * (it counts, locates and zeroes), and the scalar function on the tail.
 * Returns the number of bad elements; *first_bad gets the row offset of the
 * first one (untouched when there is none). */
int64_t obx_codec_run_row(const obx_codec_row_op *op, size_t k, size_t *first_bad);

/* Canonical summation order, shared by every ISA so results are bit-identical:
 * eight double accumulators, element i of each full block of eight going to
 * lane i % 8, combined as ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)), then the
 * remaining n % 8 elements added one by one. */
double obx_codec_abs_sum_scalar(const float *w, size_t n);

/* Bulk helpers shared by the SIMD paths for base3, where a table beats
 * arithmetic: no validation (callers check bytes < 243 / inputs themselves). */
void obx_codec_base3_decode_lut(const uint8_t *in, size_t n_bytes, int8_t *out);
/* codes (w + 1, already checked to be in {0,1,2}) -> packed base3 bytes. */
void obx_codec_base3_pack_codes(const uint8_t *codes, size_t n_bytes, uint8_t *out);

#endif
