/* obx_tmm_compute inside: the job every compute path works on, the planner
 * that picks one path per call, the path entry points (one file each) and
 * the scale/bias epilogue they all finish through. */
#ifndef ONNXBIT_TMM_COMPUTE_H
#define ONNXBIT_TMM_COMPUTE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "obx_common.h"
#include "tmm_internal.h"
#include "tmm_quantize_static.h"

/* Weight x row products per task: large enough to amortize scheduling, small
 * enough to give many-core machines work at M = 1. */
#define TMM_TASK_WORK ((size_t)1 << 20)
/* Rows of A a panel task covers at most; the rows' activations stay
 * cache-resident while the task walks its panels. */
#define TMM_TASK_ROWS 64
/* Tasks a call is cut into at least (where it has that many units), in a
 * multiple of which it is cut, and equal in size: 2, 4 or 8 threads then
 * finish together. Work-sized tasks alone cut a 1536 x 1536 layer at M = 1
 * into 85 + 85 + 22 panels, and one of two threads did 107 while the other
 * waited after 85. */
#define TMM_TASK_QUANTUM 8

/* Units (panels, column blocks) per task for `units` units of `unit_work`
 * products each, at most max_per_task: as many tasks as about TMM_TASK_WORK
 * products each need, rounded up to a multiple of TMM_TASK_QUANTUM (but no
 * more tasks than units, and enough for max_per_task), the units spread
 * evenly over them. */
static inline size_t tmm_units_per_task(size_t units, size_t unit_work, size_t max_per_task) {
    if (units == 0) return 1;
    size_t per = OBX_MAX(1, TMM_TASK_WORK / OBX_MAX(unit_work, 1));
    size_t tasks = OBX_DIV_UP(OBX_DIV_UP(units, per), TMM_TASK_QUANTUM) * TMM_TASK_QUANTUM;
    tasks = OBX_MAX(OBX_MIN(tasks, units), OBX_DIV_UP(units, OBX_MAX(max_per_task, 1)));
    return OBX_DIV_UP(units, tasks);
}

struct tmm_job {
    const obx_tmm_weights *w;
    const struct tmm_kernels *kern;
    size_t m;
    int act_quant; /* OBX_ACT_NONE or OBX_ACT_INT8_TOKEN: the static mode runs as the latter */
    /* > 0: act_quant = OBX_ACT_INT8_STATIC, every row quantized with this scale */
    float act_scale;
    tmm_quantize_static_fn quantize_static;
    size_t seg_elems; /* elements in one row's segment buffer */
    int8_t *q_seg;    /* int8 paths: m * seg_elems */
    float *a_seg;     /* float paths: m * seg_elems */
    int32_t *qsum;    /* int8 paths: m * n_groups activation sums */
    float *row_scale; /* int8 paths: s of each row */
    uint8_t *row_ok;  /* int8 paths: 0 for rows holding NaN or Inf */
    int8_t *q_tmp;    /* int8 paths, scattered segments: k bytes per prep task */
    const float *a;
    const float *bias;
    float *y;
    size_t y_row_stride, y_col_stride; /* y[row][col] at y + row * y_row_stride + col * y_col_stride */
    obx_parallel_for_fn par;
    void *runner;
};

