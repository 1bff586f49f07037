/* The repacking behind obx_tmm_prepack: validate the packed codes and the
 * scale values once, at load time (the sizes were checked by tmm_shape.c),
 * and repack the codes into the compute layout of tmm_internal.h. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obx_common.h"
#include "tmm_internal.h"
#include "onnxbit/formats.h"
#include "onnxbit/weight_memory.h"

/* Decodes one file row into u = w + 1 codes. Returns the column of the first
 * invalid code, or k when the row is valid. The 2bit loop has no early exit
 * so it vectorizes; the rare invalid row is then searched again. */
static size_t decode_row_codes(int fmt, const uint8_t *row, size_t k, uint8_t *codes) {
    if (fmt == OBX_FMT_2BIT) {
        uint8_t any_invalid = 0;
        for (size_t i = 0; i < k; i++) {
            uint8_t u = (uint8_t)((row[i / 4] >> (2 * (i % 4))) & 3u);
            any_invalid |= (uint8_t)(u == 3);
            codes[i] = u;
        }
        if (!any_invalid) return k;
        for (size_t i = 0; i < k; i++)
            if (codes[i] == 3) return i;
        return k;
    }
    size_t bytes = obx_packed_row_bytes(fmt, k);
    for (size_t b = 0; b < bytes; b++) {
        unsigned v = row[b];
        if (v >= 243) return b * 5;
        for (size_t d = 0; d < 5 && b * 5 + d < k; d++) {
            codes[b * 5 + d] = (uint8_t)(v % 3);
            v /= 3;
        }
    }
    return k;
}

OBX_API void obx_tmm_free(obx_tmm_weights *w) {
    if (!w) return;
    obx_weight_free(w->packed);
    free(w->scales);
    obx_weight_free(w->scales_pg);
    free(w->chunk_group);
    free(w->groups);
    obx_weight_free(w->gemv_packed);
    free(w);
}

OBX_API size_t obx_tmm_k(const obx_tmm_weights *w) { return w ? w->k : 0; }
OBX_API size_t obx_tmm_n(const obx_tmm_weights *w) { return w ? w->n : 0; }

/* Every scale must be finite and > 0 (tmatmul.h); their count is the shape's. */
static int check_scale_values(const float *scales, size_t n_scales, char *err, size_t err_len) {
    if (n_scales > 0 && !scales) {
        obx_set_error(err, err_len, "scales is NULL");
        return -1;
    }
    for (size_t i = 0; i < n_scales; i++) {
        float s = scales[i];
        if (!isfinite(s) || !(s > 0.0f)) {
            obx_set_error(err, err_len, "scale %zu is %g; every scale must be finite and > 0", i,
                          (double)s);
            return -1;
        }
    }
    return 0;
}

static void plan_groups(obx_tmm_weights *w, size_t group_size) {
    size_t gs = group_size ? group_size : w->k;
    int aligned = (gs % TMM_CHUNK == 0) || w->n_groups <= 1;
    size_t offset = 0;
    for (size_t g = 0; g < w->n_groups; g++) {
        struct tmm_group *grp = &w->groups[g];
        grp->k_begin = g * gs;
        grp->k_end = OBX_MIN(w->k, (g + 1) * gs);
        grp->chunk_begin = grp->k_begin / TMM_CHUNK;
        grp->chunk_end = OBX_DIV_UP(grp->k_end, TMM_CHUNK);
        w->max_group_chunks = OBX_MAX(w->max_group_chunks, grp->chunk_end - grp->chunk_begin);
        if (aligned) {
            grp->seg_offset = grp->chunk_begin;
        } else {
            grp->seg_offset = offset;
            offset += grp->chunk_end - grp->chunk_begin;
        }
    }
    w->seg_chunks = aligned ? w->kblocks * TMM_CHUNKS_PER_BLOCK : offset;
    w->segments_are_row = aligned;
    if (aligned) {
        for (size_t c = 0; c < w->kblocks * TMM_CHUNKS_PER_BLOCK; c++) {
            size_t g = w->n_groups > 1 ? (c * TMM_CHUNK) / gs : 0;
            w->chunk_group[c] = (uint32_t)OBX_MIN(g, w->n_groups ? w->n_groups - 1 : 0);
        }
    }
}

/* Allocates the column-block layout (tmm_internal.h) of the single-row
 * lookup kernel, all padding (nibble 4 = codes u = 1, 1). That kernel serves
 * one scale group, on kernel tables with GEMV slots only (where it beats the
 * multiply kernel), so other weights and CPUs do not pay its memory. Returns
 * -1 when out of memory. */
static int alloc_gemv_layout(obx_tmm_weights *w, const struct tmm_kernels *kern) {
    if (w->n_groups != 1 || !kern->gemv) return 0;
    w->gemv_cblocks = OBX_DIV_UP(w->n, TMM_GEMV_COLS);
    size_t bytes = w->gemv_cblocks * w->kblocks * TMM_GEMV_COLS * 32;
    w->gemv_packed = obx_weight_alloc(bytes);
    if (!w->gemv_packed) return -1;
    memset(w->gemv_packed, 0x44, bytes);
    return 0;
}

