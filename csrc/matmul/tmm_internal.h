/* Ternary matmul internals: the repacked weight layout and the per-ISA kernels.
 *
 * Layout (shared by every ISA, so obx_isa_force can switch paths at any time):
 * codes are stored unsigned, u = w + 1 in {0,1,2}, two bits each. K is cut
 * into blocks of TMM_KBLOCK = 128 and each block into four chunks of
 * TMM_CHUNK = 32 consecutive k. N is cut into panels of TMM_NR columns. For
 * panel p, K-block b and column r of the panel, 32 bytes at
 *     packed + ((p * kblocks + b) * TMM_NR + r) * 32
 * hold the block's 128 codes: bits 2s..2s+1 of byte j are the code of
 * k = 128 b + 32 s + j. One 32-byte load then yields, by a shift of 2s and a
 * mask, the 32 codes of chunk s in k order, one per byte. Padding (k >= K,
 * columns >= N) holds u = 1 (w = 0).
 *
 * Per-group scales: each group g of k in [g_begin, g_end) is computed over the
 * chunks [chunk_begin, chunk_end) that cover it. Kernels read activations for
 * a group from a "segment" buffer: the group's chunks laid out contiguously
 * with zeros at every k outside the group, so code values outside the group
 * never contribute. When all group boundaries fall on chunk boundaries the
 * segments are simply the zero-padded row itself (seg_offset = chunk_begin).
 */
#ifndef ONNXBIT_TMM_INTERNAL_H
#define ONNXBIT_TMM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "onnxbit/tmatmul.h"

#define TMM_CHUNK 32
#define TMM_KBLOCK 128
#define TMM_CHUNKS_PER_BLOCK 4
#define TMM_NR 8
/* How far ahead (bytes) the multiply kernels prefetch the panel's codes. One
 * row's codes stream from DRAM at M = 1; the hardware prefetcher alone left
 * the AVX-512 kernel at 0.62 ms for 4 MB (K = N = 4096, one thread, cold),
 * 512 B ahead gave 0.53, 1 KiB 0.47, 2 KiB 0.44, 4 KiB 0.42 ms (medians of
 * 200 calls over 100 weight copies, Sapphire Rapids VM). Reads past the end
 * of the weights are harmless: prefetches do not fault. */
#define TMM_CODE_PREFETCH 4096
/* A second prefetch, into L2 only, 32 KiB ahead: keeps more DRAM lines in
 * flight than the L1 one can (L1 fill buffers are few). AVX-512 multiply
 * kernel at M = 1, same weights as above: 0.387 -> 0.365 ms; 16 and 64 KiB
 * gave the same within noise. */
#define TMM_CODE_PREFETCH_L2 (8 * TMM_CODE_PREFETCH)
/* Most activation rows one kernel call handles. */
#define TMM_MR 4
/* Most rows the table-lookup integer kernel serves at once (one AVX2 int16 vector). */
#define TMM_LUT_ROWS 16
#define TMM_ALIGN 64
/* Columns of one block of the column-block layout (one AVX2 byte vector). */
#define TMM_GEMV_COLS 32
/* Most column blocks one single-row lookup task covers (its sums stay on the stack). */
#define TMM_GEMV_TASK_CBLOCKS 16
/* K-blocks per slab of the column-block layout: the slab's pair tables
 * (4 * 64 pairs * 32 bytes = 8 KiB) stay in L1 while a task's column blocks
 * stream past them. */
#define TMM_GEMV_SLAB_KBLOCKS 4

/* Byte offset of (column block cb, K-block b) in the column-block layout. */
static inline size_t tmm_gemv_offset(size_t kblocks, size_t cblocks, size_t cb, size_t b) {
    size_t b0 = b - b % TMM_GEMV_SLAB_KBLOCKS;
    size_t nk = kblocks - b0 < TMM_GEMV_SLAB_KBLOCKS ? kblocks - b0 : TMM_GEMV_SLAB_KBLOCKS;
    return (b0 * cblocks + cb * nk + (b - b0)) * TMM_GEMV_COLS * 32;
}

struct tmm_group {
    size_t k_begin, k_end;         /* the group's k range */
    size_t chunk_begin, chunk_end; /* chunks of the weights that cover it */
    size_t seg_offset;             /* chunk offset of its segment in a row buffer */
};

