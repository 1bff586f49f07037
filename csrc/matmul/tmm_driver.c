/* obx_tmm_compute: activation preparation (int8 quantization or float copy
 * into segment buffers), task split for the parallel-for callback, kernel
 * dispatch and the scale/bias epilogue.
 *
 * The act_quant = 1 epilogue runs on exact integer sums from the kernels and
 * performs the IEEE operations of the tmatmul.h formula in its order, here in
 * plain C or (grouped AVX2 kernel) lane by lane in vectors, so the result is
 * bit-identical on every path. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obx_common.h"
#include "onnxbit/isa.h"
#include "tmm_internal.h"

/* Weight x row products per task: large enough to amortize scheduling, small
 * enough to give many-core machines work at M = 1. */
#define TMM_TASK_WORK ((size_t)1 << 20)
/* Rows of A a task covers at most; the rows' activations stay cache-resident
 * while the task walks its panels. */
#define TMM_TASK_ROWS 64
/* Rows per call of the decoded float kernel (f32_dot): its 3 x 4 register
 * tile (twelve accumulators) is the widest that fits sixteen AVX2 registers. */
#define TMM_DOT_ROWS 3
/* Rows per activation-preparation task. */
#define TMM_PREP_ROWS 8
/* The table-lookup integer kernel takes rows in groups of TMM_LUT_ROWS = 16,
 * then, for the 1..15 rows left: 12..15 as one zero-padded group of 16; 8..11
 * as a group of 8 (128-bit tables) and the rest through the multiply kernel;
 * 6..7 as one zero-padded group of 8; 1..5 through the multiply kernel, which
 * is faster for so few rows (thresholds measured on Zen1 at K = N = 4096), or
 * on the plain AVX2 table through the single-row lookup kernel (below). */
#define TMM_LUT_SMALL_ROWS 8
#define TMM_LUT_PAD_FROM 12
#define TMM_LUT_SMALL_PAD_FROM 6
/* Panels per table-lookup task: each K-block's tables are built once per task,
 * so a task needs many columns to amortize them; 64 panels keep the task's
 * int32 sums (64 * 8 * 16 * 4 bytes = 32 KiB) on the stack. */
#define TMM_LUT_PANELS 64

const struct tmm_kernels *tmm_active_kernels(void) {
    switch (obx_isa_active()) {
#if defined(ONNXBIT_X86)
    case OBX_ISA_AVX2: {
        static int has_vnni = -1;
        if (has_vnni < 0) has_vnni = obx_cpu_has_avxvnni();
        return has_vnni ? &tmm_kernels_avxvnni : &tmm_kernels_avx2;
    }
    case OBX_ISA_AVX512: return &tmm_kernels_avx512;
#endif
#if defined(ONNXBIT_ARM64)
    case OBX_ISA_NEON: return &tmm_kernels_neon;
#endif
    default: return &tmm_kernels_scalar;
    }
}

struct compute_job {
    const obx_tmm_weights *w;
    const struct tmm_kernels *kern;
    size_t m;
    int act_quant;
    size_t seg_elems;     /* elements in one row's segment buffer */
    int8_t *q_seg;        /* int8 path: m * seg_elems */
    float *a_seg;         /* float path: m * seg_elems */
    int32_t *qsum;        /* int8 path: m * n_groups activation sums */
    float *row_scale;     /* int8 path: s of each row */
    uint8_t *row_ok;      /* int8 path: 0 for rows holding NaN or Inf */
    int8_t *q_tmp;        /* int8 path, scattered segments: k bytes per prep task */
    const float *a;
    const float *bias;
    float *y;
    size_t rows_per_task, panels_per_task, row_blocks;
    int16_t *qt;          /* table-lookup path: row groups' int8 values as int16, k-major */
    size_t lut_groups;    /* table-lookup row groups; group g starts at row 16 g */
    size_t lut_last_rows; /* rows of the last group: 8 or TMM_LUT_ROWS */
    size_t row_start;     /* first row of the multiply path (rows before it use tables) */
    uint8_t *gemv_tables; /* single-row lookup path: each row's pair tables */
    size_t gemv_task_cblocks; /* single-row lookup path: column blocks per task */
};

