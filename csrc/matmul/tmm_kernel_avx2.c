/* AVX2 kernels; the float kernels, the grouped integer kernel and the
 * quantizer also serve the AVX-VNNI and AVX-512 levels.
 *
 * Integer path: a 32-byte load of a (K-block, column) gives, by a 16-bit
 * shift of 2s and a byte mask, the 32 codes u in {0,1,2} of chunk s.
 * vpmaddubsw(u, q) adds adjacent products into int16 lanes holding values in
 * [2 * 2 * -128, 2 * 2 * 127] = [-512, 508]; at most 64 of them are added
 * into an int16 accumulator (64 * -512 = -32768, 64 * 508 = 32512, both in
 * range) before vpmaddwd with ones widens it into int32.
 *
 * Float path: vpermilps with the table {-1, 0, 1, 0} turns codes sitting in
 * the low two bits of each dword into the weights as floats, so the product
 * is a real multiply (Inf * 0 = NaN, as in float matmul).
 */
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "obx_common.h"
#include "tmm_internal.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* Chunks an int16 accumulator may take before widening (see above). */
#define I16_CHUNK_LIMIT 64

static ALWAYS_INLINE uint32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return (uint32_t)_mm_cvtsi128_si32(s);
}

/* One tile of ROWS rows x COLS panel columns starting at column col0. */
static ALWAYS_INLINE void i8_tile(const uint8_t *panel, const int8_t *const *q, size_t c0,
                                  size_t c1, int ROWS, int COLS, int col0, uint32_t *usum) {
    const __m256i mask = _mm256_set1_epi8(3);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc16[4][8], acc32[4][8];
    for (int i = 0; i < ROWS; i++)
        for (int r = 0; r < COLS; r++) {
            acc16[i][r] = _mm256_setzero_si256();
            acc32[i][r] = _mm256_setzero_si256();
        }
    int pending = 0; /* chunks added into acc16 since the last widening */
    size_t c = c0;
    while (c < c1) {
        int full_block = (c % 4 == 0) && (c + 4 <= c1);
        int step = full_block ? 4 : 1;
        if (pending + step > I16_CHUNK_LIMIT) {
            for (int i = 0; i < ROWS; i++)
                for (int r = 0; r < COLS; r++) {
                    acc32[i][r] = _mm256_add_epi32(acc32[i][r], _mm256_madd_epi16(acc16[i][r], ones));
                    acc16[i][r] = _mm256_setzero_si256();
                }
            pending = 0;
        }
        const uint8_t *block = panel + (c / 4) * TMM_NR * 32;
        size_t qoff = (c - c0) * TMM_CHUNK;
        if (full_block) {
            for (int r = 0; r < COLS; r++) {
                __m256i bits = _mm256_load_si256((const __m256i *)(block + (col0 + r) * 32));
                for (int s = 0; s < 4; s++) {
                    __m256i u = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * s), mask);
                    for (int i = 0; i < ROWS; i++) {
                        __m256i qv = _mm256_load_si256((const __m256i *)(q[i] + qoff + s * 32));
                        acc16[i][r] = _mm256_add_epi16(acc16[i][r], _mm256_maddubs_epi16(u, qv));
                    }
                }
            }
        } else {
            __m128i shift = _mm_cvtsi32_si128(2 * (int)(c % 4));
            for (int r = 0; r < COLS; r++) {
                __m256i bits = _mm256_load_si256((const __m256i *)(block + (col0 + r) * 32));
                __m256i u = _mm256_and_si256(_mm256_srl_epi16(bits, shift), mask);
                for (int i = 0; i < ROWS; i++) {
                    __m256i qv = _mm256_load_si256((const __m256i *)(q[i] + qoff));
                    acc16[i][r] = _mm256_add_epi16(acc16[i][r], _mm256_maddubs_epi16(u, qv));
                }
            }
        }
        pending += step;
        c += step;
    }
    for (int i = 0; i < ROWS; i++)
        for (int r = 0; r < COLS; r++) {
            __m256i total = _mm256_add_epi32(acc32[i][r], _mm256_madd_epi16(acc16[i][r], ones));
            usum[i * TMM_NR + col0 + r] = hsum_epi32(total);
        }
}

static void i8_kernel_avx2(const uint8_t *panel, size_t kblocks, size_t rows,
                           const int8_t *const *q, size_t chunk_begin, size_t chunk_end,
                           uint32_t *usum) {
    (void)kblocks;
    switch (rows) {
    case 1: i8_tile(panel, q, chunk_begin, chunk_end, 1, 8, 0, usum); break;
    case 2:
        for (int col0 = 0; col0 < TMM_NR; col0 += 4)
            i8_tile(panel, q, chunk_begin, chunk_end, 2, 4, col0, usum);
        break;
    case 3:
        for (int col0 = 0; col0 < TMM_NR; col0 += 2)
            i8_tile(panel, q, chunk_begin, chunk_end, 3, 2, col0, usum);
        break;
    default:
        for (int col0 = 0; col0 < TMM_NR; col0 += 4) {
            i8_tile(panel, q, chunk_begin, chunk_end, 2, 4, col0, usum);
            i8_tile(panel, q + 2, chunk_begin, chunk_end, 2, 4, col0, usum + 2 * TMM_NR);
        }
        break;
    }
}