struct obx_tmm_weights {
    size_t k, n;
    size_t kblocks;   /* ceil(k / 128) */
    size_t n_panels;  /* ceil(n / TMM_NR) */
    size_t n_groups;  /* 1 unless scales are per group */
    size_t seg_chunks; /* chunks in one row's segment buffer */
    int segments_are_row; /* 1 when segments are the zero-padded row itself */
    size_t max_group_chunks; /* most chunks any group covers */
    float *scales;    /* [n_panels * TMM_NR][n_groups] */
    float *scales_pg; /* the same as [n_panels][n_groups][TMM_NR] */
    uint32_t *chunk_group; /* group of each chunk (kblocks * 4 entries) when segments_are_row */
    uint8_t *packed;  /* n_panels * kblocks * TMM_NR * 32 bytes, TMM_ALIGN aligned */
    struct tmm_group *groups;
    /* Column-block layout for the single-row table-lookup kernel, built for
     * one scale group when the platform's kernels have GEMV slots (NULL
     * otherwise),
     * from the same codes as packed. K-blocks are
     * cut into slabs of TMM_GEMV_SLAB_KBLOCKS; slab [b0, b0 + nk) holds, for
     * every column block cb (columns 32 cb ..), its nk K-blocks in turn, so a
     * task's column blocks are one contiguous stream per slab. For K-block b
     * of that slab and v < 32, the 32 bytes at
     *     gemv_packed + ((b0 * cblocks + cb * nk + b - b0) * 32 + v) * 32
     * hold one byte per column whose low nibble is u0 + 3 u1 for the codes of
     * k = 128 b + 4 v, +1 and whose high nibble is the same for k + 2, k + 3
     * (padding: u = 1, nibble 4). */
    uint8_t *gemv_packed;
    size_t gemv_cblocks; /* ceil(n / TMM_GEMV_COLS) */
};

static inline const uint8_t *tmm_panel(const struct obx_tmm_weights *w, size_t p) {
    return w->packed + p * w->kblocks * TMM_NR * 32;
}

/* Integer kernel: for rows i < rows (1..TMM_MR) and panel columns r < TMM_NR,
 *   usum[i * TMM_NR + r] = sum over chunks c in [chunk_begin, chunk_end), j < 32
 *                          of u(k = 32 c + j, r) * q[i][32 (c - chunk_begin) + j]
 * computed modulo 2^32 (the caller subtracts the activation sum, and the true
 * result of that fits int32, so wrap-around cancels exactly). */
typedef void (*tmm_i8_kernel_fn)(const uint8_t *panel, size_t kblocks, size_t rows,
                                 const int8_t *const *q, size_t chunk_begin, size_t chunk_end,
                                 uint32_t *usum);
/* Float kernel: sums[i * TMM_NR + r] = sum of w(k, r) * a[i][32 (c - chunk_begin) + j]
 * over the same range, w = u - 1, in float32 (any order). */
typedef void (*tmm_f32_kernel_fn)(const uint8_t *panel, size_t kblocks, size_t rows,
                                  const float *const *a, size_t chunk_begin, size_t chunk_end,
                                  float *sums);
/* Per-row activation quantization, exactly as tmatmul.h specifies: writes
 * q[0..k) and the scale s; returns 0 when the row holds NaN or Inf (q and s
 * are then unspecified). */
typedef int (*tmm_quantize_fn)(const float *a, size_t k, int8_t *q, float *s);
/* Many-row float path, where decoding once and reusing the floats across rows
 * pays: decode writes the weights of chunks [chunk_begin, chunk_end) as floats
 * -1/0/1, wbuf[r * span + 32 (c - chunk_begin) + j] with span = 32 * chunks;
 * dot then gives sums[i * TMM_NR + r] = sum_{t < span} a[i][t] * wbuf[r * span + t]
 * for rows i < rows (1..TMM_MR). */
/* One activation row against one panel over all scale groups: q is the row's
 * segment buffer (group g's chunk c at q + 32 (seg_offset + c - chunk_begin)),
 * qsum[g] its per-group activation sums and scales_pg the panel's scales as
 * [group][TMM_NR]. Computes, in group order
 * and exactly as tmatmul.h says,
 *     acc[r] = acc[r] + (float)isum_g[r] * scales_pg[g * TMM_NR + r]
 * starting from acc[r] = 0.0f. */
typedef void (*tmm_i8_groups_fn)(const uint8_t *panel, const int8_t *q,
                                 const struct tmm_group *groups, size_t n_groups,
                                 size_t max_group_chunks, const int32_t *qsum,
                                 const float *scales_pg, float *acc);
