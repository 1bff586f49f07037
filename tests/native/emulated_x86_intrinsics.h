/* Test-only stand-ins for the AVX-512 and AVX-VNNI intrinsics the matmul kernels
 * (integer and float GEMM) use, written on plain byte arrays, so tmm_kernel_avx512.c and
 * tmm_kernel_avxvnni.c can be compiled for and run on an AVX2-only CPU. Each
 * function follows the instruction's definition (vpdpbusd: four u8 x s8
 * products added into each int32 lane, wrapping). The pixel-lanes conv kernel
 * (tconv_pixel_lanes_avx512.c) runs on them too. */
#ifndef ONNXBIT_TEST_EMULATED_X86_INTRINSICS_H
#define ONNXBIT_TEST_EMULATED_X86_INTRINSICS_H
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t b[64];
} emu512i;

static inline emu512i emu_set1_epi8(char v) { emu512i r; memset(r.b, (uint8_t)v, 64); return r; }
static inline emu512i emu_setzero_si512(void) { emu512i r; memset(r.b, 0, 64); return r; }
static inline emu512i emu_load_si512(const void *p) {
    if ((uintptr_t)p % 64) abort(); /* the real instruction would fault */
    emu512i r; memcpy(r.b, p, 64); return r;
}
static inline emu512i emu_broadcast_i64x4(__m256i v) {
    emu512i r; memcpy(r.b, &v, 32); memcpy(r.b + 32, &v, 32); return r;
}
static inline emu512i emu_and_si512(emu512i a, emu512i b) {
    for (int i = 0; i < 64; i++) a.b[i] &= b.b[i];
    return a;
}
static inline emu512i emu_srli_epi16(emu512i a, unsigned n) {
    uint16_t w[32];
    memcpy(w, a.b, 64);
    for (int i = 0; i < 32; i++) w[i] = n > 15 ? 0 : (uint16_t)(w[i] >> n);
    memcpy(a.b, w, 64);
    return a;
}
static inline emu512i emu_srl_epi16(emu512i a, __m128i count) {
    return emu_srli_epi16(a, (unsigned)_mm_cvtsi128_si64(count));
}
static inline emu512i emu_dpbusd_epi32(emu512i acc, emu512i u, emu512i s) {
    int32_t d[16];
    memcpy(d, acc.b, 64);
    for (int i = 0; i < 16; i++) {
        uint32_t t = (uint32_t)d[i];
        for (int j = 0; j < 4; j++) t += (uint32_t)((int32_t)u.b[4 * i + j] * (int8_t)s.b[4 * i + j]);
        d[i] = (int32_t)t;
    }
    memcpy(acc.b, d, 64);
    return acc;
}
static inline emu512i emu_srai_epi32(emu512i a, unsigned n) {
    int32_t d[16];
    memcpy(d, a.b, 64);
    for (int i = 0; i < 16; i++) d[i] = d[i] >> (n > 31 ? 31 : n); /* gcc: arithmetic on signed */
    memcpy(a.b, d, 64);
    return a;
}
/* The row-sum reduction of the integer kernel: int32 adds (wrapping), the
 * per-128-bit-lane unpacks and the 128-bit lane shuffle. */
static inline emu512i emu_add_epi32(emu512i a, emu512i b) {
    uint32_t x[16], y[16];
    memcpy(x, a.b, 64);
    memcpy(y, b.b, 64);
    for (int i = 0; i < 16; i++) x[i] += y[i];
    memcpy(a.b, x, 64);
    return a;
}
/* Per 128-bit lane, elements of `bytes` bytes: lo interleaves the lane's low
 * halves of a and b, hi its high halves. */