/* Lane r of the result = sum of the eight lanes of v[r]. */
static ALWAYS_INLINE __m256i reduce8_epi32(const __m256i v[8]) {
    __m256i h01 = _mm256_hadd_epi32(v[0], v[1]), h23 = _mm256_hadd_epi32(v[2], v[3]);
    __m256i h45 = _mm256_hadd_epi32(v[4], v[5]), h67 = _mm256_hadd_epi32(v[6], v[7]);
    /* 128-bit lane 0 holds the partial sums of elements 0..3 of v[0..3], lane 1
     * those of elements 4..7; adding the two lanes finishes them. */
    __m256i h0123 = _mm256_hadd_epi32(h01, h23), h4567 = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(h0123, h4567, 0x20),
                            _mm256_permute2x128_si256(h0123, h4567, 0x31));
}

/* Integer sums of one group for the eight panel columns, as int32 lanes to
 * reduce (acc32); groups of at most I16_CHUNK_LIMIT chunks never widen early. */
/* q holds the group's segment: chunk c's activations at q + 32 (c - c_first). */
static ALWAYS_INLINE void group_sums(const uint8_t *panel, const int8_t *q, size_t c, size_t c1,
                                     int may_overflow_i16, __m256i acc32[TMM_NR]) {
    const size_t c_first = c;
    const __m256i mask = _mm256_set1_epi8(3);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc16[TMM_NR];
    for (int r = 0; r < TMM_NR; r++) {
        acc16[r] = _mm256_setzero_si256();
        acc32[r] = _mm256_setzero_si256();
    }
    int pending = 0;
    while (c < c1) {
        int full_block = (c % 4 == 0) && (c + 4 <= c1);
        int step = full_block ? 4 : 1;
        if (may_overflow_i16 && pending + step > I16_CHUNK_LIMIT) {
            for (int r = 0; r < TMM_NR; r++) {
                acc32[r] = _mm256_add_epi32(acc32[r], _mm256_madd_epi16(acc16[r], ones));
                acc16[r] = _mm256_setzero_si256();
            }
            pending = 0;
        }
        const uint8_t *block = panel + (c / 4) * TMM_NR * 32;
        const int8_t *qc = q + (c - c_first) * TMM_CHUNK;
        if (full_block) {
            for (int r = 0; r < TMM_NR; r++) {
                __m256i bits = _mm256_load_si256((const __m256i *)(block + r * 32));
                for (int s = 0; s < 4; s++) {
                    __m256i u = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * s), mask);
                    __m256i qv = _mm256_load_si256((const __m256i *)(qc + s * 32));
                    acc16[r] = _mm256_add_epi16(acc16[r], _mm256_maddubs_epi16(u, qv));
                }
            }
        } else {
            __m128i shift = _mm_cvtsi32_si128(2 * (int)(c % 4));
            __m256i qv = _mm256_load_si256((const __m256i *)qc);
            for (int r = 0; r < TMM_NR; r++) {
                __m256i bits = _mm256_load_si256((const __m256i *)(block + r * 32));
                __m256i u = _mm256_and_si256(_mm256_srl_epi16(bits, shift), mask);
                acc16[r] = _mm256_add_epi16(acc16[r], _mm256_maddubs_epi16(u, qv));
            }
        }
        pending += step;
        c += step;
    }
    for (int r = 0; r < TMM_NR; r++)
        acc32[r] = _mm256_add_epi32(acc32[r], _mm256_madd_epi16(acc16[r], ones));
}

static ALWAYS_INLINE void groups_row(const uint8_t *panel, const int8_t *q,
                                     const struct tmm_group *groups, size_t n_groups,
                                     const int32_t *qsum, const float *scales_pg, float *acc_out,
                                     int may_overflow_i16) {
    __m256 acc = _mm256_setzero_ps();
    for (size_t g = 0; g < n_groups; g++) {
        __m256i sums[TMM_NR];
        group_sums(panel, q + groups[g].seg_offset * TMM_CHUNK, groups[g].chunk_begin,
                   groups[g].chunk_end, may_overflow_i16, sums);
        /* Modular subtraction, as in the scalar epilogue: the result is the exact isum. */
        __m256i isum = _mm256_sub_epi32(reduce8_epi32(sums), _mm256_set1_epi32(qsum[g]));
        __m256 scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), _mm256_load_ps(scales_pg + g * TMM_NR));
        acc = _mm256_add_ps(acc, scaled);
    }
    _mm256_storeu_ps(acc_out, acc);
}

/* Groups of one chunk (group size 32, or 16 and smaller): straight from the
 * products to int32, no int16 stage to carry between chunks. */
static void groups_row_single_chunk(const uint8_t *panel, const int8_t *q,
                                    const struct tmm_group *groups, size_t n_groups,
                                    const int32_t *qsum, const float *scales_pg, float *acc_out) {
    const __m256i mask = _mm256_set1_epi8(3);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    for (size_t g = 0; g < n_groups; g++) {
        const size_t c = groups[g].chunk_begin;
        const uint8_t *block = panel + (c / 4) * TMM_NR * 32;
        const __m256i qv = _mm256_load_si256((const __m256i *)(q + groups[g].seg_offset * TMM_CHUNK));
        const __m128i shift = _mm_cvtsi32_si128(2 * (int)(c % 4));
        __m256i sums[TMM_NR];
        for (int r = 0; r < TMM_NR; r++) {
            __m256i bits = _mm256_load_si256((const __m256i *)(block + r * 32));
            __m256i u = _mm256_and_si256(_mm256_srl_epi16(bits, shift), mask);
            sums[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(u, qv), ones);
        }
        __m256i isum = _mm256_sub_epi32(reduce8_epi32(sums), _mm256_set1_epi32(qsum[g]));
        __m256 scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), _mm256_load_ps(scales_pg + g * TMM_NR));
        acc = _mm256_add_ps(acc, scaled);
    }
    _mm256_storeu_ps(acc_out, acc);
}

