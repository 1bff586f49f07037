/* Single-row integer kernel by table lookup (AVX2, exact) for token
 * generation (M = 1..5, one row at a time): the multiply kernel is bound by
 * vpmaddubsw, which Zen-class cores issue on one pipe; vpshufb issues on two.
 *
 * For every pair of k (2p, 2p + 1) a table holds, for the nine code pairs
 * idx = u0 + 3 u1, the biased sum
 *     T'[idx] = (u0 - 1) q[2p] + (u1 - 1) q[2p + 1] + 256      in [0, 512]
 * (|q| <= 128) split into two byte planes, hi = T' >> 5 in [0, 16] and
 * lo = T' & 31 in [0, 31], so one vpshufb per plane looks up 32 columns
 * (tmm_internal.h, column-block layout). Exactness of the integer stages:
 *   - byte sums of 8 lookups: at most 8 * 16 = 128 and 8 * 31 = 248 < 256;
 *   - those are added as uint16 lanes (even column + 256 * odd column) and the
 *     odd bytes alone, over a slab of TMM_GEMV_SLAB_KBLOCKS = 4 K-blocks (8
 *     byte sums each): a column's plane sum stays below 4 * 8 * 248 = 7936, so
 *     the even sums are recovered exactly as (all - 256 * odd) mod 2^16;
 *   - the slab's 32 hi + lo <= 32 * 4096 + 7936 is added into uint32 lanes,
 *     which wrap modulo 2^32 like the multiply kernels' sums: the caller's
 *     subtraction of the bias gives the exact int32 result.
 */
#include <immintrin.h>
#include <string.h>

#include "obx_common.h"
#include "tmm_internal.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* Software prefetch distance into the weight stream: the hardware prefetchers
 * stop at every 4 KiB page and ramp up again (on Zen1 this took cold
 * 1 x 4096 x 4096 from 0.66 to 0.58 ms). */
#define GEMV_PREFETCH_BYTES 4096

void tmm_gemv_tables_avx2(const int8_t *q, size_t kblocks, uint8_t *tables) {
    /* Lane idx = u0 + 3 u1 holds w0 = u0 - 1 and w1 = u1 - 1; lanes 9..15 are
     * never looked up (codes of 3 do not occur) and hold w = 0. sign_epi16
     * multiplies by -1, 0 or 1 exactly (q = -128 gives 128 in int16). */
    const __m256i w0 = _mm256_setr_epi16(-1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0, 0, 0, 0, 0, 0);
    const __m256i w1 = _mm256_setr_epi16(-1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0);
    const __m256i bias = _mm256_set1_epi16(256), low5 = _mm256_set1_epi16(31);
    const size_t pairs = kblocks * TMM_KBLOCK / 2;
    for (size_t p = 0; p < pairs; p++) {
        __m256i t = _mm256_add_epi16(
            _mm256_add_epi16(_mm256_sign_epi16(_mm256_set1_epi16(q[2 * p]), w0),
                             _mm256_sign_epi16(_mm256_set1_epi16(q[2 * p + 1]), w1)),
            bias);
        /* packus per 128-bit lane gives [hi 0..7, lo 0..7 | hi 8..15, lo 8..15]. */
        __m256i bytes = _mm256_packus_epi16(_mm256_srli_epi16(t, 5), _mm256_and_si256(t, low5));
        _mm256_store_si256((__m256i *)(tables + p * 32),
                           _mm256_permute4x64_epi64(bytes, _MM_SHUFFLE(3, 1, 2, 0)));
    }
}

static ALWAYS_INLINE __m256i table_plane(const uint8_t *table) {
    return _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)table));
}

/* One slab of one column block: adds the slab's biased sums to acc (column
 * 4 i + r of the block in acc[r * 8 + i]). */