static inline emu512i emu_unpack(emu512i a, emu512i b, int bytes, int high) {
    emu512i r;
    const int per_half = 8 / bytes;
    for (int lane = 0; lane < 4; lane++)
        for (int i = 0; i < per_half; i++) {
            const int from = lane * 16 + (high * per_half + i) * bytes;
            memcpy(r.b + lane * 16 + 2 * i * bytes, a.b + from, bytes);
            memcpy(r.b + lane * 16 + (2 * i + 1) * bytes, b.b + from, bytes);
        }
    return r;
}
static inline emu512i emu_unpacklo_epi32(emu512i a, emu512i b) { return emu_unpack(a, b, 4, 0); }
static inline emu512i emu_unpackhi_epi32(emu512i a, emu512i b) { return emu_unpack(a, b, 4, 1); }
static inline emu512i emu_unpacklo_epi64(emu512i a, emu512i b) { return emu_unpack(a, b, 8, 0); }
static inline emu512i emu_unpackhi_epi64(emu512i a, emu512i b) { return emu_unpack(a, b, 8, 1); }
/* Result lanes 0, 1 from a, lanes 2, 3 from b, each chosen by two bits of imm. */
static inline emu512i emu_shuffle_i32x4(emu512i a, emu512i b, int imm) {
    emu512i r;
    for (int lane = 0; lane < 4; lane++)
        memcpy(r.b + lane * 16, (lane < 2 ? a : b).b + ((imm >> (2 * lane)) & 3) * 16, 16);
    return r;
}
static inline __m256i emu_castsi512_si256(emu512i a) { __m256i r; memcpy(&r, a.b, 32); return r; }
static inline __m256i emu_extracti64x4_epi64(emu512i a, int half) {
    __m256i r; memcpy(&r, a.b + 32 * (half & 1), 32); return r;
}
static inline __m256i emu_dpbusd_avx_epi32(__m256i acc, __m256i u, __m256i s) {
    emu512i a = emu_setzero_si512(), uu = emu_setzero_si512(), ss = emu_setzero_si512();
    memcpy(a.b, &acc, 32);
    memcpy(uu.b, &u, 32);
    memcpy(ss.b, &s, 32);
    return emu_castsi512_si256(emu_dpbusd_epi32(a, uu, ss));
}

/* Float vectors for the float GEMM kernels: sixteen lanes, fused multiply-add
 * by fmaf (one rounding, as vfmadd231ps). */
typedef struct {
    float f[16];
} emu512;

static inline emu512i emu_set1_epi32(int v) {
    emu512i r; for (int i = 0; i < 16; i++) memcpy(r.b + 4 * i, &v, 4); return r;
}
static inline emu512i emu_cvtepu8_epi32(__m128i v) {
    uint8_t in[16]; emu512i r;
    memcpy(in, &v, 16);
    for (int i = 0; i < 16; i++) { uint32_t x = in[i]; memcpy(r.b + 4 * i, &x, 4); }
    return r;
}
static inline emu512i emu_srli_epi32(emu512i a, unsigned n) {
    uint32_t d[16];
    memcpy(d, a.b, 64);
    for (int i = 0; i < 16; i++) d[i] = n > 31 ? 0 : d[i] >> n;
    memcpy(a.b, d, 64);
    return a;
}
static inline emu512 emu_setr_ps(float e0, float e1, float e2, float e3, float e4, float e5,
                                 float e6, float e7, float e8, float e9, float e10, float e11,
                                 float e12, float e13, float e14, float e15) {
    emu512 r = {{e0, e1, e2, e3, e4, e5, e6, e7, e8, e9, e10, e11, e12, e13, e14, e15}};
    return r;
}
static inline emu512 emu_permutexvar_ps(emu512i idx, emu512 table) {
    uint32_t d[16]; emu512 r;
    memcpy(d, idx.b, 64);
    for (int i = 0; i < 16; i++) r.f[i] = table.f[d[i] & 15];
    return r;
}
static inline emu512 emu_loadu_ps(const float *p) { emu512 r; memcpy(r.f, p, 64); return r; }
static inline void emu_storeu_ps(float *p, emu512 v) { memcpy(p, v.f, 64); }
static inline emu512 emu_set1_ps(float v) { emu512 r; for (int i = 0; i < 16; i++) r.f[i] = v; return r; }
static inline emu512 emu_fmadd_ps(emu512 a, emu512 b, emu512 c) {
    for (int i = 0; i < 16; i++) c.f[i] = fmaf(a.f[i], b.f[i], c.f[i]);
    return c;
}