void tmm_i8_groups_avx2(const uint8_t *panel, const int8_t *q, const struct tmm_group *groups,
                        size_t n_groups, size_t max_group_chunks, const int32_t *qsum,
                        const float *scales_pg, float *acc_out) {
    if (max_group_chunks == 1)
        groups_row_single_chunk(panel, q, groups, n_groups, qsum, scales_pg, acc_out);
    else if (max_group_chunks <= I16_CHUNK_LIMIT)
        groups_row(panel, q, groups, n_groups, qsum, scales_pg, acc_out, 0);
    else
        groups_row(panel, q, groups, n_groups, qsum, scales_pg, acc_out, 1);
}

static ALWAYS_INLINE float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static ALWAYS_INLINE void f32_tile(const uint8_t *panel, const float *const *a, size_t c0,
                                   size_t c1, int ROWS, int COLS, int col0, float *sums) {
    const __m256 table = _mm256_setr_ps(-1.0f, 0.0f, 1.0f, 0.0f, -1.0f, 0.0f, 1.0f, 0.0f);
    __m256 acc[4][8];
    for (int i = 0; i < ROWS; i++)
        for (int r = 0; r < COLS; r++) acc[i][r] = _mm256_setzero_ps();
    size_t c = c0;
    while (c < c1) {
        const uint8_t *block = panel + (c / 4) * TMM_NR * 32;
        size_t aoff = (c - c0) * TMM_CHUNK;
        if ((c % 4 == 0) && (c + 4 <= c1)) {
            for (int j0 = 0; j0 < 32; j0 += 8) {
                for (int r = 0; r < COLS; r++) {
                    /* Each dword holds one byte: the codes of chunks 0..3 at k = j0 + lane. */
                    __m256i bytes = _mm256_cvtepu8_epi32(
                        _mm_loadl_epi64((const __m128i *)(block + (col0 + r) * 32 + j0)));
                    for (int s = 0; s < 4; s++) {
                        __m256 w = _mm256_permutevar_ps(table, _mm256_srli_epi32(bytes, 2 * s));
                        for (int i = 0; i < ROWS; i++) {
                            __m256 av = _mm256_load_ps(a[i] + aoff + s * 32 + j0);
                            acc[i][r] = _mm256_fmadd_ps(av, w, acc[i][r]);
                        }
                    }
                }
            }
            c += 4;
        } else {
            __m128i shift = _mm_cvtsi32_si128(2 * (int)(c % 4));
            for (int j0 = 0; j0 < 32; j0 += 8) {
                for (int r = 0; r < COLS; r++) {
                    __m256i bytes = _mm256_cvtepu8_epi32(
                        _mm_loadl_epi64((const __m128i *)(block + (col0 + r) * 32 + j0)));
                    __m256 w = _mm256_permutevar_ps(table, _mm256_srl_epi32(bytes, shift));
                    for (int i = 0; i < ROWS; i++) {
                        __m256 av = _mm256_load_ps(a[i] + aoff + j0);
                        acc[i][r] = _mm256_fmadd_ps(av, w, acc[i][r]);
                    }
                }
            }
            c += 1;
        }
    }
    for (int i = 0; i < ROWS; i++)
        for (int r = 0; r < COLS; r++) sums[i * TMM_NR + col0 + r] = hsum_ps(acc[i][r]);
}

/* Single-row float kernel without shuffles (Zen-class cores run vpermilps and
 * vector shifts on one or two pipes only): u * 4^s is isolated with one AND
 * and converted with vcvtdq2ps, each column keeps one accumulator per chunk
 * position s, and the exact identity
 *     sum a * w = sum_s 4^-s * (sum a * (u * 4^s)) - sum a
 * gives the result (scaling by a power of two is exact). That identity is not
 * IEEE-faithful for Inf inputs or overflowing sums (Inf * 0 would appear where
 * a real multiply by -1 gives -Inf), so any non-finite result is recomputed
 * with the shuffle tile, which multiplies by real weights. */
