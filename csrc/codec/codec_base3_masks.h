/* Shuffle-mask tables of the x86 base3 kernels (codec_avx2.c, codec_avx512.c):
 * both work per 128-bit lane (16 packed bytes, 80 codes), so the 16-byte lane
 * masks are the same data for both and are defined here once. */
#ifndef ONNXBIT_CODEC_BASE3_MASKS_H
#define ONNXBIT_CODEC_BASE3_MASKS_H

#include <stdint.h>

/* Shuffle masks for the last step of base3 decoding. Digit vectors d0..d3 are
 * first interleaved into quads (byte 4i + d of quad vector q holds digit d of
 * packed byte 4q + i); output block r (elements 16r .. 16r + 15, element p is
 * digit p % 5 of byte p / 5) then takes its bytes from at most two quad
 * vectors and the d4 vector. 0x80 selects nothing. */
#define OBX_P(r, t) (16 * (r) + (t))
#define OBX_FROM_QUAD(r, q, t)                                                          \
    (OBX_P(r, t) % 5 != 4 && OBX_P(r, t) / 5 / 4 == (q)                                  \
         ? 4 * (OBX_P(r, t) / 5 % 4) + OBX_P(r, t) % 5                                   \
         : 0x80)
#define OBX_FROM_D4(r, t) (OBX_P(r, t) % 5 == 4 ? OBX_P(r, t) / 5 : 0x80)
#define OBX_MASK16(M, ...)                                                              \
    {M(__VA_ARGS__, 0),  M(__VA_ARGS__, 1),  M(__VA_ARGS__, 2),  M(__VA_ARGS__, 3),      \
     M(__VA_ARGS__, 4),  M(__VA_ARGS__, 5),  M(__VA_ARGS__, 6),  M(__VA_ARGS__, 7),      \
     M(__VA_ARGS__, 8),  M(__VA_ARGS__, 9),  M(__VA_ARGS__, 10), M(__VA_ARGS__, 11),     \
     M(__VA_ARGS__, 12), M(__VA_ARGS__, 13), M(__VA_ARGS__, 14), M(__VA_ARGS__, 15)}
#define OBX_BLOCK_MASKS(r)                                                              \
    {OBX_MASK16(OBX_FROM_QUAD, r, 0), OBX_MASK16(OBX_FROM_QUAD, r, 1),                   \
     OBX_MASK16(OBX_FROM_QUAD, r, 2), OBX_MASK16(OBX_FROM_QUAD, r, 3),                   \
     OBX_MASK16(OBX_FROM_D4, r)}
/* [block r][quad vector 0..3, then d4] */
static const uint8_t base3_block_masks[5][5][16] __attribute__((aligned(16))) = {
    OBX_BLOCK_MASKS(0), OBX_BLOCK_MASKS(1), OBX_BLOCK_MASKS(2), OBX_BLOCK_MASKS(3),
    OBX_BLOCK_MASKS(4)};
/* the quad vectors block r draws from: r*16/20 .. (r*16+15)/20 */
static const int base3_first_quad[5] = {0, 0, 1, 2, 3}, base3_last_quad[5] = {0, 1, 2, 3, 3};

/* Shuffle masks for base3 packing, the reverse of base3_block_masks. Codes
 * come in five blocks (block r = elements 16r .. 16r + 15 of a lane's 80).
 * Quad vector q gathers codes 5j .. 5j + 3 of packed bytes j = 4q .. 4q + 3
 * (byte 4i + d = digit d of byte 4q + i) from blocks q and q + 1; the d4
 * vector gathers digit 4 of byte j at position j from all five blocks. */
#define OBX_QUAD_ELEMENT(q, t) (5 * (4 * (q) + (t) / 4) + (t) % 4)
#define OBX_QUAD_SRC(q, r, t) (OBX_QUAD_ELEMENT(q, t) / 16 == (r) ? OBX_QUAD_ELEMENT(q, t) % 16 : 0x80)
#define OBX_D4_SRC(r, t) ((5 * (t) + 4) / 16 == (r) ? (5 * (t) + 4) % 16 : 0x80)
#define OBX_QUAD_MASKS(q)                                                              \
    {OBX_MASK16(OBX_QUAD_SRC, q, 0), OBX_MASK16(OBX_QUAD_SRC, q, 1),                    \
     OBX_MASK16(OBX_QUAD_SRC, q, 2), OBX_MASK16(OBX_QUAD_SRC, q, 3),                    \
     OBX_MASK16(OBX_QUAD_SRC, q, 4)}
static const uint8_t base3_quad_gather[4][5][16] __attribute__((aligned(16))) = {
    OBX_QUAD_MASKS(0), OBX_QUAD_MASKS(1), OBX_QUAD_MASKS(2), OBX_QUAD_MASKS(3)};
static const uint8_t base3_d4_gather[5][16] __attribute__((aligned(16))) = {
    OBX_MASK16(OBX_D4_SRC, 0), OBX_MASK16(OBX_D4_SRC, 1), OBX_MASK16(OBX_D4_SRC, 2),
    OBX_MASK16(OBX_D4_SRC, 3), OBX_MASK16(OBX_D4_SRC, 4)};

#endif