static inline emu512 emu_setzero_ps(void) { return emu_set1_ps(0.0f); }
static inline emu512 emu_add_ps(emu512 a, emu512 b) {
    for (int i = 0; i < 16; i++) a.f[i] += b.f[i];
    return a;
}
static inline emu512 emu_mul_ps(emu512 a, emu512 b) {
    for (int i = 0; i < 16; i++) a.f[i] *= b.f[i];
    return a;
}
static inline emu512 emu_cvtepi32_ps(emu512i v) {
    int32_t d[16]; emu512 r;
    memcpy(d, v.b, 64);
    for (int i = 0; i < 16; i++) r.f[i] = (float)d[i];
    return r;
}
static inline float emu_reduce_add_ps(emu512 v) {
    float s = 0.0f;
    for (int i = 0; i < 16; i++) s += v.f[i];
    return s;
}

static inline emu512 emu_permutex2var_ps(emu512 a, emu512i idx, emu512 b) {
    uint32_t d[16]; emu512 r;
    memcpy(d, idx.b, 64);
    for (int i = 0; i < 16; i++) r.f[i] = d[i] & 16 ? b.f[d[i] & 15] : a.f[d[i] & 15];
    return r;
}
/* Eight copies of a double's bits, viewed as sixteen floats. */
static inline emu512 emu_set1_pd_as_ps(double v) {
    emu512 r; for (int i = 0; i < 8; i++) memcpy(r.f + 2 * i, &v, 8); return r;
}

/* The integer GEMM kernel's qword and dword operations. */
static inline emu512i emu_setr_epi64(int64_t e0, int64_t e1, int64_t e2, int64_t e3, int64_t e4,
                                     int64_t e5, int64_t e6, int64_t e7) {
    int64_t v[8] = {e0, e1, e2, e3, e4, e5, e6, e7};
    emu512i r; memcpy(r.b, v, 64); return r;
}
static inline emu512i emu_set1_epi64(int64_t v) {
    emu512i r; for (int i = 0; i < 8; i++) memcpy(r.b + 8 * i, &v, 8); return r;
}
static inline emu512i emu_permutex2var_epi64(emu512i a, emu512i idx, emu512i b) {
    uint64_t x[16], ix[8], r[8];
    memcpy(x, a.b, 64); memcpy(x + 8, b.b, 64); memcpy(ix, idx.b, 64);
    for (int i = 0; i < 8; i++) r[i] = x[ix[i] & 15];
    emu512i out; memcpy(out.b, r, 64); return out;
}
static inline emu512i emu_srli_epi64(emu512i a, unsigned n) {
    uint64_t x[8]; memcpy(x, a.b, 64);
    for (int i = 0; i < 8; i++) x[i] = n > 63 ? 0 : x[i] >> n;
    memcpy(a.b, x, 64); return a;
}
static inline __m256i emu_cvtepi64_epi32(emu512i a) {
    uint64_t x[8]; uint32_t r[8]; memcpy(x, a.b, 64);
    for (int i = 0; i < 8; i++) r[i] = (uint32_t)x[i];
    __m256i out; memcpy(&out, r, 32); return out;
}
static inline void emu_store_si512(void *p, emu512i v) {
    if ((uintptr_t)p % 64) abort(); /* the real instruction would fault */
    memcpy(p, v.b, 64);
}
/* The pixel-lanes conv kernel (tconv_pixel_lanes_avx512.c): signed dword
 * compares and masks, the float epilogue, and the quantization of floats to
 * bytes (round to nearest even, saturating packs, per-128-bit-lane byte
 * shuffle), each as the instruction defines it. */
