/* AVX-512 (F/BW/VL/DQ) codec kernels: the AVX2 algorithms on 512-bit vectors.
 * Remainders go to the scalar row functions, so results match the reference
 * byte for byte. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "codec_base3_masks.h"
#include "codec_internal.h"
#include "obx_common.h"

/* 64 packed 2bit bytes -> 256 values in {-1,0,1}; ORs bad-code bits into *bad. */
static inline void decode_2bit_64(const uint8_t *in, int8_t *out, __m512i *bad) {
    const __m512i low2 = _mm512_set1_epi8(3), ones = _mm512_set1_epi8(1);
    __m512i v = _mm512_loadu_si512((const void *)in);
    *bad = _mm512_or_si512(*bad, _mm512_and_si512(_mm512_and_si512(v, _mm512_srli_epi16(v, 1)),
                                                  _mm512_set1_epi8(0x55)));
    __m512i c0 = _mm512_and_si512(v, low2);
    __m512i c1 = _mm512_and_si512(_mm512_srli_epi16(v, 2), low2);
    __m512i c2 = _mm512_and_si512(_mm512_srli_epi16(v, 4), low2);
    __m512i c3 = _mm512_and_si512(_mm512_srli_epi16(v, 6), low2);
    __m512i p01_lo = _mm512_unpacklo_epi8(c0, c1), p01_hi = _mm512_unpackhi_epi8(c0, c1);
    __m512i p23_lo = _mm512_unpacklo_epi8(c2, c3), p23_hi = _mm512_unpackhi_epi8(c2, c3);
    /* 128-bit lane L of q_i holds the codes of bytes 16L + 4i .. 16L + 4i + 3 */
    __m512i q0 = _mm512_unpacklo_epi16(p01_lo, p23_lo);
    __m512i q1 = _mm512_unpackhi_epi16(p01_lo, p23_lo);
    __m512i q2 = _mm512_unpacklo_epi16(p01_hi, p23_hi);
    __m512i q3 = _mm512_unpackhi_epi16(p01_hi, p23_hi);
    /* 4x4 transpose of 128-bit lanes: output m gets lane m of q0, q1, q2, q3 */
    __m512i t0 = _mm512_shuffle_i64x2(q0, q1, 0x44); /* q0.0 q0.1 q1.0 q1.1 */
    __m512i t1 = _mm512_shuffle_i64x2(q2, q3, 0x44); /* q2.0 q2.1 q3.0 q3.1 */
    __m512i t2 = _mm512_shuffle_i64x2(q0, q1, 0xEE); /* q0.2 q0.3 q1.2 q1.3 */
    __m512i t3 = _mm512_shuffle_i64x2(q2, q3, 0xEE); /* q2.2 q2.3 q3.2 q3.3 */
    __m512i o0 = _mm512_shuffle_i64x2(t0, t1, 0x88); /* q0.0 q1.0 q2.0 q3.0 */
    __m512i o1 = _mm512_shuffle_i64x2(t0, t1, 0xDD); /* q0.1 q1.1 q2.1 q3.1 */
    __m512i o2 = _mm512_shuffle_i64x2(t2, t3, 0x88); /* q0.2 q1.2 q2.2 q3.2 */
    __m512i o3 = _mm512_shuffle_i64x2(t2, t3, 0xDD); /* q0.3 q1.3 q2.3 q3.3 */
    _mm512_storeu_si512((void *)(out + 0), _mm512_sub_epi8(o0, ones));
    _mm512_storeu_si512((void *)(out + 64), _mm512_sub_epi8(o1, ones));
    _mm512_storeu_si512((void *)(out + 128), _mm512_sub_epi8(o2, ones));
    _mm512_storeu_si512((void *)(out + 192), _mm512_sub_epi8(o3, ones));
}

static int decode_2bit(const uint8_t *in, size_t n_bytes, int8_t *out) {
    __m512i bad = _mm512_setzero_si512();
    size_t j = 0;
    for (; j + 64 <= n_bytes; j += 64) decode_2bit_64(in + j, out + 4 * j, &bad);
    size_t first;
    int64_t tail_bad = obx_codec_decode_row_scalar(OBX_FMT_2BIT, in + j, 4 * (n_bytes - j),
                                                   out + 4 * j, &first);
    return _mm512_test_epi8_mask(bad, bad) != 0 || tail_bad != 0;
}

