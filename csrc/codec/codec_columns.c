/* Column path of the codecs: packs the columns of a row-major W [k, n] (the
 * layout of an ONNX MatMul weight) as the rows of W^T without materialising
 * W^T, and sums |W| per column.
 *
 * Packing walks W in tiles of OBX_COLS_CHUNK rows by OBX_COLS_TILE columns,
 * gathers each tile transposed into an L2-sized aligned buffer (the platform's
 * gather) and runs every column of it as one codec row (obx_codec_run_row). Chunks start on byte
 * boundaries, so the bytes are exactly those of obx_ternarize_pack_f32 on the
 * transposed copy, on every ISA.
 *
 * Bad arguments return -1 and write nothing, as in codec_dispatch.c; so does
 * a failure to allocate the tile buffer. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec_columns.h"
#include "codec_internal.h"
#include "isa/platform.h"
#include "obx_common.h"

void obx_cols_gather_scalar(const float *w, size_t stride, size_t rows, size_t cols, float *tile) {
    for (size_t i = 0; i < rows; i++)
        for (size_t c = 0; c < cols; c++) tile[c * OBX_COLS_CHUNK + i] = w[i * stride + c];
}

enum { FLOATS_PER_LINE = 64 / sizeof(float) };

/* Width of the first tile: when every row of W starts at the same cache-line
 * offset (n a multiple of 16 floats), the first tile ends on a line boundary,
 * so later tiles read whole lines instead of sharing each boundary line with a
 * neighbouring tile, whose second read would miss. */
static size_t first_tile_width(const float *w, size_t n) {
    size_t misaligned = (size_t)(((uintptr_t)w % 64) / sizeof(float));
    if (n % FLOATS_PER_LINE != 0 || misaligned == 0) return OBX_MIN((size_t)OBX_COLS_TILE, n);
    return OBX_MIN((size_t)OBX_COLS_TILE - misaligned, n);
}

OBX_API int64_t obx_ternarize_pack_cols_f32(int fmt, const float *w, size_t k, size_t n,
                                            const float *inv_scales, size_t n_inv_scales,
                                            uint8_t *out, size_t *first_bad) {
    if (!obx_format_known(fmt)) return -1;
    if (k == 0 || n == 0) return 0;
    if (w == NULL || out == NULL || inv_scales == NULL) return -1;
    if (n_inv_scales != 1 && n_inv_scales != n) return -1;
    const struct obx_platform *platform = obx_platform();
    size_t per = obx_codes_per_byte(fmt), row_bytes = OBX_DIV_UP(k, per);
    float *tile = aligned_alloc(64, sizeof(float) * OBX_COLS_TILE * OBX_COLS_CHUNK);
    if (tile == NULL) return -1;
    int64_t bad_total = 0;
    size_t first = SIZE_MAX;
    for (size_t k0 = 0; k0 < k; k0 += OBX_COLS_CHUNK) {
        size_t rows = OBX_MIN((size_t)OBX_COLS_CHUNK, k - k0);
        const float *panel = w + k0 * n;
        uint8_t *out_chunk = out + k0 / per;
        for (size_t j0 = 0, cols = first_tile_width(w, n); j0 < n;
             j0 += cols, cols = OBX_MIN((size_t)OBX_COLS_TILE, n - j0)) {
            platform->cols_gather(panel + j0, n, rows, cols, tile);
            for (size_t c = 0; c < cols; c++) {
                size_t j = j0 + c, offset = 0;
                float inv = inv_scales[n_inv_scales == 1 ? 0 : j];
                obx_codec_row_op op = obx_codec_ternarize_op(
                    platform->codec, fmt, tile + c * OBX_COLS_CHUNK, inv, out_chunk + j * row_bytes);
                int64_t bad = obx_codec_run_row(&op, rows, &offset);
                if (bad > 0) {
                    /* row-major index in W; the smallest over all tiles is the first */
                    size_t at = (k0 + offset) * n + j;
                    if (at < first) first = at;
                    bad_total += bad;
                }
            }
        }
    }
    free(tile);
    if (bad_total > 0 && first_bad != NULL) *first_bad = first;
    return bad_total;
}

/* Columns summed per pass over the rows: wide blocks read long runs of each
 * row (2048 columns ran 1.6 times faster than 512 on a Zen1 core); their
 * lanes live on the heap.
 * Should that allocation fail, a narrow block on the stack does the same sums. */
enum { SUM_BLOCK_COLUMNS = 2048, SUM_FALLBACK_COLUMNS = 128 };

/* Sums columns in blocks of `width`, lanes holding 8 * width doubles. */
static void abs_sum_cols_blocked(const float *w, size_t k, size_t n, double *out, double *lanes,
                                 size_t width) {
    for (size_t j0 = 0; j0 < n; j0 += width) {
        size_t cols = OBX_MIN(width, n - j0);
        const float *block = w + j0;
        double *sum = out + j0;
        memset(lanes, 0, sizeof(double) * 8 * width);
        size_t i = 0;
        for (; i + 8 <= k; i += 8)
            for (size_t l = 0; l < 8; l++) {
                const float *row = block + (i + l) * n;
                double *acc = lanes + l * width;
                for (size_t c = 0; c < cols; c++) acc[c] += fabs((double)row[c]);
            }
        const double *l0 = lanes, *l1 = lanes + width, *l2 = lanes + 2 * width,
                     *l3 = lanes + 3 * width, *l4 = lanes + 4 * width, *l5 = lanes + 5 * width,
                     *l6 = lanes + 6 * width, *l7 = lanes + 7 * width;
        for (size_t c = 0; c < cols; c++)
            sum[c] = ((l0[c] + l4[c]) + (l1[c] + l5[c])) + ((l2[c] + l6[c]) + (l3[c] + l7[c]));
        for (; i < k; i++) {
            const float *row = block + i * n;
            for (size_t c = 0; c < cols; c++) sum[c] += fabs((double)row[c]);
        }
    }
}

/* Each column is summed in the canonical order of obx_codec_abs_sum_scalar
 * (row i of a whole block of eight to lane i % 8, lanes combined pairwise,
 * leftover rows added in order), so out[j] equals obx_abs_sum_rows_f32 on
 * column j, bit for bit. Rows are read contiguously; the loops over columns
 * vectorize without changing any column's order of additions. */
OBX_API void obx_abs_sum_cols_f32(const float *w, size_t k, size_t n, double *out) {
    if (out == NULL || (w == NULL && k > 0 && n > 0)) return;
    size_t width = OBX_MIN((size_t)SUM_BLOCK_COLUMNS, n);
    double *lanes = width > SUM_FALLBACK_COLUMNS ? malloc(sizeof(double) * 8 * width) : NULL;
    if (lanes != NULL) {
        abs_sum_cols_blocked(w, k, n, out, lanes, width);
        free(lanes);
    } else {
        double stack_lanes[8 * SUM_FALLBACK_COLUMNS];
        abs_sum_cols_blocked(w, k, n, out, stack_lanes, SUM_FALLBACK_COLUMNS);
    }
}