static void f32_row_stream(const uint8_t *panel, const float *a, size_t c0, size_t c1,
                           float *sums) {
    __m256 asum[4];
    for (int s = 0; s < 4; s++) asum[s] = _mm256_setzero_ps();
    for (size_t c = c0; c < c1; c++)
        for (int j0 = 0; j0 < 32; j0 += 8)
            asum[j0 / 8] = _mm256_add_ps(asum[j0 / 8], _mm256_load_ps(a + (c - c0) * TMM_CHUNK + j0));
    const float total =
        hsum_ps(_mm256_add_ps(_mm256_add_ps(asum[0], asum[1]), _mm256_add_ps(asum[2], asum[3])));
    int finite = isfinite(total);
    const __m256i field0 = _mm256_set1_epi32(3), field1 = _mm256_set1_epi32(3 << 2),
                  field2 = _mm256_set1_epi32(3 << 4), field3 = _mm256_set1_epi32(3 << 6);
    for (int col = 0; col < TMM_NR && finite; col++) {
        __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
        size_t c = c0;
        while (c < c1) {
            const uint8_t *codes = panel + ((c / 4) * TMM_NR + col) * 32;
            const float *ac = a + (c - c0) * TMM_CHUNK;
            if ((c % 4 == 0) && (c + 4 <= c1)) {
                for (int j0 = 0; j0 < 32; j0 += 8) {
                    __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + j0)));
                    acc0 = _mm256_fmadd_ps(_mm256_load_ps(ac + j0),
                                           _mm256_cvtepi32_ps(_mm256_and_si256(x, field0)), acc0);
                    acc1 = _mm256_fmadd_ps(_mm256_load_ps(ac + 32 + j0),
                                           _mm256_cvtepi32_ps(_mm256_and_si256(x, field1)), acc1);
                    acc2 = _mm256_fmadd_ps(_mm256_load_ps(ac + 64 + j0),
                                           _mm256_cvtepi32_ps(_mm256_and_si256(x, field2)), acc2);
                    acc3 = _mm256_fmadd_ps(_mm256_load_ps(ac + 96 + j0),
                                           _mm256_cvtepi32_ps(_mm256_and_si256(x, field3)), acc3);
                }
                c += 4;
            } else {
                int s = (int)(c % 4);
                __m256i field = _mm256_set1_epi32(3 << (2 * s));
                __m256 part = _mm256_setzero_ps();
                for (int j0 = 0; j0 < 32; j0 += 8) {
                    __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + j0)));
                    part = _mm256_fmadd_ps(_mm256_load_ps(ac + j0),
                                           _mm256_cvtepi32_ps(_mm256_and_si256(x, field)), part);
                }
                if (s == 0) acc0 = _mm256_add_ps(acc0, part);
                else if (s == 1) acc1 = _mm256_add_ps(acc1, part);
                else if (s == 2) acc2 = _mm256_add_ps(acc2, part);
                else acc3 = _mm256_add_ps(acc3, part);
                c += 1;
            }
        }
        __m256 v = _mm256_add_ps(acc0, _mm256_mul_ps(acc1, _mm256_set1_ps(0.25f)));
        v = _mm256_add_ps(v, _mm256_mul_ps(acc2, _mm256_set1_ps(0.0625f)));
        v = _mm256_add_ps(v, _mm256_mul_ps(acc3, _mm256_set1_ps(0.015625f)));
        float result = hsum_ps(v) - total;
        if (!isfinite(result)) finite = 0;
        sums[col] = result;
    }
    if (!finite) f32_tile(panel, &a, c0, c1, 1, 8, 0, sums);
}

void tmm_f32_kernel_avx2(const uint8_t *panel, size_t kblocks, size_t rows,
                         const float *const *a, size_t chunk_begin, size_t chunk_end,
                         float *sums) {
    (void)kblocks;
    switch (rows) {
    case 1: f32_row_stream(panel, a[0], chunk_begin, chunk_end, sums); break;
    case 2:
        for (int col0 = 0; col0 < TMM_NR; col0 += 4)
            f32_tile(panel, a, chunk_begin, chunk_end, 2, 4, col0, sums);
        break;
    case 3:
        for (int col0 = 0; col0 < TMM_NR; col0 += 2)
            f32_tile(panel, a, chunk_begin, chunk_end, 3, 2, col0, sums);
        break;
    default:
        for (int col0 = 0; col0 < TMM_NR; col0 += 2)
            f32_tile(panel, a, chunk_begin, chunk_end, 4, 2, col0, sums);
        break;
    }
}

void tmm_f32_decode_avx2(const uint8_t *panel, size_t chunk_begin, size_t chunk_end,
                         float *wbuf) {
    const __m256 table = _mm256_setr_ps(-1.0f, 0.0f, 1.0f, 0.0f, -1.0f, 0.0f, 1.0f, 0.0f);
    const size_t span = (chunk_end - chunk_begin) * TMM_CHUNK;
    for (int r = 0; r < TMM_NR; r++) {
        float *dst = wbuf + r * span;
        for (size_t c = chunk_begin; c < chunk_end; c++) {
            const uint8_t *codes = panel + ((c / 4) * TMM_NR + r) * 32;
            __m128i shift = _mm_cvtsi32_si128(2 * (int)(c % 4));
            for (int j0 = 0; j0 < 32; j0 += 8) {
                __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + j0)));
                _mm256_store_ps(dst + (c - chunk_begin) * TMM_CHUNK + j0,
                                _mm256_permutevar_ps(table, _mm256_srl_epi32(x, shift)));
            }
        }
    }
}