/* Float path with the scales folded into the weights: a[i] is row i's
 * segment buffer (as for the integer kernels) and
 *     sums[i * TMM_NR + r] = sum over groups g, k in g of
 *         a_i[k] * w(k, r) * scales_pg[g * TMM_NR + r]
 * (w * scale is exact: w is -1, 0 or 1). When segments_are_row,
 * decode_scaled writes the products w * scale of chunks [chunk_begin,
 * chunk_end) (chunk c in group chunk_group[c]) in the wbuf layout of decode. */
typedef void (*tmm_f32_scaled_fn)(const uint8_t *panel, size_t rows, const float *const *a,
                                  const struct tmm_group *groups, size_t n_groups,
                                  const float *scales_pg, float *sums);
typedef void (*tmm_f32_decode_scaled_fn)(const uint8_t *panel, size_t chunk_begin,
                                         size_t chunk_end, const uint32_t *chunk_group,
                                         const float *scales_pg, float *wbuf);
typedef void (*tmm_f32_decode_fn)(const uint8_t *panel, size_t chunk_begin, size_t chunk_end,
                                  float *wbuf);
/* Table-lookup integer kernel for a group of G = group_rows rows (8 or 16)
 * at once, whole K: qt holds, for every k < kblocks * 128, the G rows' int8
 * values as int16 (qt[k * G + i], zero past K and for padding rows), 32-byte
 * aligned. For panels p in [p_begin, p_end), columns r < TMM_NR and rows i < G,
 *   usum[((p - p_begin) * TMM_NR + r) * G + i] = sum_k u(k, p * TMM_NR + r) * qt[k * G + i]
 * modulo 2^32, as for the i8 kernel; usum is 32-byte aligned. */
typedef void (*tmm_i8_lut_fn)(const uint8_t *packed, size_t kblocks, size_t p_begin,
                              size_t p_end, size_t group_rows, const int16_t *qt,
                              uint32_t *usum);
typedef void (*tmm_f32_dot_fn)(const float *wbuf, size_t span, size_t rows,
                               const float *const *a, float *sums);
/* Single-row lookup kernel. gemv_tables writes 32 bytes for every pair
 * p < kblocks * 64 of the row's int8 values q (zero-padded to whole K-blocks),
 * 32-byte aligned. gemv then gives, for column blocks [cb_begin, cb_end) (at
 * most TMM_GEMV_TASK_CBLOCKS) and columns c < 32,
 *     sums[(cb - cb_begin) * 32 + c] = sum_k w(k, 32 cb + c) q[k] + 16384 kblocks
 * modulo 2^32 (every pair adds a bias of 256). */
/* Float GEMM path (TMM_PATH_F32_GEMM), register-blocked as MLAS and BLIS are,
 * vectorized over rows so the decoded weights are broadcast scalars:
 * gemm_decode writes K-block `block` (panel + b * TMM_NR * 32) as floats,
 * wdec[r * TMM_KBLOCK + t] = w(128 b + t, r) in {-1, 0, 1}. gemm then runs,
 * for rows i < width (a multiple of f32_gemm_lanes, at most f32_gemm_width)
 * of activations transposed as at[t * width + i], columns r < TMM_NR and
 * t = 0, 1, .. 127 in this order,
 *     acc[r * width + i] = fmaf(at[t * width + i], wdec[r * TMM_KBLOCK + t], acc[r * width + i])
 * (a single rounding each: the product is exact, w being -1, 0 or 1), so
 * every ISA gives the same bits as the scalar kernel. */
typedef void (*tmm_f32_gemm_decode_fn)(const uint8_t *block, float *wdec);
typedef void (*tmm_f32_gemm_fn)(const float *wdec, const float *at, size_t width, float *acc);
/* Pair form of the float GEMM for at most L / 2 rows, L = f32_gemm_lanes
 * (where one row block would be half padding): lane l = 2 i + j of a vector
 * holds row i for panel j of a pair. gemm_pair_decode writes K-block b of
 * panels j = 0, 1 (block1 NULL: zeros) interleaved,
 *     wdec2[(r * TMM_KBLOCK + t) * 2 + j] = w(128 b + t, column r of panel j);
 * gemm_pair then does, with at2[t * L + l] = row l / 2's activation, for
 * r < TMM_NR, l < L and t = 0, 1, .. 127 in this order,
 *     acc2[r * L + l] = fmaf(at2[t * L + l], wdec2[(r * TMM_KBLOCK + t) * 2 + l % 2], acc2[r * L + l])
 * the same chain per output as gemm. */