/* ---- activation preparation ------------------------------------------- */

static void prepare_row_i8(const struct compute_job *job, size_t row, int8_t *q_tmp) {
    const obx_tmm_weights *w = job->w;
    const float *a = job->a + row * w->k;
    int8_t *seg = job->q_seg + row * job->seg_elems;
    int32_t *qsum = job->qsum + row * w->n_groups;
    memset(seg, 0, job->seg_elems);
    int8_t *q = w->segments_are_row ? seg : q_tmp;
    float s = 1.0f;
    int ok = job->kern->quantize(a, w->k, q, &s);
    job->row_ok[row] = (uint8_t)ok;
    job->row_scale[row] = s;
    if (!ok) {
        /* The kernels still run on this row; give them defined input. */
        memset(q, 0, w->k);
    }
    for (size_t g = 0; g < w->n_groups; g++) {
        const struct tmm_group *grp = &w->groups[g];
        int32_t sum = 0; /* |sum| <= 128 k < 2^31 */
        for (size_t k = grp->k_begin; k < grp->k_end; k++) sum += q[k];
        qsum[g] = sum;
        if (!w->segments_are_row) {
            int8_t *dst = seg + grp->seg_offset * TMM_CHUNK;
            size_t base = grp->chunk_begin * TMM_CHUNK;
            memcpy(dst + (grp->k_begin - base), q + grp->k_begin, grp->k_end - grp->k_begin);
        }
    }
}

static void prepare_row_f32(const struct compute_job *job, size_t row) {
    const obx_tmm_weights *w = job->w;
    const float *a = job->a + row * w->k;
    float *seg = job->a_seg + row * job->seg_elems;
    memset(seg, 0, job->seg_elems * sizeof(float));
    for (size_t g = 0; g < w->n_groups; g++) {
        const struct tmm_group *grp = &w->groups[g];
        float *dst = seg + grp->seg_offset * TMM_CHUNK;
        size_t base = grp->chunk_begin * TMM_CHUNK;
        memcpy(dst + (grp->k_begin - base), a + grp->k_begin,
               (grp->k_end - grp->k_begin) * sizeof(float));
    }
}

static void prepare_task(void *arg, size_t index) {
    const struct compute_job *job = arg;
    size_t begin = index * TMM_PREP_ROWS, end = OBX_MIN(job->m, begin + TMM_PREP_ROWS);
    for (size_t row = begin; row < end; row++) {
        if (job->act_quant == OBX_ACT_INT8_TOKEN)
            prepare_row_i8(job, row, job->q_tmp ? job->q_tmp + index * job->w->k : NULL);
        else
            prepare_row_f32(job, row);
    }
}

/* The tmatmul.h epilogue for one scale group, in the contract's float32 order
 * (as panel_rows_i8 computes it for any number of groups). */
static inline float finish_one_group(const struct compute_job *job, int32_t isum, size_t col,
                                     float s) {
    float acc = 0.0f;
    acc = acc + (float)isum * job->w->scales[col];
    float v = acc / s;
    if (job->bias) v = v + job->bias[col];
    return v;
}

/* ---- matmul tasks -------------------------------------------------------- */