static ALWAYS_INLINE void f32_scaled_tile(const uint8_t *panel, const float *const *a,
                                          const struct tmm_group *groups, size_t n_groups,
                                          const float *scales_pg, int ROWS, int COLS, int col0,
                                          float *sums) {
    const __m256 table = _mm256_setr_ps(-1.0f, 0.0f, 1.0f, 0.0f, -1.0f, 0.0f, 1.0f, 0.0f);
    __m256 acc[4][4];
    for (int i = 0; i < ROWS; i++)
        for (int r = 0; r < COLS; r++) acc[i][r] = _mm256_setzero_ps();
    for (size_t g = 0; g < n_groups; g++) {
        const float *scale = scales_pg + g * TMM_NR + col0;
        __m256 scaled_table[4];
        for (int r = 0; r < COLS; r++)
            scaled_table[r] = _mm256_mul_ps(table, _mm256_set1_ps(scale[r]));
        const size_t c_first = groups[g].chunk_begin, seg = groups[g].seg_offset * TMM_CHUNK;
        for (size_t c = c_first; c < groups[g].chunk_end; c++) {
            const uint8_t *block = panel + (c / 4) * TMM_NR * 32;
            const size_t aoff = seg + (c - c_first) * TMM_CHUNK;
            __m128i shift = _mm_cvtsi32_si128(2 * (int)(c % 4));
            for (int j0 = 0; j0 < 32; j0 += 8) {
                for (int r = 0; r < COLS; r++) {
                    __m256i x = _mm256_cvtepu8_epi32(
                        _mm_loadl_epi64((const __m128i *)(block + (col0 + r) * 32 + j0)));
                    __m256 w = _mm256_permutevar_ps(scaled_table[r], _mm256_srl_epi32(x, shift));
                    for (int i = 0; i < ROWS; i++)
                        acc[i][r] = _mm256_fmadd_ps(_mm256_load_ps(a[i] + aoff + j0), w, acc[i][r]);
                }
            }
        }
    }
    for (int i = 0; i < ROWS; i++)
        for (int r = 0; r < COLS; r++) sums[i * TMM_NR + col0 + r] = hsum_ps(acc[i][r]);
}

void tmm_f32_scaled_avx2(const uint8_t *panel, size_t rows, const float *const *a,
                         const struct tmm_group *groups, size_t n_groups, const float *scales_pg,
                         float *sums) {
    switch (rows) {
    case 1:
        for (int col0 = 0; col0 < TMM_NR; col0 += 4)
            f32_scaled_tile(panel, a, groups, n_groups, scales_pg, 1, 4, col0, sums);
        break;
    case 2:
        for (int col0 = 0; col0 < TMM_NR; col0 += 4)
            f32_scaled_tile(panel, a, groups, n_groups, scales_pg, 2, 4, col0, sums);
        break;
    case 3:
        for (int col0 = 0; col0 < TMM_NR; col0 += 2)
            f32_scaled_tile(panel, a, groups, n_groups, scales_pg, 3, 2, col0, sums);
        break;
    default:
        for (int col0 = 0; col0 < TMM_NR; col0 += 2)
            f32_scaled_tile(panel, a, groups, n_groups, scales_pg, 4, 2, col0, sums);
        break;
    }
}

void tmm_f32_decode_scaled_avx2(const uint8_t *panel, size_t chunk_begin, size_t chunk_end,
                                const uint32_t *chunk_group, const float *scales_pg,
                                float *wbuf) {
    const __m256 table = _mm256_setr_ps(-1.0f, 0.0f, 1.0f, 0.0f, -1.0f, 0.0f, 1.0f, 0.0f);
    const size_t span = (chunk_end - chunk_begin) * TMM_CHUNK;
    for (int r = 0; r < TMM_NR; r++) {
        float *dst = wbuf + r * span;
        for (size_t c = chunk_begin; c < chunk_end; c++) {
            const uint8_t *codes = panel + ((c / 4) * TMM_NR + r) * 32;
            __m128i shift = _mm_cvtsi32_si128(2 * (int)(c % 4));
            __m256 scaled_table = _mm256_mul_ps(
                table, _mm256_set1_ps(scales_pg[(size_t)chunk_group[c] * TMM_NR + r]));
            for (int j0 = 0; j0 < 32; j0 += 8) {
                __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + j0)));
                _mm256_store_ps(dst + (c - chunk_begin) * TMM_CHUNK + j0,
                                _mm256_permutevar_ps(scaled_table, _mm256_srl_epi32(x, shift)));
            }
        }
    }
}

static ALWAYS_INLINE void dot_tile(const float *wbuf, size_t span, const float *const *a,
                                   int ROWS, int COLS, int col0, float *sums) {
    __m256 acc[4][4];
    for (int i = 0; i < ROWS; i++)
        for (int r = 0; r < COLS; r++) acc[i][r] = _mm256_setzero_ps();
    for (size_t t = 0; t < span; t += 8) {
        for (int r = 0; r < COLS; r++) {
            __m256 w = _mm256_load_ps(wbuf + (col0 + r) * span + t);
            for (int i = 0; i < ROWS; i++)
                acc[i][r] = _mm256_fmadd_ps(_mm256_load_ps(a[i] + t), w, acc[i][r]);
        }
    }
    for (int i = 0; i < ROWS; i++)
        for (int r = 0; r < COLS; r++) sums[i * TMM_NR + col0 + r] = hsum_ps(acc[i][r]);
}

