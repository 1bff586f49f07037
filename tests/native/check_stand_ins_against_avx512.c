/* Runs each stand-in of emulated_x86_intrinsics.h that the pixel-lanes conv
 * kernel uses against the AVX-512 instruction it stands for, on random bit
 * patterns and on edge values (signed zeros, NaN, Inf, denormals, rounding
 * ties, the ends of the int32 / int16 / int8 ranges), bit for bit. Built
 * with AVX-512 VNNI enabled and run where the CPU has it: the harness that
 * runs the kernel on the stand-ins (check_emulated_pixel_lanes.c) only sees
 * what reaches a conv output (saturation of NaN lanes, say, never does).
 * Prints the count of mismatches; exit status 0 when there are none. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One operation on 64-byte operands a, b, c and a mask k, its result in out. */
typedef void (*operation)(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k, uint8_t *out);

#define OPERAND_I(p) _mm512_loadu_si512(p)
#define OPERAND_F(p) _mm512_loadu_ps((const float *)(p))
#define RESULT_I(v) _mm512_store_si512(out, v) /* out is 64-byte aligned */
#define RESULT_F(v) _mm512_storeu_ps((float *)out, v)

/* The operations, spelled with the intrinsics' names: expanded before the
 * stand-ins' macros exist they call the instructions, after, the stand-ins. */
#define OPERATIONS(prefix)                                                                                         \
    static void prefix##max_epi32(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k, uint8_t *out) { \
        RESULT_I(_mm512_max_epi32(OPERAND_I(a), OPERAND_I(b)));                                                    \
    }                                                                                                              \
    static void prefix##sub_epi32(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k, uint8_t *out) { \
        RESULT_I(_mm512_sub_epi32(OPERAND_I(a), OPERAND_I(b)));                                                    \
    }                                                                                                              \
    static void prefix##xor_si512(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k, uint8_t *out) { \
        RESULT_I(_mm512_xor_si512(OPERAND_I(a), OPERAND_I(b)));                                                    \
    }                                                                                                              \
    static void prefix##packs_epi32(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k,             \
                                    uint8_t *out) {                                                                \
        RESULT_I(_mm512_packs_epi32(OPERAND_I(a), OPERAND_I(b)));                                                  \
    }                                                                                                              \
    static void prefix##packs_epi16(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k,             \
                                    uint8_t *out) {                                                                \
        RESULT_I(_mm512_packs_epi16(OPERAND_I(a), OPERAND_I(b)));                                                  \
    }                                                                                                              \
    static void prefix##shuffle_epi8(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k,            \
                                     uint8_t *out) {                                                               \
        RESULT_I(_mm512_shuffle_epi8(OPERAND_I(a), OPERAND_I(b)));                                                 \
    }                                                                                                              \
    static void prefix##dpbusd_epi32(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k,            \
                                     uint8_t *out) {                                                               \
        RESULT_I(_mm512_dpbusd_epi32(OPERAND_I(c), OPERAND_I(a), OPERAND_I(b)));                                   \
    }                                                                                                              \
    static void prefix##broadcast_i32x4(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k,         \
                                        uint8_t *out) {                                                            \
        RESULT_I(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)a)));                                     \
    }                                                                                                              \
    static void prefix##cmpge_epi32_mask(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k,        \
                                         uint8_t *out) {                                                           \
        const __mmask16 r = _mm512_cmpge_epi32_mask(OPERAND_I(a), OPERAND_I(b));                                   \
        memset(out, 0, 64);                                                                                        \
        memcpy(out, &r, sizeof r);                                                                                 \
    }                                                                                                              \
    static void prefix##mask_mov_epi32(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k,          \
                                       uint8_t *out) {                                                             \
        RESULT_I(_mm512_mask_mov_epi32(OPERAND_I(a), k, OPERAND_I(b)));                                            \
    }                                                                                                              \
    static void prefix##mask_mov_ps(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k,             \
                                    uint8_t *out) {                                                                \
        RESULT_F(_mm512_mask_mov_ps(OPERAND_F(a), k, OPERAND_F(b)));                                               \
    }                                                                                                              \
    static void prefix##casts(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k, uint8_t *out) {    \
        RESULT_F(_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(OPERAND_F(a)), OPERAND_I(b))));          \
    }                                                                                                              \
    static void prefix##add_ps(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k, uint8_t *out) {   \
        RESULT_F(_mm512_add_ps(OPERAND_F(a), OPERAND_F(b)));                                                       \
    }                                                                                                              \
    static void prefix##mul_ps(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k, uint8_t *out) {   \
        RESULT_F(_mm512_mul_ps(OPERAND_F(a), OPERAND_F(b)));                                                       \
    }                                                                                                              \
    static void prefix##div_ps(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k, uint8_t *out) {   \
        RESULT_F(_mm512_div_ps(OPERAND_F(a), OPERAND_F(b)));                                                       \
    }                                                                                                              \
    static void prefix##max_ps(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k, uint8_t *out) {   \
        RESULT_F(_mm512_max_ps(OPERAND_F(a), OPERAND_F(b)));                                                       \
    }                                                                                                              \
    static void prefix##min_ps(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k, uint8_t *out) {   \
        RESULT_F(_mm512_min_ps(OPERAND_F(a), OPERAND_F(b)));                                                       \
    }                                                                                                              \
    static void prefix##cvtps_epi32(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k,             \
                                    uint8_t *out) {                                                                \
        RESULT_I(_mm512_cvtps_epi32(OPERAND_F(a)));                                                                \
    }                                                                                                              \
    static void prefix##cvtepi32_ps(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k,             \
                                    uint8_t *out) {                                                                \
        RESULT_F(_mm512_cvtepi32_ps(OPERAND_I(a)));                                                                \
    }                                                                                                              \
    static void prefix##maskz_compress_ps(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k,       \
                                          uint8_t *out) {                                                          \
        RESULT_F(_mm512_maskz_compress_ps(k, OPERAND_F(a)));                                                       \
    }                                                                                                              \
    /* over c's bytes: the lanes left out must keep them */                                                        \
    static void prefix##mask_storeu_ps(const uint8_t *a, const uint8_t *b, const uint8_t *c, __mmask16 k,          \
                                       uint8_t *out) {                                                             \
        memcpy(out, c, 64);                                                                                        \
        _mm512_mask_storeu_ps((float *)out, k, OPERAND_F(a));                                                      \
    }