static void panel_rows_i8(const struct compute_job *job, size_t p, size_t row0, size_t rows) {
    const obx_tmm_weights *w = job->w;
    const size_t n_groups = w->n_groups;
    const uint8_t *panel = tmm_panel(w, p);
    const int8_t *q[TMM_MR];
    uint32_t usum[TMM_MR * TMM_NR];
    float acc[TMM_MR * TMM_NR];
    for (size_t i = 0; i < TMM_MR * TMM_NR; i++) acc[i] = 0.0f;
    for (size_t g = 0; g < n_groups; g++) {
        const struct tmm_group *grp = &w->groups[g];
        for (size_t i = 0; i < rows; i++)
            q[i] = job->q_seg + (row0 + i) * job->seg_elems + grp->seg_offset * TMM_CHUNK;
        job->kern->i8(panel, w->kblocks, rows, q, grp->chunk_begin, grp->chunk_end, usum);
        for (size_t i = 0; i < rows; i++) {
            uint32_t correction = (uint32_t)job->qsum[(row0 + i) * n_groups + g];
            for (size_t r = 0; r < TMM_NR; r++) {
                /* usum = sum (w + 1) q mod 2^32; the difference is the exact isum. */
                int32_t isum = (int32_t)(usum[i * TMM_NR + r] - correction);
                float scale = w->scales[(p * TMM_NR + r) * n_groups + g];
                acc[i * TMM_NR + r] = acc[i * TMM_NR + r] + (float)isum * scale;
            }
        }
    }
    size_t cols = OBX_MIN(TMM_NR, w->n - p * TMM_NR);
    for (size_t i = 0; i < rows; i++) {
        float *y = job->y + (row0 + i) * w->n + p * TMM_NR;
        if (!job->row_ok[row0 + i]) {
            for (size_t r = 0; r < cols; r++) y[r] = NAN;
            continue;
        }
        float s = job->row_scale[row0 + i];
        for (size_t r = 0; r < cols; r++) {
            float v = acc[i * TMM_NR + r] / s;
            if (job->bias) v = v + job->bias[p * TMM_NR + r];
            y[r] = v;
        }
    }
}

/* Per-group scales: one kernel call covers all groups of a row. */
static void panel_rows_i8_grouped(const struct compute_job *job, size_t p, size_t row0,
                                  size_t rows) {
    const obx_tmm_weights *w = job->w;
    const size_t n_groups = w->n_groups;
    size_t cols = OBX_MIN(TMM_NR, w->n - p * TMM_NR);
    float acc[TMM_NR];
    for (size_t i = row0; i < row0 + rows; i++) {
        float *y = job->y + i * w->n + p * TMM_NR;
        if (!job->row_ok[i]) {
            for (size_t r = 0; r < cols; r++) y[r] = NAN;
            continue;
        }
        job->kern->i8_groups(tmm_panel(w, p), job->q_seg + i * job->seg_elems, w->groups, n_groups,
                             w->max_group_chunks, job->qsum + i * n_groups,
                             w->scales_pg + p * n_groups * TMM_NR, acc);
        float s = job->row_scale[i];
        for (size_t r = 0; r < cols; r++) {
            float v = acc[r] / s;
            if (job->bias) v = v + job->bias[p * TMM_NR + r];
            y[r] = v;
        }
    }
}

/* Writes the float accumulators of `rows` rows of panel p to Y, plus bias. */
static void store_f32_rows(const struct compute_job *job, size_t p, size_t row0, size_t rows,
                           const float *acc) {
    const obx_tmm_weights *w = job->w;
    size_t cols = OBX_MIN(TMM_NR, w->n - p * TMM_NR);
    for (size_t i = 0; i < rows; i++) {
        float *y = job->y + (row0 + i) * w->n + p * TMM_NR;
        for (size_t r = 0; r < cols; r++) {
            float v = acc[i * TMM_NR + r];
            if (job->bias) v += job->bias[p * TMM_NR + r];
            y[r] = v;
        }
    }
}

static void panel_rows_f32(const struct compute_job *job, size_t p, size_t row0, size_t rows) {
    const obx_tmm_weights *w = job->w;
    const size_t n_groups = w->n_groups;
    const uint8_t *panel = tmm_panel(w, p);
    const float *a[TMM_MR];
    float sums[TMM_MR * TMM_NR];
    float acc[TMM_MR * TMM_NR];
    for (size_t i = 0; i < TMM_MR * TMM_NR; i++) acc[i] = 0.0f;
    for (size_t g = 0; g < n_groups; g++) {
        const struct tmm_group *grp = &w->groups[g];
        for (size_t i = 0; i < rows; i++)
            a[i] = job->a_seg + (row0 + i) * job->seg_elems + grp->seg_offset * TMM_CHUNK;
        job->kern->f32(panel, w->kblocks, rows, a, grp->chunk_begin, grp->chunk_end, sums);
        for (size_t i = 0; i < rows; i++)
            for (size_t r = 0; r < TMM_NR; r++) {
                float scale = w->scales[(p * TMM_NR + r) * n_groups + g];
                acc[i * TMM_NR + r] += sums[i * TMM_NR + r] * scale;
            }
    }
    store_f32_rows(job, p, row0, rows, acc);
}