void tmm_f32_dot_avx2(const float *wbuf, size_t span, size_t rows, const float *const *a,
                      float *sums) {
    switch (rows) {
    case 1:
        for (int col0 = 0; col0 < TMM_NR; col0 += 4) dot_tile(wbuf, span, a, 1, 4, col0, sums);
        break;
    case 2:
        for (int col0 = 0; col0 < TMM_NR; col0 += 4) dot_tile(wbuf, span, a, 2, 4, col0, sums);
        break;
    case 3:
        for (int col0 = 0; col0 < TMM_NR; col0 += 4) dot_tile(wbuf, span, a, 3, 4, col0, sums);
        break;
    default:
        /* Four rows as 3 + 1: a 3 x 4 tile keeps twelve accumulators in registers. */
        for (int col0 = 0; col0 < TMM_NR; col0 += 4) dot_tile(wbuf, span, a, 3, 4, col0, sums);
        for (int col0 = 0; col0 < TMM_NR; col0 += 4)
            dot_tile(wbuf, span, a + 3, 1, 4, col0, sums + 3 * TMM_NR);
        break;
    }
}

int tmm_quantize_row_avx2(const float *a, size_t k, int8_t *q, float *s) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 flt_max = _mm256_set1_ps(FLT_MAX);
    __m256 vmax = _mm256_setzero_ps();
    __m256 finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    size_t i = 0;
    for (; i + 8 <= k; i += 8) {
        __m256 v = _mm256_and_ps(_mm256_loadu_ps(a + i), abs_mask);
        /* Ordered <=: false for NaN and for Inf. */
        finite = _mm256_and_ps(finite, _mm256_cmp_ps(v, flt_max, _CMP_LE_OQ));
        vmax = _mm256_max_ps(vmax, v);
    }
    if (_mm256_movemask_ps(finite) != 0xff) return 0;
    float lanes[8];
    _mm256_storeu_ps(lanes, vmax);
    float amax = 0.0f;
    for (int l = 0; l < 8; l++)
        if (lanes[l] > amax) amax = lanes[l];
    for (size_t t = i; t < k; t++) {
        float v = fabsf(a[t]);
        if (!(v <= FLT_MAX)) return 0;
        if (v > amax) amax = v;
    }
    float scale = 127.0f * (1.0f / fmaxf(amax, 1e-5f)); /* tmatmul.h: as PyTorch rounds it */
    const __m256 vs = _mm256_set1_ps(scale);
    const __m256 lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    i = 0;
    for (; i + 32 <= k; i += 32) {
        __m256i parts[4];
        for (int p = 0; p < 4; p++) {
            __m256 x = _mm256_mul_ps(_mm256_loadu_ps(a + i + 8 * p), vs);
            x = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
            parts[p] = _mm256_cvtps_epi32(x);
        }
        /* packs works within 128-bit lanes; the permute restores k order. */
        __m256i w01 = _mm256_packs_epi32(parts[0], parts[1]);
        __m256i w23 = _mm256_packs_epi32(parts[2], parts[3]);
        __m256i b = _mm256_packs_epi16(w01, w23);
        _mm256_storeu_si256((__m256i *)(q + i), _mm256_permutevar8x32_epi32(b, order));
    }
    for (; i < k; i++) {
        float r = rintf(a[i] * scale);
        if (r > 127.0f) r = 127.0f;
        if (r < -128.0f) r = -128.0f;
        q[i] = (int8_t)r;
    }
    *s = scale;
    return 1;
}

/* ---- table-lookup integer kernel for many activation rows (exact) -----
 *
 * The multiply kernel spends one vpmaddubsw per 32 products; Zen-class cores
 * issue it on a single pipe, which caps the M > 1 path at 16 products a
 * cycle. With a group of G = 8 or 16 rows at once the products can come from
 * tables instead: a nibble of a packed byte holds the codes (n0, n1) of k and
 * k + 32 (bits 0-1 and 2-3), so for every nibble position of a K-block one
 * table of int16 vectors
 *     T[n0 + 4 n1][i] = n0 * q_i[k] + n1 * q_i[k + 32]      (i < G)
 * is built once and then serves every column: one vpaddw per nibble adds two
 * codes' products for all G rows. The index arithmetic (rorx, and) runs on
 * the integer ALUs; the vector side is one load and one add.
 *
 * Entries lie in [2 * 2 * -128, 2 * 2 * 127] = [-512, 508], and a column
 * takes 64 of them per K-block (32 bytes, two nibbles each) before it is
 * widened into int32, so the int16 sums stay in range (64 * -512 = -32768).
 */

/* Slots per table: the largest index n0 + 4 n1 with codes <= 2 is 10. */
#define LUT_SLOTS 11
/* Tables per K-block: 32 bytes, two nibbles each. */
#define LUT_TABLES (TMM_CHUNK * 2)

/* Byte offset of the table entry for nibble i (0..15) of x, entries of
 * 2^entry_shift bytes: ((x >> 4i) & 15) << entry_shift. A rotation (one rorx,
 * which leaves x intact) brings the nibble into place for any i. */
static ALWAYS_INLINE size_t nibble_offset(uint64_t x, int i, int entry_shift) {
    const unsigned right = (unsigned)(4 * i - entry_shift) & 63;
    const uint64_t rotated = (x >> right) | (x << ((64 - right) & 63));
    return (size_t)(rotated & ((uint64_t)15 << entry_shift));
}

/* The nine entries of one table from the rows' values at k (q0) and k + 32 (q1).
 * Slots 3 and 7 (a code of 3) never occur in packed weights and stay unwritten. */