OPERATIONS(instruction_)
#include "emulated_x86_intrinsics.h"
OPERATIONS(stand_in_)

#define PAIR(name) {#name, instruction_##name, stand_in_##name}
static const struct {
    const char *name;
    operation instruction, stand_in;
} pairs[] = {
    PAIR(max_epi32),   PAIR(sub_epi32),   PAIR(xor_si512),        PAIR(packs_epi32), PAIR(packs_epi16),
    PAIR(shuffle_epi8), PAIR(dpbusd_epi32), PAIR(broadcast_i32x4), PAIR(cmpge_epi32_mask),
    PAIR(mask_mov_epi32), PAIR(mask_mov_ps), PAIR(casts),       PAIR(add_ps),      PAIR(mul_ps),
    PAIR(div_ps),      PAIR(max_ps),      PAIR(min_ps),           PAIR(cvtps_epi32), PAIR(cvtepi32_ps),
    PAIR(maskz_compress_ps), PAIR(mask_storeu_ps),
};

static const float edge_floats[] = {
    0.0f, -0.0f, 0.5f, -0.5f, 1.5f, -1.5f, 2.5f, -2.5f, 126.5f, 127.5f, -127.5f, -128.5f, 8388607.5f,
    -8388607.5f, 2147483520.0f, 2147483648.0f, -2147483648.0f, -2147483904.0f, 3e9f, -3e9f, 1e-45f, -1e-45f,
    1.17549421e-38f, 3.4028235e38f, -3.4028235e38f, 1e-5f, 127.0f, -128.0f, 0.25f, -0.75f};
static const int32_t edge_ints[] = {INT32_MIN, INT32_MAX, 0, -1, 1, 32767, 32768, -32768, -32769,
                                    127, 128, -128, -129, 255, 256, 0x7f800000, 0x7fc00000, 0x00800000};
static const int16_t edge_shorts[] = {-32768, 32767, 0, -1, 127, 128, -128, -129, 255, 256};

static float random_float(void) {
    switch (rand() % 6) {
    case 0: return edge_floats[rand() % (sizeof edge_floats / sizeof edge_floats[0])];
    case 1: return NAN;
    case 2: return rand() % 2 ? INFINITY : -INFINITY;
    case 3: return (float)(rand() % 1001 - 500) / 4.0f; /* quarters: ties after a multiply by 2 */
    default: return ldexpf((float)(rand() - RAND_MAX / 2) / (float)RAND_MAX, rand() % 80 - 40);
    }
}

/* One operand: random bytes, or lanes of one kind of edge value. */
static void fill(uint8_t *p) {
    const int kind = rand() % 4;
    for (int lane = 0; lane < 16; lane++) {
        int32_t v;
        if (kind == 0) {
            v = (int32_t)((uint32_t)rand() << 16 ^ (uint32_t)rand());
        } else if (kind == 1) {
            const float f = random_float();
            memcpy(&v, &f, 4);
        } else if (kind == 2) {
            v = rand() % 2 ? edge_ints[rand() % (sizeof edge_ints / sizeof edge_ints[0])] : rand() % 70000 - 35000;
        } else {
            const int16_t h[2] = {edge_shorts[rand() % 10], (int16_t)(rand() % 600 - 300)};
            memcpy(&v, h, 4);
        }
        memcpy(p + 4 * lane, &v, 4);
    }
}

int main(void) {
    srand(5);
    static uint8_t a[64], b[64], c[64], expected[64] __attribute__((aligned(64))), got[64] __attribute__((aligned(64)));
    const size_t count = sizeof pairs / sizeof pairs[0];
    long bad = 0, runs = 0;
    for (int t = 0; t < 20000; t++) {
        fill(a), fill(b), fill(c);
        const __mmask16 k = (__mmask16)(t % 3 == 0 ? (1u << (rand() % 17)) - 1 : (unsigned)rand());
        for (size_t i = 0; i < count; i++) {
            memset(expected, 0xa5, 64), memset(got, 0x5a, 64);
            pairs[i].instruction(a, b, c, k, expected);
            pairs[i].stand_in(a, b, c, k, got);
            runs++;
            if (memcmp(expected, got, 64) != 0) {
                if (bad < 10) {
                    int lane = 0;
                    while (memcmp(expected + 4 * lane, got + 4 * lane, 4) == 0) lane++;
                    uint32_t x, y;
                    memcpy(&x, expected + 4 * lane, 4), memcpy(&y, got + 4 * lane, 4);
                    printf("%s: dword %d is 0x%08x, the stand-in gives 0x%08x\n", pairs[i].name, lane, x, y);
                }
                bad++;
            }
        }
    }
    printf("%ld operations, %ld mismatches\n", runs, bad);
    return bad != 0;
}