/* Many-row float path: each stretch of TMM_DECODE_CHUNKS chunks of the panel
 * is decoded to floats once and reused by every row of the task. */
static void panel_rows_f32_decoded(const struct compute_job *job, size_t p, size_t row_begin,
                                   size_t row_end) {
    const obx_tmm_weights *w = job->w;
    const size_t n_groups = w->n_groups, rows_total = row_end - row_begin;
    const uint8_t *panel = tmm_panel(w, p);
    float wbuf[TMM_NR * TMM_DECODE_CHUNKS * TMM_CHUNK] __attribute__((aligned(TMM_ALIGN)));
    float acc[TMM_TASK_ROWS * TMM_NR], group_sum[TMM_TASK_ROWS * TMM_NR], sums[TMM_MR * TMM_NR];
    const float *a[TMM_MR];
    for (size_t i = 0; i < rows_total * TMM_NR; i++) acc[i] = 0.0f;
    for (size_t g = 0; g < n_groups; g++) {
        const struct tmm_group *grp = &w->groups[g];
        for (size_t i = 0; i < rows_total * TMM_NR; i++) group_sum[i] = 0.0f;
        for (size_t cb = grp->chunk_begin; cb < grp->chunk_end; cb += TMM_DECODE_CHUNKS) {
            size_t ce = OBX_MIN(grp->chunk_end, cb + TMM_DECODE_CHUNKS);
            size_t span = (ce - cb) * TMM_CHUNK;
            job->kern->f32_decode(panel, cb, ce, wbuf);
            for (size_t row = 0; row < rows_total; row += TMM_DOT_ROWS) {
                size_t rows = OBX_MIN(TMM_DOT_ROWS, rows_total - row);
                for (size_t i = 0; i < rows; i++)
                    a[i] = job->a_seg + (row_begin + row + i) * job->seg_elems +
                           (grp->seg_offset + (cb - grp->chunk_begin)) * TMM_CHUNK;
                job->kern->f32_dot(wbuf, span, rows, a, sums);
                for (size_t i = 0; i < rows; i++)
                    for (size_t r = 0; r < TMM_NR; r++)
                        group_sum[(row + i) * TMM_NR + r] += sums[i * TMM_NR + r];
            }
        }
        for (size_t i = 0; i < rows_total; i++)
            for (size_t r = 0; r < TMM_NR; r++)
                acc[i * TMM_NR + r] +=
                    group_sum[i * TMM_NR + r] * w->scales[(p * TMM_NR + r) * n_groups + g];
    }
    store_f32_rows(job, p, row_begin, rows_total, acc);
}

/* Float path with per-group scales folded into the weights: no per-group
 * reductions. Many rows (groups on chunk boundaries) decode once per stretch
 * of chunks and reuse the floats; few rows multiply straight from the codes. */