#define LUT_FILL_TABLE(t, q0, q1, add, zero)                                                   \
    do {                                                                                       \
        const __typeof__(q0) q0x2_ = add(q0, q0), q1x2_ = add(q1, q1);                         \
        (t)[0] = zero();                                                                       \
        (t)[1] = q0;                                                                           \
        (t)[2] = q0x2_;                                                                        \
        (t)[4] = q1;                                                                           \
        (t)[5] = add(q1, q0);                                                                  \
        (t)[6] = add(q1, q0x2_);                                                               \
        (t)[8] = q1x2_;                                                                        \
        (t)[9] = add(q1x2_, q0);                                                               \
        (t)[10] = add(q1x2_, q0x2_);                                                           \
    } while (0)

/* Tables of one K-block; qt holds the block's 128 k-vectors of G int16. The
 * low nibble of byte j codes k = j, j + 32; the high one k = j + 64, j + 96. */
static void build_tables16(const int16_t *qt, __m256i *tables) {
    for (int j = 0; j < TMM_CHUNK; j++)
        for (int h = 0; h < 2; h++) {
            const __m256i q0 = _mm256_load_si256((const __m256i *)(qt + (64 * h + j) * 16));
            const __m256i q1 = _mm256_load_si256((const __m256i *)(qt + (64 * h + 32 + j) * 16));
            LUT_FILL_TABLE(tables + (2 * j + h) * LUT_SLOTS, q0, q1, _mm256_add_epi16,
                           _mm256_setzero_si256);
        }
}

static void build_tables8(const int16_t *qt, __m128i *tables) {
    for (int j = 0; j < TMM_CHUNK; j++)
        for (int h = 0; h < 2; h++) {
            const __m128i q0 = _mm_load_si128((const __m128i *)(qt + (64 * h + j) * 8));
            const __m128i q1 = _mm_load_si128((const __m128i *)(qt + (64 * h + 32 + j) * 8));
            LUT_FILL_TABLE(tables + (2 * j + h) * LUT_SLOTS, q0, q1, _mm_add_epi16,
                           _mm_setzero_si128);
        }
}

/* Sums of one column's 32 code bytes of a K-block for 16 rows, int16. */
static ALWAYS_INLINE __m256i column_block16(const uint8_t *codes, const __m256i *tables) {
    const char *base = (const char *)tables;
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                      _mm256_setzero_si256()};
    /* Fully unrolled: every table offset becomes an immediate displacement. */
#pragma GCC unroll 4
    for (int word = 0; word < 4; word++) {
        uint64_t x;
        memcpy(&x, codes + 8 * word, sizeof x);
        for (int i = 0; i < 16; i++) {
            const size_t table = (size_t)(2 * (8 * word + i / 2) + i % 2);
            const __m256i entry = _mm256_load_si256(
                (const __m256i *)(base + table * LUT_SLOTS * 32 + nibble_offset(x, i, 5)));
            acc[i % 4] = _mm256_add_epi16(acc[i % 4], entry);
        }
    }
    return _mm256_add_epi16(_mm256_add_epi16(acc[0], acc[1]), _mm256_add_epi16(acc[2], acc[3]));
}

static ALWAYS_INLINE __m128i column_block8(const uint8_t *codes, const __m128i *tables) {
    const char *base = (const char *)tables;
    __m128i acc[4] = {_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128(),
                      _mm_setzero_si128()};
    /* Fully unrolled: every table offset becomes an immediate displacement. */
#pragma GCC unroll 4
    for (int word = 0; word < 4; word++) {
        uint64_t x;
        memcpy(&x, codes + 8 * word, sizeof x);
        for (int i = 0; i < 16; i++) {
            const size_t table = (size_t)(2 * (8 * word + i / 2) + i % 2);
            const __m128i entry = _mm_load_si128(
                (const __m128i *)(base + table * LUT_SLOTS * 16 + nibble_offset(x, i, 4)));
            acc[i % 4] = _mm_add_epi16(acc[i % 4], entry);
        }
    }
    return _mm_add_epi16(_mm_add_epi16(acc[0], acc[1]), _mm_add_epi16(acc[2], acc[3]));
}

/* Panels are kblocks * 256 bytes apart: too far for the stride prefetcher. */
static ALWAYS_INLINE void prefetch_panel_block(const uint8_t *block) {
    for (int line = 0; line < TMM_NR * 32; line += 64)
        _mm_prefetch((const char *)(block + line), _MM_HINT_T0);
}