typedef void (*tmm_f32_gemm_pair_decode_fn)(const uint8_t *block0, const uint8_t *block1,
                                            float *wdec2);
typedef void (*tmm_f32_gemm_pair_fn)(const float *wdec2, const float *at2, float *acc2);
/* Register-blocked integer GEMM (TMM_PATH_I8_GEMM, one scale group), for
 * tiles of TMM_I8_GEMM_PANELS panels and a slab of K-blocks [b_begin, b_end):
 * i8_gemm_decode writes the codes of panels [0, panels) (panel v at
 * panel0 + v * kblocks * TMM_NR * 32; panels past `panels` as u = 0) as
 * bytes, one 64-byte vector per 8 consecutive k (t8) and panel v:
 *     wdec[((t8 - 16 b_begin) * TMM_I8_GEMM_PANELS + v) * 64 + 8 r + j]
 *         = u(8 t8 + j, column r of panel v)
 * for t8 in [16 b_begin, 16 b_end). i8_gemm then adds, for rows i < rows (1..
 * TMM_I8_GEMM_ROWS), panels v and columns r, the slab's
 *     sum_{t8 < t8_count, j < 8} wdec[(t8 * TMM_I8_GEMM_PANELS + v) * 64 + 8 r + j] * q[i][8 t8 + j]
 * modulo 2^32 to its running sums: those start at 0 when `first`, else from
 * carry (TMM_I8_GEMM_CARRY int32 in the kernel's own layout, 64-byte
 * aligned); with usum NULL the sums go back to carry for the next slab,
 * otherwise usum[(i * TMM_I8_GEMM_PANELS + v) * TMM_NR + r] receives them. */
#define TMM_I8_GEMM_PANELS 4
#define TMM_I8_GEMM_ROWS 6
#define TMM_I8_GEMM_CARRY (TMM_I8_GEMM_ROWS * TMM_I8_GEMM_PANELS * 16)
typedef void (*tmm_i8_gemm_decode_fn)(const uint8_t *panel0, size_t kblocks, size_t b_begin,
                                      size_t b_end, size_t panels, uint8_t *wdec);
typedef void (*tmm_i8_gemm_fn)(const uint8_t *wdec, size_t t8_count, size_t rows,
                               const int8_t *const *q, int32_t *carry, int first,
                               uint32_t *usum);
typedef void (*tmm_gemv_tables_fn)(const int8_t *q, size_t kblocks, uint8_t *tables);
typedef void (*tmm_gemv_fn)(const uint8_t *gemv_packed, size_t kblocks, size_t cblocks,
                            const uint8_t *tables, size_t cb_begin, size_t cb_end,
                            uint32_t *sums);

struct tmm_kernels {
    tmm_i8_kernel_fn i8;
    tmm_f32_kernel_fn f32;
    tmm_quantize_fn quantize;
    /* Optional (NULL: the driver calls i8 group by group). */
    tmm_i8_groups_fn i8_groups;
    /* Optional (NULL: the many-row float path uses f32 as well). */
    tmm_f32_decode_fn f32_decode;
    tmm_f32_dot_fn f32_dot;
    /* Optional (NULL: per-group float sums scaled in the driver). */
    tmm_f32_scaled_fn f32_scaled;
    tmm_f32_decode_scaled_fn f32_decode_scaled;
    /* Optional (NULL: many-row integer work goes through i8 as well). */
    tmm_i8_lut_fn i8_lut;
    /* Optional single-row lookup over the column-block layout (NULL: token
     * rows go through i8). Set only where it beats the multiply kernel. */
    tmm_gemv_tables_fn gemv_tables;
    tmm_gemv_fn gemv;
    /* Optional float GEMM (NULL: many float rows go through f32_decode/f32_dot).
     * lanes: rows of one vector; width: most rows one gemm call takes. */
    tmm_f32_gemm_decode_fn f32_gemm_decode;
    tmm_f32_gemm_fn f32_gemm;
    size_t f32_gemm_lanes, f32_gemm_width;
    /* Optional (NULL: few rows take a padded row block). */
    tmm_f32_gemm_pair_decode_fn f32_gemm_pair_decode;
    tmm_f32_gemm_pair_fn f32_gemm_pair;
    /* Optional (NULL: many token rows take the lookup or multiply kernels). */
    tmm_i8_gemm_decode_fn i8_gemm_decode;
    tmm_i8_gemm_fn i8_gemm;
};