static void panel_rows_f32_scaled(const struct compute_job *job, size_t p, size_t row_begin,
                                  size_t row_end) {
    const obx_tmm_weights *w = job->w;
    const size_t rows_total = row_end - row_begin;
    const size_t n_chunks = OBX_DIV_UP(w->k, TMM_CHUNK);
    const uint8_t *panel = tmm_panel(w, p);
    const float *scales_pg = w->scales_pg + p * w->n_groups * TMM_NR;
    float acc[TMM_TASK_ROWS * TMM_NR], sums[TMM_MR * TMM_NR];
    const float *a[TMM_MR];
    for (size_t i = 0; i < rows_total * TMM_NR; i++) acc[i] = 0.0f;
    if (rows_total >= TMM_MR && job->kern->f32_decode_scaled && w->segments_are_row) {
        float wbuf[TMM_NR * TMM_DECODE_CHUNKS * TMM_CHUNK] __attribute__((aligned(TMM_ALIGN)));
        for (size_t cb = 0; cb < n_chunks; cb += TMM_DECODE_CHUNKS) {
            size_t ce = OBX_MIN(n_chunks, cb + TMM_DECODE_CHUNKS);
            job->kern->f32_decode_scaled(panel, cb, ce, w->chunk_group, scales_pg, wbuf);
            for (size_t row = 0; row < rows_total; row += TMM_DOT_ROWS) {
                size_t rows = OBX_MIN(TMM_DOT_ROWS, rows_total - row);
                for (size_t i = 0; i < rows; i++)
                    a[i] = job->a_seg + (row_begin + row + i) * job->seg_elems + cb * TMM_CHUNK;
                job->kern->f32_dot(wbuf, (ce - cb) * TMM_CHUNK, rows, a, sums);
                for (size_t i = 0; i < rows; i++)
                    for (size_t r = 0; r < TMM_NR; r++)
                        acc[(row + i) * TMM_NR + r] += sums[i * TMM_NR + r];
            }
        }
    } else {
        for (size_t row = 0; row < rows_total; row += TMM_MR) {
            size_t rows = OBX_MIN(TMM_MR, rows_total - row);
            for (size_t i = 0; i < rows; i++)
                a[i] = job->a_seg + (row_begin + row + i) * job->seg_elems;
            job->kern->f32_scaled(panel, rows, a, w->groups, w->n_groups, scales_pg, sums);
            for (size_t i = 0; i < rows; i++)
                for (size_t r = 0; r < TMM_NR; r++) acc[(row + i) * TMM_NR + r] = sums[i * TMM_NR + r];
        }
    }
    store_f32_rows(job, p, row_begin, rows_total, acc);
}

static void matmul_task(void *arg, size_t index) {
    const struct compute_job *job = arg;
    size_t row_block = index % job->row_blocks, panel_block = index / job->row_blocks;
    size_t row_begin = job->row_start + row_block * job->rows_per_task;
    size_t row_end = OBX_MIN(job->m, row_begin + job->rows_per_task);
    size_t p_begin = panel_block * job->panels_per_task;
    size_t p_end = OBX_MIN(job->w->n_panels, p_begin + job->panels_per_task);
    int decoded = job->act_quant == OBX_ACT_NONE && job->kern->f32_dot &&
                  row_end - row_begin >= TMM_MR;
    /* Per-group float scales are folded into the weights (no per-group sums). */
    int scaled = job->act_quant == OBX_ACT_NONE && job->kern->f32_scaled &&
                 job->w->n_groups > 1;
    for (size_t p = p_begin; p < p_end; p++) {
        if (scaled) {
            panel_rows_f32_scaled(job, p, row_begin, row_end);
            continue;
        }
        if (decoded) {
            panel_rows_f32_decoded(job, p, row_begin, row_end);
            continue;
        }
        for (size_t row = row_begin; row < row_end; row += TMM_MR) {
            size_t rows = OBX_MIN(TMM_MR, row_end - row);
            if (job->act_quant == OBX_ACT_INT8_TOKEN) {
                if (job->kern->i8_groups && job->w->n_groups > 1)
                    panel_rows_i8_grouped(job, p, row, rows);
                else
                    panel_rows_i8(job, p, row, rows);
            }
            else panel_rows_f32(job, p, row, rows);
        }
    }
}

/* ---- table-lookup integer path (many rows, one scale group) ----------- */

static size_t lut_k_padded(const obx_tmm_weights *w) { return w->kblocks * TMM_KBLOCK; }

static size_t lut_group_rows(const struct compute_job *job, size_t group) {
    return group + 1 == job->lut_groups ? job->lut_last_rows : TMM_LUT_ROWS;
}

/* Rows [0, row_start) to table-lookup groups; 0 groups when m is too small. */
static void plan_lut_groups(struct compute_job *job) {
    size_t full = job->m / TMM_LUT_ROWS, rest = job->m % TMM_LUT_ROWS;
    job->lut_groups = full;
    job->lut_last_rows = TMM_LUT_ROWS;
    job->row_start = full * TMM_LUT_ROWS;
    if (rest >= TMM_LUT_PAD_FROM) {
        job->lut_groups++;
        job->row_start = job->m;
    } else if (rest >= TMM_LUT_SMALL_PAD_FROM) {
        job->lut_groups++;
        job->lut_last_rows = TMM_LUT_SMALL_ROWS;
        job->row_start += OBX_MIN(rest, TMM_LUT_SMALL_ROWS);
    }
}

