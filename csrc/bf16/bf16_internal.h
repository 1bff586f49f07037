/* The bfloat16 matmul's repacked layout and its per-ISA tile kernels.
 *
 * Repacked layout: panels of BF16_PANEL_COLS = 32 columns, each K steps of
 * 16 uint32 words; word j of step k holds column j in its low half and column
 * 16 + j in its high half. One 512-bit load is then two float32 vectors of 16
 * columns, each made by one instruction (shift left by 16; mask the low half
 * away), and narrower vectors take the same words in 256- or 128-bit pieces.
 * Panels come in quads (128 columns), the unit of work of a task; columns
 * past N are zero. Each panel is one sequential stream (a quad of four
 * interleaved step by step was measured slower: 1.2x at one row, 1.5x at 8). */
#ifndef ONNXBIT_BF16_INTERNAL_H
#define ONNXBIT_BF16_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define BF16_PANEL_COLS 32
#define BF16_PANEL_WORDS 16 /* uint32 words per k step of a panel */
#define BF16_QUAD_PANELS 4
#define BF16_QUAD_COLS (BF16_PANEL_COLS * BF16_QUAD_PANELS)
#define BF16_MAX_TILE_ROWS 8

struct obx_bf16_weights {
    size_t k, n;
    size_t quads;    /* ceil(n / BF16_QUAD_COLS) */
    uint32_t *words; /* quads * 4 panels * k * 16 words, 64-byte aligned */
};

/* Continues, for r < rows (1 .. max_rows) and the 128 columns c of one quad,
 * the fmaf chains out[r * BF16_QUAD_COLS + c] over k steps: a[r * lda + i]
 * times step i of the quad's panels (panel p starts at quad + p * panel_stride
 * words), i in 0 .. k-1. Chains start from out (the caller zeroes it), so a
 * K split into blocks gives the bits of one unsplit chain. */
typedef void (*bf16_quad_fn)(const uint32_t *quad, size_t panel_stride, size_t k, const float *a,
                             size_t lda, size_t rows, float *out);

struct bf16_kernels {
    bf16_quad_fn quad;
    size_t max_rows; /* rows per call the kernel keeps in registers */
};

extern const struct bf16_kernels bf16_kernels_scalar;
#if defined(ONNXBIT_X86)
extern const struct bf16_kernels bf16_kernels_avx2;
extern const struct bf16_kernels bf16_kernels_avx512;
#endif
#if defined(ONNXBIT_ARM64)
extern const struct bf16_kernels bf16_kernels_neon;
#endif

/* float32 of the low and the high bfloat16 of a repacked word. */
static inline float bf16_low(uint32_t word) {
    union { uint32_t u; float f; } v = {word << 16};
    return v.f;
}
static inline float bf16_high(uint32_t word) {
    union { uint32_t u; float f; } v = {word & 0xFFFF0000u};
    return v.f;
}

#endif
