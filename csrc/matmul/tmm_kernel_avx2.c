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
};