/* Row group index -> qt[k][i], zero for padding rows past m. */
static void lut_transpose_task(void *arg, size_t index) {
    const struct compute_job *job = arg;
    const size_t kp = lut_k_padded(job->w), G = lut_group_rows(job, index);
    int16_t *qt = job->qt + index * TMM_LUT_ROWS * kp;
    for (size_t i = 0; i < G; i++) {
        size_t row = index * TMM_LUT_ROWS + i;
        if (row >= job->m) {
            for (size_t k = 0; k < kp; k++) qt[k * G + i] = 0;
            continue;
        }
        /* The segment buffer is the zero-padded row (segments_are_row), kp long at least. */
        const int8_t *q = job->q_seg + row * job->seg_elems;
        for (size_t k = 0; k < kp; k++) qt[k * G + i] = q[k];
    }
}

static void lut_task(void *arg, size_t index) {
    const struct compute_job *job = arg;
    const obx_tmm_weights *w = job->w;
    size_t group = index % job->lut_groups, panel_block = index / job->lut_groups;
    const size_t G = lut_group_rows(job, group), row_begin = group * TMM_LUT_ROWS;
    size_t p_begin = panel_block * TMM_LUT_PANELS;
    size_t p_end = OBX_MIN(w->n_panels, p_begin + TMM_LUT_PANELS);
    uint32_t usum[TMM_LUT_PANELS * TMM_NR * TMM_LUT_ROWS] __attribute__((aligned(TMM_ALIGN)));
    job->kern->i8_lut(w->packed, w->kblocks, p_begin, p_end, G,
                      job->qt + row_begin * lut_k_padded(w), usum);
    size_t row_end = OBX_MIN(job->m, row_begin + G);
    for (size_t row = row_begin; row < row_end; row++) {
        size_t i = row - row_begin;
        uint32_t correction = (uint32_t)job->qsum[row]; /* n_groups == 1 */
        float s = job->row_scale[row];
        for (size_t p = p_begin; p < p_end; p++) {
            size_t cols = OBX_MIN(TMM_NR, w->n - p * TMM_NR);
            float *y = job->y + row * w->n + p * TMM_NR;
            for (size_t r = 0; r < cols; r++) {
                if (!job->row_ok[row]) {
                    y[r] = NAN;
                    continue;
                }
                int32_t isum =
                    (int32_t)(usum[((p - p_begin) * TMM_NR + r) * G + i] - correction);
                y[r] = finish_one_group(job, isum, p * TMM_NR + r, s);
            }
        }
    }
}

static void run_tasks(obx_parallel_for_fn par, void *runner, obx_task_fn fn, void *arg,
                      size_t count);

/* ---- single-row table-lookup path (M <= TMM_GEMV_MAX_ROWS, AVX2) ------ */

/* Rows served by the single-row lookup kernel, one row at a time: it beats
 * the multiply kernel at every M the multiply kernel alone would serve
 * (1..5, measured on Zen1 at K = N = 4096), rereading a task's weights from
 * L2 for the second and later rows. */
#define TMM_GEMV_MAX_ROWS 5

static size_t gemv_table_bytes(const obx_tmm_weights *w) {
    return w->kblocks * (TMM_KBLOCK / 2) * 32;
}

static int gemv_applies(const struct compute_job *job) {
#if defined(ONNXBIT_X86)
    /* The AVX-VNNI and AVX-512 levels multiply faster than they look up. */
    return job->act_quant == OBX_ACT_INT8_TOKEN && job->kern == &tmm_kernels_avx2 &&
           job->w->gemv_packed && job->w->n_groups == 1 && job->w->segments_are_row &&
           job->m <= TMM_GEMV_MAX_ROWS;
#else
    (void)job;
    return 0;
#endif
}

