/* Internal contract of the column path (codec_columns.c): the tile geometry
 * and the per-ISA gather that copies a tile of W [k, n] transposed into a
 * small buffer, so the row kernels of codec_internal.h can pack columns. */
#ifndef ONNXBIT_CODEC_COLUMNS_H
#define ONNXBIT_CODEC_COLUMNS_H

#include <stddef.h>

/* A tile is up to OBX_COLS_TILE columns by up to OBX_COLS_CHUNK rows of W
 * (160 KB, sized for L2). 64 columns read four whole cache lines of each source
 * row per visit, which the hardware prefetchers follow; 16 columns (one line)
 * measured three times slower. The chunk is a multiple of 20 codes, so chunks
 * start on byte boundaries in both formats (4 and 5 codes a byte), and of 128
 * and 160, the spans the SIMD row kernels consume whole. */
enum { OBX_COLS_TILE = 64, OBX_COLS_CHUNK = 640 };

/* tile[c * OBX_COLS_CHUNK + i] = w[i * stride + c] for i < rows, c < cols
 * (rows <= OBX_COLS_CHUNK, cols <= OBX_COLS_TILE); tile is 64-byte aligned. */
typedef void (*obx_cols_gather_fn)(const float *w, size_t stride, size_t rows, size_t cols,
                                   float *tile);

void obx_cols_gather_scalar(const float *w, size_t stride, size_t rows, size_t cols, float *tile);
#if defined(ONNXBIT_X86)
void obx_cols_gather_avx2(const float *w, size_t stride, size_t rows, size_t cols, float *tile);
#endif

#endif