static inline emu512i emu_loadu_si512(const void *p) { emu512i r; memcpy(r.b, p, 64); return r; }
static inline emu512i emu_xor_si512(emu512i a, emu512i b) {
    for (int i = 0; i < 64; i++) a.b[i] ^= b.b[i];
    return a;
}
static inline emu512i emu_sub_epi32(emu512i a, emu512i b) {
    uint32_t x[16], y[16];
    memcpy(x, a.b, 64);
    memcpy(y, b.b, 64);
    for (int i = 0; i < 16; i++) x[i] -= y[i];
    memcpy(a.b, x, 64);
    return a;
}
static inline emu512i emu_max_epi32(emu512i a, emu512i b) {
    int32_t x[16], y[16];
    memcpy(x, a.b, 64);
    memcpy(y, b.b, 64);
    for (int i = 0; i < 16; i++) x[i] = x[i] > y[i] ? x[i] : y[i];
    memcpy(a.b, x, 64);
    return a;
}
static inline __mmask16 emu_cmpge_epi32_mask(emu512i a, emu512i b) {
    int32_t x[16], y[16];
    unsigned k = 0;
    memcpy(x, a.b, 64);
    memcpy(y, b.b, 64);
    for (int i = 0; i < 16; i++) k |= (unsigned)(x[i] >= y[i]) << i;
    return (__mmask16)k;
}
/* Lanes whose mask bit is set come from a, the others from src. */
static inline emu512i emu_mask_mov_epi32(emu512i src, __mmask16 k, emu512i a) {
    for (int i = 0; i < 16; i++)
        if (k >> i & 1) memcpy(src.b + 4 * i, a.b + 4 * i, 4);
    return src;
}
static inline emu512 emu_mask_mov_ps(emu512 src, __mmask16 k, emu512 a) {
    for (int i = 0; i < 16; i++)
        if (k >> i & 1) src.f[i] = a.f[i];
    return src;
}
static inline emu512i emu_castps_si512(emu512 a) { emu512i r; memcpy(r.b, a.f, 64); return r; }
static inline emu512 emu_castsi512_ps(emu512i a) { emu512 r; memcpy(r.f, a.b, 64); return r; }
static inline emu512 emu_div_ps(emu512 a, emu512 b) {
    for (int i = 0; i < 16; i++) a.f[i] /= b.f[i];
    return a;
}
/* vmaxps / vminps: the second operand when either is NaN (or both are zeros). */
static inline emu512 emu_max_ps(emu512 a, emu512 b) {
    for (int i = 0; i < 16; i++) a.f[i] = a.f[i] > b.f[i] ? a.f[i] : b.f[i];
    return a;
}
static inline emu512 emu_min_ps(emu512 a, emu512 b) {
    for (int i = 0; i < 16; i++) a.f[i] = a.f[i] < b.f[i] ? a.f[i] : b.f[i];
    return a;
}
/* vcvtps2dq under the default MXCSR: round to nearest, ties to even, worked
 * out here rather than by rintf (the reference rounds with rintf); NaN and
 * values outside the int32 range give the integer indefinite 0x80000000. */