static void gemv_task(void *arg, size_t index) {
#if defined(ONNXBIT_X86)
    const struct compute_job *job = arg;
    const obx_tmm_weights *w = job->w;
    size_t cb_begin = index * job->gemv_task_cblocks;
    size_t cb_end = OBX_MIN(w->gemv_cblocks, cb_begin + job->gemv_task_cblocks);
    uint32_t sums[TMM_GEMV_TASK_CBLOCKS * TMM_GEMV_COLS];
    /* Every pair of k adds 256 in the kernel (modulo 2^32, as the result). */
    const uint32_t pair_bias = (uint32_t)(w->kblocks * (TMM_KBLOCK / 2) * 256u);
    size_t col_begin = cb_begin * TMM_GEMV_COLS;
    size_t col_end = OBX_MIN(w->n, cb_end * TMM_GEMV_COLS);
    for (size_t row = 0; row < job->m; row++) {
        float *y = job->y + row * w->n;
        if (!job->row_ok[row]) {
            for (size_t col = col_begin; col < col_end; col++) y[col] = NAN;
            continue;
        }
        tmm_gemv_avx2(w->gemv_packed, w->kblocks, w->gemv_cblocks,
                      job->gemv_tables + row * gemv_table_bytes(w), cb_begin, cb_end, sums);
        float s = job->row_scale[row];
        for (size_t col = col_begin; col < col_end; col++) {
            int32_t isum = (int32_t)(sums[col - col_begin] - pair_bias);
            y[col] = finish_one_group(job, isum, col, s);
        }
    }
#else
    (void)arg;
    (void)index;
#endif
}

/* Returns 1 when the rows were computed, 0 when out of memory for the tables. */
static int run_gemv(struct compute_job *job, obx_parallel_for_fn par, void *runner) {
#if defined(ONNXBIT_X86)
    const obx_tmm_weights *w = job->w;
    size_t bytes = job->m * gemv_table_bytes(w);
    job->gemv_tables = aligned_alloc(TMM_ALIGN, OBX_DIV_UP(bytes, TMM_ALIGN) * TMM_ALIGN);
    if (!job->gemv_tables) return 0;
    for (size_t row = 0; row < job->m; row++)
        tmm_gemv_tables_avx2(job->q_seg + row * job->seg_elems, w->kblocks,
                             job->gemv_tables + row * gemv_table_bytes(w));
    /* About TMM_TASK_WORK products a task, as on the multiply path. */
    size_t block_work = job->m * OBX_MAX(w->k, 1) * TMM_GEMV_COLS;
    job->gemv_task_cblocks =
        OBX_MAX(1, OBX_MIN(TMM_GEMV_TASK_CBLOCKS, TMM_TASK_WORK / block_work));
    run_tasks(par, runner, gemv_task, job, OBX_DIV_UP(w->gemv_cblocks, job->gemv_task_cblocks));
    free(job->gemv_tables);
    job->gemv_tables = NULL;
    return 1;
#else
    (void)job;
    (void)par;
    (void)runner;
    return 0;
#endif
}

static void run_tasks(obx_parallel_for_fn par, void *runner, obx_task_fn fn, void *arg,
                      size_t count) {
    if (count == 0) return;
    if (par && count > 1) {
        par(runner, fn, arg, count);
    } else {
        for (size_t i = 0; i < count; i++) fn(arg, i);
    }
}