static int any_base3_invalid(const uint8_t *in, size_t n) {
    __m512i high = _mm512_setzero_si512();
    size_t j = 0;
    for (; j + 64 <= n; j += 64) high = _mm512_max_epu8(high, _mm512_loadu_si512((const void *)(in + j)));
    int bad = _mm512_cmpgt_epu8_mask(high, _mm512_set1_epi8((char)242)) != 0;
    for (; j < n; j++) bad |= in[j] >= 243;
    return bad;
}

static inline __m512i lane_mask(const uint8_t mask[16]) {
    return _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)mask));
}

/* 64 packed base3 bytes (< 243) -> 320 values; each 128-bit lane handles 16
 * bytes exactly as in the AVX2 kernel (see codec_avx2.c for the arithmetic). */
static inline void decode_base3_64(const uint8_t *in, int8_t *out) {
    const __m512i round_up = _mm512_set1_epi8((char)240), magic = _mm512_set1_epi16(8631);
    __m512i v = _mm512_loadu_si512((const void *)in);
    __m512i f_lo = _mm512_srli_epi16(_mm512_mulhi_epu16(_mm512_unpacklo_epi8(round_up, v), magic), 5);
    __m512i f_hi = _mm512_srli_epi16(_mm512_mulhi_epu16(_mm512_unpackhi_epi8(round_up, v), magic), 5);
    __m512i y = _mm512_xor_si512(_mm512_packus_epi16(f_lo, f_hi), _mm512_set1_epi8((char)0x80));
    const __m512i below_86 = _mm512_set1_epi8(86 - 128), at_least_171 = _mm512_set1_epi8(171 - 128 - 1);
    __m512i digit[5];
    for (int d = 4; d >= 0; d--) {
        __m512i zero_digit = _mm512_movm_epi8(_mm512_cmpgt_epi8_mask(below_86, y));
        __m512i two_digit = _mm512_movm_epi8(_mm512_cmpgt_epi8_mask(y, at_least_171));
        digit[d] = _mm512_sub_epi8(zero_digit, two_digit);
        y = _mm512_add_epi8(_mm512_add_epi8(y, y), y);
    }
    __m512i p01_lo = _mm512_unpacklo_epi8(digit[0], digit[1]), p01_hi = _mm512_unpackhi_epi8(digit[0], digit[1]);
    __m512i p23_lo = _mm512_unpacklo_epi8(digit[2], digit[3]), p23_hi = _mm512_unpackhi_epi8(digit[2], digit[3]);
    __m512i quad[4] = {_mm512_unpacklo_epi16(p01_lo, p23_lo), _mm512_unpackhi_epi16(p01_lo, p23_lo),
                       _mm512_unpacklo_epi16(p01_hi, p23_hi), _mm512_unpackhi_epi16(p01_hi, p23_hi)};
    for (int r = 0; r < 5; r++) {
        __m512i block = _mm512_shuffle_epi8(digit[4], lane_mask(base3_block_masks[r][4]));
        for (int q = base3_first_quad[r]; q <= base3_last_quad[r]; q++)
            block = _mm512_or_si512(block, _mm512_shuffle_epi8(quad[q], lane_mask(base3_block_masks[r][q])));
        _mm_storeu_si128((__m128i *)(out + 16 * r), _mm512_castsi512_si128(block));
        _mm_storeu_si128((__m128i *)(out + 80 + 16 * r), _mm512_extracti32x4_epi32(block, 1));
        _mm_storeu_si128((__m128i *)(out + 160 + 16 * r), _mm512_extracti32x4_epi32(block, 2));
        _mm_storeu_si128((__m128i *)(out + 240 + 16 * r), _mm512_extracti32x4_epi32(block, 3));
    }
}

static int decode_base3(const uint8_t *in, size_t n_bytes, int8_t *out) {
    if (any_base3_invalid(in, n_bytes)) return 1;
    size_t j = 0;
    for (; j + 64 <= n_bytes; j += 64) decode_base3_64(in + j, out + 5 * j);
    obx_codec_base3_decode_lut(in + j, n_bytes - j, out + 5 * j);
    return 0;
}

/* 64 codes in {0,1,2} -> 16 packed 2bit bytes (c0 + 4c1 + 16c2 + 64c3 per dword). */
static inline __m128i pack_2bit_64(__m512i c) {
    __m512i pairs = _mm512_maddubs_epi16(c, _mm512_set1_epi16(1 | 4 << 8));
    return _mm512_cvtepi32_epi8(_mm512_madd_epi16(pairs, _mm512_set1_epi32(1 | 16 << 16)));
}

