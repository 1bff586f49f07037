/* Table-lookup integer kernel for many activation rows (AVX2, exact).
 *
 * The multiply kernel spends one vpmaddubsw per 32 products; Zen-class cores
 * issue it on a single pipe, which caps the M > 1 path at 16 products a
 * cycle. With TMM_LUT_ROWS rows at once the products can come from tables
 * instead: a nibble of a packed byte holds the codes (n0, n1) of k and k + 32
 * (bits 0-1 and 2-3), so for every nibble position of a K-block one table of
 * int16 vectors
 *     T[n0 + 4 n1][i] = n0 * q_i[k] + n1 * q_i[k + 32]      (i < TMM_LUT_ROWS)
 * is built once and then serves every column: one vpaddw per nibble adds two
 * codes' products for all rows. The index arithmetic runs on the integer
 * ALUs; the vector side is one load and one add.
 *
 * Entries lie in [2 * 2 * -128, 2 * 2 * 127] = [-512, 508], and a column
 * takes 64 of them per K-block (32 bytes, two nibbles each) before it is
 * widened into int32, so the int16 sums stay in range (64 * -512 = -32768).
 */
#include <immintrin.h>
#include <string.h>

#include "obx_common.h"
#include "tmm_internal.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* Slots per table: the largest index n0 + 4 n1 with codes <= 2 is 10. */
#define LUT_SLOTS 11
/* Tables per K-block: 32 bytes, two nibbles each. */
#define LUT_TABLES (TMM_CHUNK * 2)

/* Tables of one K-block; qt holds the block's 128 k-vectors of TMM_LUT_ROWS int16. */
static void build_tables(const int16_t *qt, __m256i *tables) {
    for (int j = 0; j < TMM_CHUNK; j++)
        for (int h = 0; h < 2; h++) {
            /* The low nibble of byte j codes k = j, j + 32; the high one k = j + 64, j + 96. */
            const __m256i q0 = _mm256_load_si256((const __m256i *)(qt + (64 * h + j) * TMM_LUT_ROWS));
            const __m256i q1 =
                _mm256_load_si256((const __m256i *)(qt + (64 * h + 32 + j) * TMM_LUT_ROWS));
            const __m256i q0x2 = _mm256_add_epi16(q0, q0), q1x2 = _mm256_add_epi16(q1, q1);
            __m256i *t = tables + (2 * j + h) * LUT_SLOTS;
            t[0] = _mm256_setzero_si256();
            t[1] = q0;
            t[2] = q0x2;
            t[4] = q1;
            t[5] = _mm256_add_epi16(q1, q0);
            t[6] = _mm256_add_epi16(q1, q0x2);
            t[8] = q1x2;
            t[9] = _mm256_add_epi16(q1x2, q0);
            t[10] = _mm256_add_epi16(q1x2, q0x2);
            /* Slots 3 and 7 (a code of 3) never occur in packed weights. */
            t[3] = t[7] = _mm256_setzero_si256();
        }
}

/* Byte offset of the table entry for nibble i (0..15) of x: ((x >> 4i) & 15) * 32. */
static ALWAYS_INLINE size_t nibble_offset(uint64_t x, int i) {
    const uint64_t entry_bytes_mask = (uint64_t)15 << 5;
    if (i == 0) return (size_t)((x << 5) & entry_bytes_mask);
    if (i == 1) return (size_t)((x << 1) & entry_bytes_mask);
    return (size_t)((x >> (4 * i - 5)) & entry_bytes_mask);
}

/* Sums of one column's 32 code bytes of a K-block for all rows, int16. */
static ALWAYS_INLINE __m256i column_block(const uint8_t *codes, const __m256i *tables) {
    const char *base = (const char *)tables;
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                      _mm256_setzero_si256()};
    for (int word = 0; word < 4; word++) {
        uint64_t x;
        memcpy(&x, codes + 8 * word, sizeof x);
        for (int i = 0; i < 16; i++) {
            const int table = 2 * (8 * word + i / 2) + i % 2;
            const __m256i entry = _mm256_load_si256(
                (const __m256i *)(base + (size_t)table * LUT_SLOTS * 32 + nibble_offset(x, i)));
            acc[i % 4] = _mm256_add_epi16(acc[i % 4], entry);
        }
    }
    return _mm256_add_epi16(_mm256_add_epi16(acc[0], acc[1]), _mm256_add_epi16(acc[2], acc[3]));
}

void tmm_i8_lut_avx2(const uint8_t *packed, size_t kblocks, size_t p_begin, size_t p_end,
                     const int16_t *qt, uint32_t *usum) {
    __m256i tables[LUT_TABLES * LUT_SLOTS];
    const size_t cols = (p_end - p_begin) * TMM_NR;
    memset(usum, 0, cols * TMM_LUT_ROWS * sizeof(uint32_t));
    const size_t panel_stride = kblocks * TMM_NR * 32;
    for (size_t b = 0; b < kblocks; b++) {
        build_tables(qt + b * TMM_KBLOCK * TMM_LUT_ROWS, tables);
        for (size_t p = p_begin; p < p_end; p++) {
            const uint8_t *block = packed + p * panel_stride + b * TMM_NR * 32;
            /* Panels are kblocks * 256 bytes apart: too far for the stride prefetcher. */
            if (p + 2 < p_end)
                for (int line = 0; line < TMM_NR * 32; line += 64)
                    _mm_prefetch((const char *)(block + 2 * panel_stride + line), _MM_HINT_T0);
            uint32_t *dst = usum + (p - p_begin) * TMM_NR * TMM_LUT_ROWS;
            for (int r = 0; r < TMM_NR; r++) {
                const __m256i sums = column_block(block + r * 32, tables);
                __m256i *d = (__m256i *)(dst + r * TMM_LUT_ROWS);
                /* Modulo 2^32, as the multiply kernels: the caller's correction is exact. */
                d[0] = _mm256_add_epi32(d[0], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(sums)));
                d[1] = _mm256_add_epi32(d[1], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(sums, 1)));
            }
        }
    }
}
