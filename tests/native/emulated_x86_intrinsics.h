/* Test-only stand-ins for the AVX-512 and AVX-VNNI intrinsics the matmul kernels
 * (integer and float GEMM) use, written on plain byte arrays, so tmm_kernel_avx512.c and
 * tmm_kernel_avxvnni.c can be compiled for and run on an AVX2-only CPU. Each
 * function follows the instruction's definition (vpdpbusd: four u8 x s8
 * products added into each int32 lane, wrapping). */
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