static ALWAYS_INLINE void slab_block(const uint8_t *codes, const uint8_t *tables, size_t nk,
                                     uint32_t *acc) {
    const __m256i nibble = _mm256_set1_epi8(15);
    /* Byte sums added as uint16 lanes (even column + 256 odd column) and the
     * odd columns alone: the even sums are the difference, modulo 2^16 and
     * exact since they stay below 2^16. */
    __m256i hi_all = _mm256_setzero_si256(), hi_odd = _mm256_setzero_si256();
    __m256i lo_all = _mm256_setzero_si256(), lo_odd = _mm256_setzero_si256();
    for (size_t b = 0; b < nk; b++) {
        const uint8_t *src = codes + b * TMM_GEMV_COLS * 32;
        const uint8_t *tab = tables + b * (TMM_KBLOCK / 2) * 32;
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            __m256i hi_sum = _mm256_setzero_si256(), lo_sum = _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int v = 4 * g; v < 4 * g + 4; v++) {
                if (v % 2 == 0)
                    _mm_prefetch((const char *)(src + GEMV_PREFETCH_BYTES + v * 32), _MM_HINT_T0);
                const __m256i x = _mm256_load_si256((const __m256i *)(src + v * 32));
                const __m256i idx0 = _mm256_and_si256(x, nibble);
                const __m256i idx1 = _mm256_and_si256(_mm256_srli_epi16(x, 4), nibble);
                const uint8_t *t0 = tab + (2 * v) * 32, *t1 = t0 + 32;
                hi_sum = _mm256_add_epi8(hi_sum, _mm256_shuffle_epi8(table_plane(t0), idx0));
                lo_sum = _mm256_add_epi8(lo_sum, _mm256_shuffle_epi8(table_plane(t0 + 16), idx0));
                hi_sum = _mm256_add_epi8(hi_sum, _mm256_shuffle_epi8(table_plane(t1), idx1));
                lo_sum = _mm256_add_epi8(lo_sum, _mm256_shuffle_epi8(table_plane(t1 + 16), idx1));
            }
            hi_all = _mm256_add_epi16(hi_all, hi_sum);
            hi_odd = _mm256_add_epi16(hi_odd, _mm256_srli_epi16(hi_sum, 8));
            lo_all = _mm256_add_epi16(lo_all, lo_sum);
            lo_odd = _mm256_add_epi16(lo_odd, _mm256_srli_epi16(lo_sum, 8));
        }
    }
    const __m256i hi_even = _mm256_sub_epi16(hi_all, _mm256_slli_epi16(hi_odd, 8));
    const __m256i lo_even = _mm256_sub_epi16(lo_all, _mm256_slli_epi16(lo_odd, 8));
    /* uint16 lane j of the even (odd) sums is column 2 j (2 j + 1); its low and
     * high halves as uint32 lane i are columns 4 i + {0, 2} ({1, 3}). */
    const __m256i low16 = _mm256_set1_epi32(0xffff);
    const __m256i parts[4][2] = {
        {_mm256_and_si256(hi_even, low16), _mm256_and_si256(lo_even, low16)},
        {_mm256_and_si256(hi_odd, low16), _mm256_and_si256(lo_odd, low16)},
        {_mm256_srli_epi32(hi_even, 16), _mm256_srli_epi32(lo_even, 16)},
        {_mm256_srli_epi32(hi_odd, 16), _mm256_srli_epi32(lo_odd, 16)},
    };
    for (int r = 0; r < 4; r++) {
        __m256i *dst = (__m256i *)(acc + r * 8);
        __m256i slab = _mm256_add_epi32(_mm256_slli_epi32(parts[r][0], 5), parts[r][1]);
        _mm256_store_si256(dst, _mm256_add_epi32(_mm256_load_si256(dst), slab));
    }
}

void tmm_gemv_avx2(const uint8_t *gemv_packed, size_t kblocks, size_t cblocks,
                   const uint8_t *tables, size_t cb_begin, size_t cb_end, uint32_t *sums) {
    const size_t blocks = cb_end - cb_begin;
    uint32_t acc[TMM_GEMV_TASK_CBLOCKS * TMM_GEMV_COLS] __attribute__((aligned(TMM_ALIGN)));
    memset(acc, 0, blocks * TMM_GEMV_COLS * sizeof(uint32_t));
    for (size_t b0 = 0; b0 < kblocks; b0 += TMM_GEMV_SLAB_KBLOCKS) {
        const size_t nk = OBX_MIN(TMM_GEMV_SLAB_KBLOCKS, kblocks - b0);
        const uint8_t *tab = tables + b0 * (TMM_KBLOCK / 2) * 32;
        for (size_t cb = cb_begin; cb < cb_end; cb++)
            slab_block(gemv_packed + tmm_gemv_offset(kblocks, cblocks, cb, b0), tab, nk,
                       acc + (cb - cb_begin) * TMM_GEMV_COLS);
    }
    for (size_t cb = 0; cb < blocks; cb++)
        for (int c = 0; c < TMM_GEMV_COLS; c++)
            sums[cb * TMM_GEMV_COLS + c] = acc[cb * TMM_GEMV_COLS + (c % 4) * 8 + c / 4];
}