/* The ways obx_tmm_compute can run; tmm_plan picks one per call. */
enum tmm_path {
    /* act_quant = 1, one scale group, M <= TMM_GEMV_MAX_ROWS, kernels with
     * GEMV slots and weights with the column-block layout: single-row lookup. */
    TMM_PATH_I8_GEMV,
    /* act_quant = 1, one scale group, at least TMM_I8_GEMM_MIN_ROWS rows,
     * kernels with i8_gemm: each tile of panels decoded to bytes once per task,
     * then register-blocked vpdpbusd-style sums over rows (tmm_path_i8_gemm.c). */
    TMM_PATH_I8_GEMM,
    /* act_quant = 1, one scale group, kernels with i8_lut: rows in lookup
     * groups of 8 or 16, the rows left over through TMM_PATH_I8_MULTIPLY. */
    TMM_PATH_I8_LUT,
    /* act_quant = 1, several groups, kernels with i8_groups: one kernel call
     * covers every group of a row. */
    TMM_PATH_I8_GROUPED,
    /* act_quant = 1 otherwise: the multiply kernel group by group. */
    TMM_PATH_I8_MULTIPLY,
    /* act_quant = 0, one scale group, at least TMM_GEMM_MIN_ROWS rows, kernels
     * with f32_gemm: decoded K-blocks shared by a task's rows, register-blocked
     * over rows (tmm_path_gemm.c); y = acc * scale (+ bias) with acc one fused
     * multiply-add chain in k order, the same bits on every ISA. */
    TMM_PATH_F32_GEMM,
    /* act_quant = 0, several groups, kernels with f32_scaled: scales folded
     * into the weights. */
    TMM_PATH_F32_SCALED,
    /* act_quant = 0, at least TMM_MR rows (and, with one scale group, fewer
     * than TMM_GEMM_MIN_ROWS where kernels have f32_gemm), kernels with
     * f32_dot: each stretch of a panel decoded to floats once and reused by
     * every row of a task. */
    TMM_PATH_F32_DECODED,
    /* act_quant = 0 otherwise: the float kernel straight from the codes. */
    TMM_PATH_F32_MULTIPLY,
};

/* Most rows the single-row lookup path serves, one row at a time: it beats
 * the multiply kernel at every M the multiply kernel alone would serve
 * (1..5, measured on Zen1 at K = N = 4096), rereading a task's weights from
 * L2 for the second and later rows. */
#define TMM_GEMV_MAX_ROWS 5

/* Fewest rows the integer GEMM path serves: below, decoding the codes to
 * bytes costs more than the rows save. Against the multiply path at
 * K = N = 4096, one thread, Sapphire Rapids (time ratio to onnxruntime's
 * MatMulInteger in the same process, `onnxbit bench matmul`): M = 16 1.45
 * vs 1.6 (multiply better), 24 1.4 vs 1.3, 32 1.4 vs 1.25, 128 1.1 vs 0.95. */
#define TMM_I8_GEMM_MIN_ROWS 24

/* Fewest rows the float GEMM path serves: below, transposing the activations
 * and broadcasting weights costs more than the decoded dot products save. */
#define TMM_GEMM_MIN_ROWS 8

/* obx_tmm_compute_scaled on the given kernel table (arguments already
 * checked; quantize_static is used for act_quant = OBX_ACT_INT8_STATIC). */
int tmm_compute(const struct tmm_kernels *kern, tmm_quantize_static_fn quantize_static,
                const obx_tmm_weights *w, const float *a, size_t m, const float *bias,
                int act_quant, float act_scale, float *y, obx_parallel_for_fn par,
                void *runner, char *err, size_t err_len);

enum tmm_path tmm_plan(const obx_tmm_weights *w, const struct tmm_kernels *kern, size_t m,
                       int act_quant);

/* The activations of rows [0, m) into the job's segment buffers (and, for
 * act_quant = 1, the row scales, sums and finiteness flags). */
void tmm_prepare_rows(struct tmm_job *job);

/* Runs fn over [0, count) with the job's parallel-for, or serially. */
void tmm_run_tasks(const struct tmm_job *job, obx_task_fn fn, void *arg, size_t count);

/* Path entry points. The lookup paths return the number of leading rows they
 * computed (0 when out of memory for their tables); tmm_run_panels computes
 * rows [row_begin, m) by a panel-walking path. */
size_t tmm_run_gemv(struct tmm_job *job);
size_t tmm_run_lut(struct tmm_job *job);
size_t tmm_run_gemm(struct tmm_job *job);
size_t tmm_run_i8_gemm(struct tmm_job *job);
void tmm_run_panels(const struct tmm_job *job, enum tmm_path path, size_t row_begin);

/* Panel functions of the panel-walking paths: rows [row_begin, row_end) of
 * panel p (at most TMM_TASK_ROWS rows). */
typedef void (*tmm_panel_fn)(const struct tmm_job *job, size_t p, size_t row_begin,
                             size_t row_end);