OBX_API int obx_tmm_compute(const obx_tmm_weights *w, const float *a, size_t m, const float *bias,
                            int act_quant, float *y, obx_parallel_for_fn par, void *runner,
                            char *err, size_t err_len) {
    if (err && err_len) err[0] = '\0';
    if (!w) {
        obx_set_error(err, err_len, "weights handle is NULL");
        return -1;
    }
    if (act_quant != OBX_ACT_NONE && act_quant != OBX_ACT_INT8_TOKEN) {
        obx_set_error(err, err_len, "unknown act_quant %d (expected %d = none or %d = int8 per token)",
                  act_quant, OBX_ACT_NONE, OBX_ACT_INT8_TOKEN);
        return -1;
    }
    if (obx_isa_active() < 0) {
        obx_set_error(err, err_len, "%s", obx_isa_error());
        return -1;
    }
    if (m == 0 || w->n == 0) return 0;
    if (!y || (!a && w->k > 0)) {
        obx_set_error(err, err_len, "%s is NULL", y ? "activation pointer a" : "output pointer y");
        return -1;
    }

    struct compute_job job;
    memset(&job, 0, sizeof job);
    job.w = w;
    job.kern = tmm_active_kernels();
    job.m = m;
    job.act_quant = act_quant;
    job.seg_elems = w->seg_chunks * TMM_CHUNK;
    job.a = a;
    job.bias = bias;
    job.y = y;

    size_t prep_tasks = OBX_DIV_UP(m, TMM_PREP_ROWS);
    size_t elem = act_quant == OBX_ACT_INT8_TOKEN ? 1 : sizeof(float);
    size_t row_bytes = OBX_DIV_UP(job.seg_elems * elem, TMM_ALIGN) * TMM_ALIGN;
    size_t extra_per_row = w->n_groups * sizeof(int32_t) + sizeof(float) + 1;
    size_t tmp_bytes = (act_quant == OBX_ACT_INT8_TOKEN && !w->segments_are_row)
                           ? prep_tasks * (w->k + 1) : 0;
    if (m > (SIZE_MAX / 2 - tmp_bytes) / (row_bytes + extra_per_row + 16)) {
        obx_set_error(err, err_len, "m = %zu rows is too large for the activation buffer", m);
        return -1;
    }
    size_t total = m * row_bytes + m * (extra_per_row + 16) + tmp_bytes + TMM_ALIGN;
    uint8_t *scratch = aligned_alloc(TMM_ALIGN, OBX_DIV_UP(total, TMM_ALIGN) * TMM_ALIGN);
    if (!scratch) {
        obx_set_error(err, err_len, "out of memory for %zu activation rows", m);
        return -1;
    }
    uint8_t *cursor = scratch;
    if (act_quant == OBX_ACT_INT8_TOKEN) job.q_seg = (int8_t *)cursor;
    else job.a_seg = (float *)cursor;
    cursor += m * row_bytes;
    job.qsum = (int32_t *)cursor;
    cursor += m * w->n_groups * sizeof(int32_t);
    job.row_scale = (float *)cursor;
    cursor += m * sizeof(float);
    job.row_ok = cursor;
    cursor += m;
    job.q_tmp = tmp_bytes ? (int8_t *)cursor : NULL;
    /* seg_elems * elem is a multiple of 32 bytes; rows are then aligned by row_bytes. */
    job.seg_elems = row_bytes / elem;

    run_tasks(par, runner, prepare_task, &job, prep_tasks);

    if (gemv_applies(&job) && run_gemv(&job, par, runner)) {
        free(scratch);
        return 0;
    }

    if (act_quant == OBX_ACT_INT8_TOKEN && job.kern->i8_lut && w->n_groups == 1 &&
        w->segments_are_row)
        plan_lut_groups(&job);
    if (job.lut_groups > 0) {
        size_t qt_bytes = job.lut_groups * TMM_LUT_ROWS * lut_k_padded(w) * sizeof(int16_t);
        job.qt = aligned_alloc(TMM_ALIGN, OBX_DIV_UP(qt_bytes, TMM_ALIGN) * TMM_ALIGN);
        if (job.qt) {
            run_tasks(par, runner, lut_transpose_task, &job, job.lut_groups);
            run_tasks(par, runner, lut_task, &job,
                      job.lut_groups * OBX_DIV_UP(w->n_panels, TMM_LUT_PANELS));
            free(job.qt);
        } else {
            /* Out of memory for the transposed rows: the multiply kernels need none. */
            job.row_start = 0;
        }
    }
    if (job.row_start == m) {
        free(scratch);
        return 0;
    }

    size_t rows_per_task = OBX_MIN(m - job.row_start, TMM_TASK_ROWS);
    size_t row_work = rows_per_task * OBX_MAX(w->k, 1) * TMM_NR;
    size_t panels_per_task = OBX_MAX(1, OBX_MIN(w->n_panels, TMM_TASK_WORK / row_work));
    job.rows_per_task = rows_per_task;
    job.panels_per_task = panels_per_task;
    job.row_blocks = OBX_DIV_UP(m - job.row_start, rows_per_task);
    size_t panel_blocks = OBX_DIV_UP(w->n_panels, panels_per_task);
    run_tasks(par, runner, matmul_task, &job, job.row_blocks * panel_blocks);

    free(scratch);
    return 0;
}