/* Chunks decoded at once on the many-row float path: TMM_NR * 16 * 32 floats
 * = 16 KiB, L1-resident while every row of a task streams over it. */
#define TMM_DECODE_CHUNKS 16

extern const struct tmm_kernels tmm_kernels_scalar;
#if defined(ONNXBIT_X86)
extern const struct tmm_kernels tmm_kernels_avx2;
extern const struct tmm_kernels tmm_kernels_avxvnni;
extern const struct tmm_kernels tmm_kernels_avx512;
/* Shared by the AVX2, AVX-VNNI and AVX-512 tables. */
void tmm_f32_kernel_avx2(const uint8_t *panel, size_t kblocks, size_t rows,
                         const float *const *a, size_t chunk_begin, size_t chunk_end,
                         float *sums);
int tmm_quantize_row_avx2(const float *a, size_t k, int8_t *q, float *s);
void tmm_i8_groups_avx2(const uint8_t *panel, const int8_t *q, const struct tmm_group *groups,
                        size_t n_groups, size_t max_group_chunks, const int32_t *qsum,
                        const float *scales_pg, float *acc);
void tmm_f32_scaled_avx2(const uint8_t *panel, size_t rows, const float *const *a,
                         const struct tmm_group *groups, size_t n_groups, const float *scales_pg,
                         float *sums);
void tmm_f32_decode_scaled_avx2(const uint8_t *panel, size_t chunk_begin, size_t chunk_end,
                                const uint32_t *chunk_group, const float *scales_pg, float *wbuf);
void tmm_f32_decode_avx2(const uint8_t *panel, size_t chunk_begin, size_t chunk_end, float *wbuf);
void tmm_f32_dot_avx2(const float *wbuf, size_t span, size_t rows, const float *const *a,
                      float *sums);
void tmm_f32_gemm_decode_avx2(const uint8_t *block, float *wdec);
void tmm_f32_gemm_avx2(const float *wdec, const float *at, size_t width, float *acc);
void tmm_i8_lut_avx2(const uint8_t *packed, size_t kblocks, size_t p_begin, size_t p_end,
                     size_t group_rows, const int16_t *qt, uint32_t *usum);
/* Single-row lookup kernel (tmm_gemv_avx2.c), the GEMV slots of the AVX2 table. */
void tmm_gemv_tables_avx2(const int8_t *q, size_t kblocks, uint8_t *tables);
void tmm_gemv_avx2(const uint8_t *gemv_packed, size_t kblocks, size_t cblocks,
                   const uint8_t *tables, size_t cb_begin, size_t cb_end, uint32_t *sums);
#endif
#if defined(ONNXBIT_ARM64)
extern const struct tmm_kernels tmm_kernels_neon;
/* Integer kernel on SDOT (Armv8.2-A dot product), the rest shared with NEON. */
extern const struct tmm_kernels tmm_kernels_neon_dotprod;
void tmm_f32_kernel_neon(const uint8_t *panel, size_t kblocks, size_t rows,
                         const float *const *a, size_t chunk_begin, size_t chunk_end,
                         float *sums);
void tmm_f32_gemm_decode_neon(const uint8_t *block, float *wdec);
void tmm_f32_gemm_neon(const float *wdec, const float *at, size_t width, float *acc);
#endif

/* Validates b's codes and the scale values and repacks them for the shape
 * (already checked, buffers included) and the kernel table (whose optional
 * slots decide the extra layouts). */
obx_tmm_weights *tmm_prepack(const obx_tmm_shape *shape, const struct tmm_kernels *kern,
                             const uint8_t *b, const float *scales, size_t n_scales, char *err,
                             size_t err_len);

/* Scalar references of the float GEMM pair form (L = lanes). */
void tmm_f32_gemm_pair_decode_scalar(const uint8_t *block0, const uint8_t *block1, float *wdec2);
void tmm_f32_gemm_pair_scalar(size_t lanes, const float *wdec2, const float *at2, float *acc2);

/* Shared scalar quantizer (also the reference the SIMD quantizers must equal). */
int tmm_quantize_row_scalar(const float *a, size_t k, int8_t *q, float *s);

#endif