static inline int32_t emu_round_to_int32(float v) {
    if (!(v >= -2147483648.0f && v < 2147483648.0f)) return INT32_MIN;
    const float whole = truncf(v), fraction = fabsf(v - whole); /* both exact */
    int64_t r = (int64_t)whole;
    const int64_t away = v < 0 ? -1 : 1;
    if (fraction > 0.5f || (fraction == 0.5f && (r & 1))) r += away;
    return (int32_t)r;
}
static inline emu512i emu_cvtps_epi32(emu512 a) {
    int32_t d[16];
    emu512i r;
    for (int i = 0; i < 16; i++) d[i] = emu_round_to_int32(a.f[i]);
    memcpy(r.b, d, 64);
    return r;
}
static inline int16_t emu_saturate_int16(int32_t v) { return (int16_t)(v < -32768 ? -32768 : v > 32767 ? 32767 : v); }
static inline int8_t emu_saturate_int8(int16_t v) { return (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v); }
/* vpackssdw: per 128-bit lane, a's four dwords then b's, as saturated words. */
static inline emu512i emu_packs_epi32(emu512i a, emu512i b) {
    int32_t x[16], y[16];
    int16_t w[32];
    emu512i r;
    memcpy(x, a.b, 64);
    memcpy(y, b.b, 64);
    for (int lane = 0; lane < 4; lane++)
        for (int i = 0; i < 4; i++) {
            w[8 * lane + i] = emu_saturate_int16(x[4 * lane + i]);
            w[8 * lane + 4 + i] = emu_saturate_int16(y[4 * lane + i]);
        }
    memcpy(r.b, w, 64);
    return r;
}
/* vpacksswb: per 128-bit lane, a's eight words then b's, as saturated bytes. */
static inline emu512i emu_packs_epi16(emu512i a, emu512i b) {
    int16_t x[32], y[32];
    int8_t v[64];
    emu512i r;
    memcpy(x, a.b, 64);
    memcpy(y, b.b, 64);
    for (int lane = 0; lane < 4; lane++)
        for (int i = 0; i < 8; i++) {
            v[16 * lane + i] = emu_saturate_int8(x[8 * lane + i]);
            v[16 * lane + 8 + i] = emu_saturate_int8(y[8 * lane + i]);
        }
    memcpy(r.b, v, 64);
    return r;
}
static inline emu512i emu_broadcast_i32x4(__m128i v) {
    emu512i r;
    for (int lane = 0; lane < 4; lane++) memcpy(r.b + 16 * lane, &v, 16);
    return r;
}
/* vpshufb: within each 128-bit lane, byte i = a's byte (idx[i] & 15) of that
 * lane, or 0 when idx[i] has its top bit set. */
static inline emu512i emu_shuffle_epi8(emu512i a, emu512i idx) {
    emu512i r;
    for (int lane = 0; lane < 4; lane++)
        for (int i = 0; i < 16; i++) {
            const uint8_t s = idx.b[16 * lane + i];
            r.b[16 * lane + i] = s & 0x80 ? 0 : a.b[16 * lane + (s & 15)];
        }
    return r;
}
/* vcompressps, zero-masking: the lanes selected by k, in order, then zeros. */
static inline emu512 emu_maskz_compress_ps(__mmask16 k, emu512 a) {
    emu512 r;
    int n = 0;
    memset(r.f, 0, sizeof r.f);
    for (int i = 0; i < 16; i++)
        if (k >> i & 1) r.f[n++] = a.f[i];
    return r;
}
/* Masked store: only the selected lanes touch memory (the others may lie
 * past the end of the buffer: the instruction suppresses their faults). */
static inline void emu_mask_storeu_ps(float *p, __mmask16 k, emu512 a) {
    for (int i = 0; i < 16; i++)
        if (k >> i & 1) memcpy(p + i, &a.f[i], sizeof(float));
}
/* Masked loads and stores: only the selected lanes touch memory (the
 * others may lie outside the buffer: the instructions suppress their faults). */