/* Column col's codes (padded to whole K-blocks) into the column-block layout. */
static void fill_gemv_column(obx_tmm_weights *w, size_t col, const uint8_t *codes) {
    const size_t cb = col / TMM_GEMV_COLS, c = col % TMM_GEMV_COLS;
    for (size_t b = 0; b < w->kblocks; b++) {
        uint8_t *dst = w->gemv_packed + tmm_gemv_offset(w->kblocks, w->gemv_cblocks, cb, b) + c;
        const uint8_t *u = codes + b * TMM_KBLOCK;
        for (size_t v = 0; v < 32; v++, u += 4)
            dst[v * 32] = (uint8_t)((u[0] + 3 * u[1]) | ((u[2] + 3 * u[3]) << 4));
    }
}

obx_tmm_weights *tmm_prepack(const obx_tmm_shape *shape, const struct tmm_kernels *kern,
                             const uint8_t *b, const float *scales, size_t n_scales, char *err,
                             size_t err_len) {
    const int fmt = shape->fmt;
    const size_t k = shape->k, n = shape->n, n_groups = shape->n_groups;
    const size_t group_size = shape->group_size, row_bytes = shape->row_bytes;
    if (shape->b_bytes > 0 && !b) {
        obx_set_error(err, err_len, "packed weights pointer is NULL");
        return NULL;
    }
    if (check_scale_values(scales, n_scales, err, err_len) != 0) return NULL;

    obx_tmm_weights *w = calloc(1, sizeof *w);
    if (!w) goto oom;
    w->k = k;
    w->n = n;
    w->kblocks = OBX_DIV_UP(k, TMM_KBLOCK);
    w->n_panels = OBX_DIV_UP(n, TMM_NR);
    w->n_groups = n_groups;
    size_t n_padded = w->n_panels * TMM_NR;
    size_t packed_bytes = w->n_panels * w->kblocks * TMM_NR * 32;
    w->packed = obx_weight_alloc(packed_bytes);
    w->scales = malloc((n_padded * n_groups + 1) * sizeof(float));
    w->scales_pg = obx_weight_alloc((n_padded * n_groups + 1) * sizeof(float));
    w->groups = calloc(n_groups + 1, sizeof(struct tmm_group));
    w->chunk_group = calloc(w->kblocks * TMM_CHUNKS_PER_BLOCK + 1, sizeof(uint32_t));
    /* Codes of one row, padded with u = 1 (w = 0) to whole K blocks. */
    size_t padded_k = w->kblocks * TMM_KBLOCK;
    uint8_t *codes = malloc(padded_k + 1);
    if (!w->packed || !w->scales || !w->scales_pg || !w->groups || !w->chunk_group || !codes) {
        free(codes);
        goto oom;
    }
    plan_groups(w, group_size);
    if (alloc_gemv_layout(w, kern) != 0) {
        free(codes);
        goto oom;
    }

    /* Every pad code is u = 1 (w = 0): byte 0x55 holds four of them. */
    memset(w->packed, 0x55, packed_bytes);
    for (size_t col = 0; col < n; col++) {
        size_t bad = decode_row_codes(fmt, b + col * row_bytes, k, codes);
        if (bad < k) {
            obx_set_error(err, err_len,
                      "invalid %s code in packed weights at row %zu (output channel), column %zu "
                      "(k index)%s", obx_format_name(fmt), col, bad,
                      fmt == OBX_FMT_BASE3 ? ": byte >= 243" : ": 2-bit field equal to 3");
            free(codes);
            obx_tmm_free(w);
            return NULL;
        }
        memset(codes + k, 1, padded_k - k);
        if (w->gemv_packed) fill_gemv_column(w, col, codes);
        uint8_t *panel = w->packed + (col / TMM_NR) * w->kblocks * TMM_NR * 32;
        size_t r = col % TMM_NR;
        for (size_t blk = 0; blk < w->kblocks; blk++) {
            uint8_t *dst = panel + (blk * TMM_NR + r) * 32;
            const uint8_t *c = codes + blk * TMM_KBLOCK;
            for (size_t j = 0; j < 32; j++)
                dst[j] = (uint8_t)(c[j] | (c[32 + j] << 2) | (c[64 + j] << 4) | (c[96 + j] << 6));
        }
    }
    free(codes);

    for (size_t col = 0; col < n_padded; col++) {
        for (size_t g = 0; g < n_groups; g++) {
            float s = 1.0f;
            if (col < n) {
                if (group_size) s = scales[col * n_groups + g];
                else s = n_scales == 1 ? scales[0] : scales[col];
            }
            w->scales[col * n_groups + g] = s;
            w->scales_pg[((col / TMM_NR) * n_groups + g) * TMM_NR + col % TMM_NR] = s;
        }
    }
    return w;

oom:
    obx_set_error(err, err_len, "out of memory while repacking %zu x %zu ternary weights", k, n);
    obx_tmm_free(w);
    return NULL;
}