static inline __m512i codes_from_i8(const int8_t *w, __m512i *high) {
    __m512i c = _mm512_add_epi8(_mm512_loadu_si512((const void *)w), _mm512_set1_epi8(1));
    *high = _mm512_max_epu8(*high, c);
    return c;
}

static int codes_out_of_range(__m512i high) {
    return _mm512_cmpgt_epu8_mask(high, _mm512_set1_epi8(2)) != 0;
}

static int encode_2bit(const int8_t *w, size_t n_bytes, uint8_t *out) {
    __m512i high = _mm512_setzero_si512();
    size_t j = 0;
    for (; j + 16 <= n_bytes; j += 16)
        _mm_storeu_si128((__m128i *)(out + j), pack_2bit_64(codes_from_i8(w + 4 * j, &high)));
    size_t first;
    int64_t tail_bad = obx_codec_encode_row_scalar(OBX_FMT_2BIT, w + 4 * j, 4 * (n_bytes - j),
                                                   out + j, &first);
    return codes_out_of_range(high) || tail_bad != 0;
}

/* 128-bit lane L from lanes + 80 L, L = 0..3. */
static inline __m512i load_lanes(const uint8_t *lanes) {
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)lanes));
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(lanes + 80)), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(lanes + 160)), 2);
    return _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(lanes + 240)), 3);
}

/* Five code blocks (lane L: codes 80L .. 80L + 79, all in {0,1,2}) -> 64 packed
 * base3 bytes; per 128-bit lane exactly the AVX2 pack_base3_blocks. */
static inline __m512i pack_base3_blocks(const __m512i block[5]) {
    const __m512i weights = _mm512_set1_epi32(1 | 3 << 8 | 9 << 16 | 27 << 24);
    const __m512i pair_sum = _mm512_set1_epi16(1);
    __m512i low_sum[4];
    for (int q = 0; q < 4; q++) {
        __m512i quad = _mm512_or_si512(_mm512_shuffle_epi8(block[q], lane_mask(base3_quad_gather[q][q])),
                                       _mm512_shuffle_epi8(block[q + 1], lane_mask(base3_quad_gather[q][q + 1])));
        low_sum[q] = _mm512_madd_epi16(_mm512_maddubs_epi16(quad, weights), pair_sum);
    }
    __m512i d4 = _mm512_setzero_si512();
    for (int r = 0; r < 5; r++)
        d4 = _mm512_or_si512(d4, _mm512_shuffle_epi8(block[r], lane_mask(base3_d4_gather[r])));
    __m512i low = _mm512_packus_epi16(_mm512_packs_epi32(low_sum[0], low_sum[1]),
                                      _mm512_packs_epi32(low_sum[2], low_sum[3]));
    const __m512i times_81 = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 81, (char)162, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
    return _mm512_add_epi8(low, _mm512_shuffle_epi8(times_81, d4));
}

/* Base3 chunk: 320 codes = 64 packed bytes = five code vectors. */
enum { BASE3_CHUNK_BYTES = 64, BASE3_CHUNK_CODES = 320 };

static int encode_base3(const int8_t *w, size_t n_bytes, uint8_t *out) {
    const __m512i one = _mm512_set1_epi8(1);
    __m512i high = _mm512_setzero_si512();
    size_t j = 0;
    for (; j + BASE3_CHUNK_BYTES <= n_bytes; j += BASE3_CHUNK_BYTES) {
        const uint8_t *src = (const uint8_t *)(w + 5 * j);
        __m512i block[5];
        for (int r = 0; r < 5; r++) {
            block[r] = _mm512_add_epi8(load_lanes(src + 16 * r), one);
            high = _mm512_max_epu8(high, block[r]);
        }
        _mm512_storeu_si512((void *)(out + j), pack_base3_blocks(block));
    }
    size_t first;
    int64_t tail_bad = obx_codec_encode_row_scalar(OBX_FMT_BASE3, w + 5 * j, 5 * (n_bytes - j),
                                                   out + j, &first);
    return codes_out_of_range(high) || tail_bad != 0;
}

/* 16 floats -> 16 code bytes 1 + [p > 0.5] - [p < -0.5], p = w * inv; flags
 * non-finite inputs in *bad. */