void tmm_i8_lut_avx2(const uint8_t *packed, size_t kblocks, size_t p_begin, size_t p_end,
                     size_t group_rows, const int16_t *qt, uint32_t *usum) {
    const size_t cols = (p_end - p_begin) * TMM_NR;
    memset(usum, 0, cols * group_rows * sizeof(uint32_t));
    const size_t panel_stride = kblocks * TMM_NR * 32;
    /* Modulo 2^32 sums, as the multiply kernels: the caller's correction is exact. */
    if (group_rows == 16) {
        __m256i tables[LUT_TABLES * LUT_SLOTS];
        for (size_t b = 0; b < kblocks; b++) {
            build_tables16(qt + b * TMM_KBLOCK * 16, tables);
            for (size_t p = p_begin; p < p_end; p++) {
                const uint8_t *block = packed + p * panel_stride + b * TMM_NR * 32;
                if (p + 2 < p_end) prefetch_panel_block(block + 2 * panel_stride);
                __m256i *dst = (__m256i *)(usum + (p - p_begin) * TMM_NR * 16);
                for (int r = 0; r < TMM_NR; r++) {
                    const __m256i sums = column_block16(block + r * 32, tables);
                    dst[2 * r] = _mm256_add_epi32(
                        dst[2 * r], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(sums)));
                    dst[2 * r + 1] = _mm256_add_epi32(
                        dst[2 * r + 1], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(sums, 1)));
                }
            }
        }
    } else {
        __m128i tables[LUT_TABLES * LUT_SLOTS];
        for (size_t b = 0; b < kblocks; b++) {
            build_tables8(qt + b * TMM_KBLOCK * 8, tables);
            for (size_t p = p_begin; p < p_end; p++) {
                const uint8_t *block = packed + p * panel_stride + b * TMM_NR * 32;
                if (p + 2 < p_end) prefetch_panel_block(block + 2 * panel_stride);
                __m256i *dst = (__m256i *)(usum + (p - p_begin) * TMM_NR * 8);
                for (int r = 0; r < TMM_NR; r++)
                    dst[r] = _mm256_add_epi32(
                        dst[r], _mm256_cvtepi16_epi32(column_block8(block + r * 32, tables)));
            }
        }
    }
}

/* ---- float GEMM (TMM_PATH_F32_GEMM) --------------------------------------- */

void tmm_f32_gemm_decode_avx2(const uint8_t *block, float *wdec) {
    const __m256 code_value = _mm256_setr_ps(-1.0f, 0.0f, 1.0f, 0.0f, 0, 0, 0, 0);
    const __m256i three = _mm256_set1_epi32(3);
    for (size_t r = 0; r < TMM_NR; r++) {
        for (size_t part = 0; part < 4; part++) {
            /* bytes 8 part .. 8 part + 7 hold k = 32 s + 8 part + j, chunk s at bits 2 s */
            __m256i bytes = _mm256_cvtepu8_epi32(
                _mm_loadl_epi64((const __m128i *)(block + r * 32 + part * 8)));
            for (int s = 0; s < 4; s++) {
                __m256i code = _mm256_and_si256(_mm256_srli_epi32(bytes, 2 * s), three);
                _mm256_storeu_ps(wdec + r * TMM_KBLOCK + 32 * s + 8 * part,
                                 _mm256_permutevar8x32_ps(code_value, code));
            }
        }
    }
}

/* VECS vectors of eight rows by COLS of the panel's columns starting at col0:
 * two vectors by four columns need six loads (two activation vectors, four
 * weight broadcasts) per eight multiply-adds, one vector by eight columns nine. */
static ALWAYS_INLINE void f32_gemm_tile(const float *wdec, const float *at, size_t width,
                                        float *acc, int VECS, int COLS, int col0) {
    __m256 c[TMM_NR][2];
    for (int r = 0; r < COLS; r++)
        for (int v = 0; v < VECS; v++) c[r][v] = _mm256_loadu_ps(acc + (col0 + r) * width + 8 * v);
    for (size_t t = 0; t < TMM_KBLOCK; t++) {
        __m256 a[2];
        for (int v = 0; v < VECS; v++) a[v] = _mm256_loadu_ps(at + t * width + 8 * v);
        for (int r = 0; r < COLS; r++) {
            __m256 w = _mm256_broadcast_ss(wdec + (col0 + r) * TMM_KBLOCK + t);
            for (int v = 0; v < VECS; v++) c[r][v] = _mm256_fmadd_ps(a[v], w, c[r][v]);
        }
    }
    for (int r = 0; r < COLS; r++)
        for (int v = 0; v < VECS; v++) _mm256_storeu_ps(acc + (col0 + r) * width + 8 * v, c[r][v]);
}

void tmm_f32_gemm_avx2(const float *wdec, const float *at, size_t width, float *acc) {
    if (width == 16) {
        f32_gemm_tile(wdec, at, width, acc, 2, 4, 0);
        f32_gemm_tile(wdec, at, width, acc, 2, 4, 4);
    } else {
        f32_gemm_tile(wdec, at, width, acc, 1, TMM_NR, 0);
    }
}

const struct tmm_kernels tmm_kernels_avx2 = {
    .i8 = i8_kernel_avx2,
    .f32 = tmm_f32_kernel_avx2,
    .quantize = tmm_quantize_row_avx2,
    .i8_groups = tmm_i8_groups_avx2,
    .f32_decode = tmm_f32_decode_avx2,
    .f32_dot = tmm_f32_dot_avx2,
    .f32_scaled = tmm_f32_scaled_avx2,
    .f32_decode_scaled = tmm_f32_decode_scaled_avx2,
    .i8_lut = tmm_i8_lut_avx2,
    /* Only the plain AVX2 level looks up single rows: vpmaddubsw issues on one
     * pipe on the CPUs it serves; the VNNI levels multiply faster. */
    .gemv_tables = tmm_gemv_tables_avx2,
    .gemv = tmm_gemv_avx2,
    .f32_gemm_decode = tmm_f32_gemm_decode_avx2,
    .f32_gemm = tmm_f32_gemm_avx2,
    .f32_gemm_lanes = 8,
    .f32_gemm_width = 16,
};