/* TMM_PATH_I8_MULTIPLY and TMM_PATH_F32_MULTIPLY (by job->act_quant). */
void tmm_panel_multiply(const struct tmm_job *job, size_t p, size_t row_begin, size_t row_end);
void tmm_panel_i8_grouped(const struct tmm_job *job, size_t p, size_t row_begin, size_t row_end);
void tmm_panel_f32_decoded(const struct tmm_job *job, size_t p, size_t row_begin, size_t row_end);
void tmm_panel_f32_scaled(const struct tmm_job *job, size_t p, size_t row_begin, size_t row_end);

/* Rows quantized by the caller, exactly as tmm_prepare_rows would have
 * (weights with one scale group and segments_are_row only): row i's int8
 * values at q + i * tmm_quantized_row_stride(w), zero from k to the stride,
 * 64-byte aligned; qsum[i] their sum, scale[i] the row's s, ok[i] 0 for a
 * row that held NaN or Inf (its q then all zero). */
struct tmm_quantized_rows {
    int8_t *q;
    int32_t *qsum;
    float *scale;
    uint8_t *ok;
};
size_t tmm_quantized_row_stride(const obx_tmm_weights *w);
/* y = rows x weights for act_quant = 1, the same bits as tmm_compute on the
 * float rows these were quantized from (tmm_path_prequantized.c); output
 * (row, col) at y + row * y_row_stride + col * y_col_stride (a conv writes
 * NCHW planes straight away: 1, positions). */
void tmm_compute_quantized(const struct tmm_kernels *kern, const obx_tmm_weights *w,
                           const struct tmm_quantized_rows *rows, size_t m, const float *bias, float *y,
                           size_t y_row_stride, size_t y_col_stride, obx_parallel_for_fn par, void *runner);

/* ---- the epilogue (tmatmul.h), written once ------------------------------ */

/* One scale group's integer sum into a float accumulator, in the contract's
 * order: acc + (float)isum * scale. A single group starts from acc = 0.0f. */
static inline float tmm_add_group(float acc, int32_t isum, float scale) {
    return acc + (float)isum * scale;
}

/* Finishes `cols` outputs of one row from their accumulators (the sums over
 * every scale group, scales applied): y = acc / s for act_quant = 1 (NaN for a
 * row holding NaN or Inf) or y = acc for float activations, then + bias. */
static inline void tmm_store_row(const struct tmm_job *job, size_t row, size_t col0,
                                 size_t cols, const float *acc) {
    const size_t cs = job->y_col_stride;
    float *y = job->y + row * job->y_row_stride + col0 * cs;
    const float *bias = job->bias ? job->bias + col0 : NULL;
    if (job->act_quant == OBX_ACT_INT8_TOKEN) {
        if (!job->row_ok[row]) {
            for (size_t c = 0; c < cols; c++) y[c * cs] = NAN;
            return;
        }
        float s = job->row_scale[row];
        for (size_t c = 0; c < cols; c++) {
            float v = acc[c] / s;
            y[c * cs] = bias ? v + bias[c] : v;
        }
        return;
    }
    for (size_t c = 0; c < cols; c++) y[c * cs] = bias ? acc[c] + bias[c] : acc[c];
}

/* tmm_store_row for rows [row_begin, row_end) of panel p, whose
 * accumulators are acc[(row - row_begin) * TMM_NR ...]. */
static inline size_t tmm_panel_cols(const obx_tmm_weights *w, size_t p);
static inline void tmm_store_rows(const struct tmm_job *job, size_t p, size_t row_begin,
                                  size_t row_end, const float *acc) {
    for (size_t row = row_begin; row < row_end; row++)
        tmm_store_row(job, row, p * TMM_NR, tmm_panel_cols(job->w, p),
                      acc + (row - row_begin) * TMM_NR);
}

/* Columns of panel p that exist (the last panel may be partial). */
static inline size_t tmm_panel_cols(const obx_tmm_weights *w, size_t p) {
    return OBX_MIN((size_t)TMM_NR, w->n - p * TMM_NR);
}

#endif