static inline __m128i ternary_codes_16(const float *w, __m512 inv, __mmask16 *bad) {
    __m512 x = _mm512_loadu_ps(w);
    __m512i magnitude = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff));
    *bad |= _mm512_cmpgt_epi32_mask(magnitude, _mm512_set1_epi32(0x7f7fffff));
    __m512 p = _mm512_mul_ps(x, inv);
    __mmask16 up = _mm512_cmp_ps_mask(p, _mm512_set1_ps(0.5f), _CMP_GT_OQ);
    __mmask16 down = _mm512_cmp_ps_mask(p, _mm512_set1_ps(-0.5f), _CMP_LT_OQ);
    __m512i code = _mm512_set1_epi32(1);
    code = _mm512_mask_mov_epi32(code, up, _mm512_set1_epi32(2));
    code = _mm512_mask_mov_epi32(code, down, _mm512_setzero_si512());
    return _mm512_cvtepi32_epi8(code);
}

/* 64 floats -> 64 code bytes in order. */
static inline __m512i ternary_codes_64(const float *w, __m512 inv, __mmask16 *bad) {
    __m512i c = _mm512_castsi128_si512(ternary_codes_16(w, inv, bad));
    c = _mm512_inserti32x4(c, ternary_codes_16(w + 16, inv, bad), 1);
    c = _mm512_inserti32x4(c, ternary_codes_16(w + 32, inv, bad), 2);
    return _mm512_inserti32x4(c, ternary_codes_16(w + 48, inv, bad), 3);
}

static int ternarize_2bit(const float *w, size_t n_bytes, float inv_scale, uint8_t *out) {
    const __m512 inv = _mm512_set1_ps(inv_scale);
    __mmask16 bad = 0;
    size_t j = 0;
    for (; j + 16 <= n_bytes; j += 16)
        _mm_storeu_si128((__m128i *)(out + j), pack_2bit_64(ternary_codes_64(w + 4 * j, inv, &bad)));
    size_t first;
    int64_t tail_bad = obx_codec_ternarize_row_scalar(OBX_FMT_2BIT, w + 4 * j, 4 * (n_bytes - j),
                                                      inv_scale, out + j, &first);
    return bad != 0 || tail_bad != 0;
}

static int ternarize_base3(const float *w, size_t n_bytes, float inv_scale, uint8_t *out) {
    uint8_t codes[BASE3_CHUNK_CODES];
    const __m512 inv = _mm512_set1_ps(inv_scale);
    __mmask16 bad = 0;
    size_t j = 0;
    for (; j + BASE3_CHUNK_BYTES <= n_bytes; j += BASE3_CHUNK_BYTES) {
        const float *src = w + 5 * j;
        for (int v = 0; v < 5; v++)
            _mm512_storeu_si512((void *)(codes + 64 * v), ternary_codes_64(src + 64 * v, inv, &bad));
        __m512i block[5];
        for (int r = 0; r < 5; r++) block[r] = load_lanes(codes + 16 * r);
        _mm512_storeu_si512((void *)(out + j), pack_base3_blocks(block));
    }
    size_t first;
    int64_t tail_bad = obx_codec_ternarize_row_scalar(OBX_FMT_BASE3, w + 5 * j, 5 * (n_bytes - j),
                                                      inv_scale, out + j, &first);
    return bad != 0 || tail_bad != 0;
}

static void scale_i8_f32(const int8_t *q, size_t n, float scale, float *out) {
    const __m512 s = _mm512_set1_ps(scale);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i bytes = _mm_loadu_si128((const __m128i *)(q + i));
        __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(f, s));
    }
    for (; i < n; i++) out[i] = (float)q[i] * scale;
}

static double abs_sum(const float *w, size_t n) {
    const __m256 sign_off = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m512d lanes = _mm512_setzero_pd(); /* lane j sums elements i with i % 8 == j */
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        lanes = _mm512_add_pd(lanes, _mm512_cvtps_pd(_mm256_and_ps(_mm256_loadu_ps(w + i), sign_off)));
    double pair[4];
    _mm256_storeu_pd(pair, _mm256_add_pd(_mm512_castpd512_pd256(lanes),
                                         _mm512_extractf64x4_pd(lanes, 1)));
    double sum = (pair[0] + pair[1]) + (pair[2] + pair[3]);
    for (; i < n; i++) sum += fabs((double)w[i]);
    return sum;
}

const obx_codec_kernels obx_codec_kernels_avx512 = {
    .decode = {[OBX_FMT_2BIT] = decode_2bit, [OBX_FMT_BASE3] = decode_base3},
    .encode = {[OBX_FMT_2BIT] = encode_2bit, [OBX_FMT_BASE3] = encode_base3},
    .ternarize = {[OBX_FMT_2BIT] = ternarize_2bit, [OBX_FMT_BASE3] = ternarize_base3},
    .scale_i8_f32 = scale_i8_f32,
    .abs_sum = abs_sum,
};