static inline emu512 emu_maskz_loadu_ps(__mmask16 k, const void *p) {
    emu512 r;
    for (int i = 0; i < 16; i++) {
        r.f[i] = 0.0f;
        if (k >> i & 1) memcpy(&r.f[i], (const char *)p + 4 * i, sizeof(float));
    }
    return r;
}
static inline void emu_mask_storeu_epi32(void *p, __mmask16 k, emu512i a) {
    for (int i = 0; i < 16; i++)
        if (k >> i & 1) memcpy((char *)p + 4 * i, a.b + 4 * i, 4);
}
#define _mm512_maskz_loadu_ps emu_maskz_loadu_ps
#define _mm512_mask_storeu_epi32 emu_mask_storeu_epi32
#define _mm512_loadu_si512 emu_loadu_si512
#define _mm512_xor_si512 emu_xor_si512
#define _mm512_sub_epi32 emu_sub_epi32
#define _mm512_max_epi32 emu_max_epi32
#define _mm512_cmpge_epi32_mask emu_cmpge_epi32_mask
#define _mm512_mask_mov_epi32 emu_mask_mov_epi32
#define _mm512_mask_mov_ps emu_mask_mov_ps
#define _mm512_castps_si512 emu_castps_si512
#define _mm512_castsi512_ps emu_castsi512_ps
#define _mm512_div_ps emu_div_ps
#define _mm512_max_ps emu_max_ps
#define _mm512_min_ps emu_min_ps
#define _mm512_cvtps_epi32 emu_cvtps_epi32
#define _mm512_packs_epi32 emu_packs_epi32
#define _mm512_packs_epi16 emu_packs_epi16
#define _mm512_broadcast_i32x4 emu_broadcast_i32x4
#define _mm512_shuffle_epi8 emu_shuffle_epi8
#define _mm512_maskz_compress_ps emu_maskz_compress_ps
#define _mm512_mask_storeu_ps emu_mask_storeu_ps
#define _mm512_setr_epi64 emu_setr_epi64
#define _mm512_set1_epi64 emu_set1_epi64
#define _mm512_permutex2var_epi64 emu_permutex2var_epi64
#define _mm512_srli_epi64 emu_srli_epi64
#define _mm512_cvtepi64_epi32 emu_cvtepi64_epi32
#define _mm512_store_si512 emu_store_si512
#define __m512 emu512
#define _mm512_permutex2var_ps emu_permutex2var_ps
#define _mm512_set1_pd emu_set1_pd_as_ps
#define _mm512_castpd_ps(v) (v)
#define _mm512_setzero_ps emu_setzero_ps
#define _mm512_add_ps emu_add_ps
#define _mm512_mul_ps emu_mul_ps
#define _mm512_cvtepi32_ps emu_cvtepi32_ps
#define _mm512_reduce_add_ps emu_reduce_add_ps
#define _mm512_set1_epi32 emu_set1_epi32
#define _mm512_cvtepu8_epi32 emu_cvtepu8_epi32
#define _mm512_srli_epi32 emu_srli_epi32
#define _mm512_setr_ps emu_setr_ps
#define _mm512_permutexvar_ps emu_permutexvar_ps
#define _mm512_loadu_ps emu_loadu_ps
#define _mm512_storeu_ps emu_storeu_ps
#define _mm512_set1_ps emu_set1_ps
#define _mm512_fmadd_ps emu_fmadd_ps
#define __m512i emu512i
#define _mm512_set1_epi8 emu_set1_epi8
#define _mm512_setzero_si512 emu_setzero_si512
#define _mm512_load_si512 emu_load_si512
#define _mm512_broadcast_i64x4 emu_broadcast_i64x4
#define _mm512_and_si512 emu_and_si512
#define _mm512_srli_epi16 emu_srli_epi16
#define _mm512_srl_epi16 emu_srl_epi16
#define _mm512_srai_epi32 emu_srai_epi32
#define _mm512_dpbusd_epi32 emu_dpbusd_epi32
#define _mm512_castsi512_si256 emu_castsi512_si256
#define _mm512_add_epi32 emu_add_epi32
#define _mm512_unpacklo_epi32 emu_unpacklo_epi32
#define _mm512_unpackhi_epi32 emu_unpackhi_epi32
#define _mm512_unpacklo_epi64 emu_unpacklo_epi64
#define _mm512_unpackhi_epi64 emu_unpackhi_epi64
#define _mm512_shuffle_i32x4 emu_shuffle_i32x4
#define _mm512_extracti64x4_epi64 emu_extracti64x4_epi64
#define _mm256_dpbusd_avx_epi32 emu_dpbusd_avx_epi32
#endif
