/* AVX2 codec kernels. Bulk work in 256-bit vectors; short remainders go to the
 * scalar row functions so every result matches the reference byte for byte. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "codec_base3_masks.h"
#include "codec_internal.h"
#include "obx_common.h"

/* 32 packed 2bit bytes -> 128 values in {-1,0,1}; ORs bad-code bits into *bad. */
static inline void decode_2bit_32(const uint8_t *in, int8_t *out, __m256i *bad) {
    const __m256i low2 = _mm256_set1_epi8(3), ones = _mm256_set1_epi8(1);
    __m256i v = _mm256_loadu_si256((const __m256i *)in);
    /* a field equals 3 when both its bits are set */
    *bad = _mm256_or_si256(*bad, _mm256_and_si256(_mm256_and_si256(v, _mm256_srli_epi16(v, 1)),
                                                  _mm256_set1_epi8(0x55)));
    /* values w = code - 1, one vector per bit pair */
    __m256i c0 = _mm256_sub_epi8(_mm256_and_si256(v, low2), ones);
    __m256i c1 = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v, 2), low2), ones);
    __m256i c2 = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v, 4), low2), ones);
    __m256i c3 = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v, 6), low2), ones);
    /* interleave so the four values of each byte become adjacent (per 128-bit lane) */
    __m256i p01_lo = _mm256_unpacklo_epi8(c0, c1), p01_hi = _mm256_unpackhi_epi8(c0, c1);
    __m256i p23_lo = _mm256_unpacklo_epi8(c2, c3), p23_hi = _mm256_unpackhi_epi8(c2, c3);
    __m256i q0 = _mm256_unpacklo_epi16(p01_lo, p23_lo); /* bytes 0-3 | 16-19 */
    __m256i q1 = _mm256_unpackhi_epi16(p01_lo, p23_lo); /* bytes 4-7 | 20-23 */
    __m256i q2 = _mm256_unpacklo_epi16(p01_hi, p23_hi); /* bytes 8-11 | 24-27 */
    __m256i q3 = _mm256_unpackhi_epi16(p01_hi, p23_hi); /* bytes 12-15 | 28-31 */
    /* 128-bit stores put the lanes in place without cross-lane shuffles, which
     * are slow on some AVX2 CPUs (Zen 1) */
    _mm_storeu_si128((__m128i *)(out + 0), _mm256_castsi256_si128(q0));
    _mm_storeu_si128((__m128i *)(out + 16), _mm256_castsi256_si128(q1));
    _mm_storeu_si128((__m128i *)(out + 32), _mm256_castsi256_si128(q2));
    _mm_storeu_si128((__m128i *)(out + 48), _mm256_castsi256_si128(q3));
    _mm_storeu_si128((__m128i *)(out + 64), _mm256_extracti128_si256(q0, 1));
    _mm_storeu_si128((__m128i *)(out + 80), _mm256_extracti128_si256(q1, 1));
    _mm_storeu_si128((__m128i *)(out + 96), _mm256_extracti128_si256(q2, 1));
    _mm_storeu_si128((__m128i *)(out + 112), _mm256_extracti128_si256(q3, 1));
}

static int decode_2bit(const uint8_t *in, size_t n_bytes, int8_t *out) {
    __m256i bad = _mm256_setzero_si256();
    size_t j = 0;
    for (; j + 32 <= n_bytes; j += 32) decode_2bit_32(in + j, out + 4 * j, &bad);
    size_t first;
    int64_t tail_bad = obx_codec_decode_row_scalar(OBX_FMT_2BIT, in + j, 4 * (n_bytes - j),
                                                   out + 4 * j, &first);
    return !_mm256_testz_si256(bad, bad) || tail_bad != 0;
}

/* 1 when some byte of in[0..n) is >= 243. */
static int any_base3_invalid(const uint8_t *in, size_t n) {
    const __m256i limit = _mm256_set1_epi8((char)242);
    __m256i high = _mm256_setzero_si256();
    size_t j = 0;
    for (; j + 32 <= n; j += 32)
        high = _mm256_max_epu8(high, _mm256_loadu_si256((const __m256i *)(in + j)));
    /* max(high, 242) == 242 in every byte iff all bytes were <= 242 */
    int bad = _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_max_epu8(high, limit), limit)) != -1;
    for (; j < n; j++) bad |= in[j] >= 243;
    return bad;
}

static inline __m256i lane_mask(const uint8_t mask[16]) {
    return _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)mask));
}

/* 32 packed base3 bytes (< 243) -> 160 values. Each 128-bit lane handles 16 bytes.
 * f = ceil(256 b / 243) is b / 243 as an 8-bit fraction; multiplying it by 3
 * pushes out the base-3 digits most significant first: d = floor(3x / 256),
 * x <- 3x mod 256 (exact for every b < 243; the tests check all of them).
 * x is kept biased as y = x - 128 so signed compares order it, and since
 * 3(y + 128) - 128 = 3y + 256, the update stays y <- 3y mod 256. */
static inline void decode_base3_32(const uint8_t *in, int8_t *out) {
    const __m256i round_up = _mm256_set1_epi8((char)240), magic = _mm256_set1_epi16(8631);
    __m256i v = _mm256_loadu_si256((const __m256i *)in);
    /* words 256 b + 240; (word * 8631) >> 21 == ceil(256 b / 243) for b < 243 */
    __m256i f_lo = _mm256_srli_epi16(_mm256_mulhi_epu16(_mm256_unpacklo_epi8(round_up, v), magic), 5);
    __m256i f_hi = _mm256_srli_epi16(_mm256_mulhi_epu16(_mm256_unpackhi_epi8(round_up, v), magic), 5);
    __m256i y = _mm256_xor_si256(_mm256_packus_epi16(f_lo, f_hi), _mm256_set1_epi8((char)0x80));
    const __m256i below_86 = _mm256_set1_epi8(86 - 128), at_least_171 = _mm256_set1_epi8(171 - 128 - 1);
    __m256i digit[5];
    for (int d = 4; d >= 0; d--) {
        __m256i zero_digit = _mm256_cmpgt_epi8(below_86, y);  /* x < 86: digit 0 */
        __m256i two_digit = _mm256_cmpgt_epi8(y, at_least_171); /* x >= 171: digit 2 */
        digit[d] = _mm256_sub_epi8(zero_digit, two_digit);     /* -1, 0 or 1 */
        y = _mm256_add_epi8(_mm256_add_epi8(y, y), y);
    }
    __m256i p01_lo = _mm256_unpacklo_epi8(digit[0], digit[1]), p01_hi = _mm256_unpackhi_epi8(digit[0], digit[1]);
    __m256i p23_lo = _mm256_unpacklo_epi8(digit[2], digit[3]), p23_hi = _mm256_unpackhi_epi8(digit[2], digit[3]);
    __m256i quad[4] = {_mm256_unpacklo_epi16(p01_lo, p23_lo), _mm256_unpackhi_epi16(p01_lo, p23_lo),
                       _mm256_unpacklo_epi16(p01_hi, p23_hi), _mm256_unpackhi_epi16(p01_hi, p23_hi)};
    for (int r = 0; r < 5; r++) {
        __m256i block = _mm256_shuffle_epi8(digit[4], lane_mask(base3_block_masks[r][4]));
        for (int q = base3_first_quad[r]; q <= base3_last_quad[r]; q++)
            block = _mm256_or_si256(block, _mm256_shuffle_epi8(quad[q], lane_mask(base3_block_masks[r][q])));
        _mm_storeu_si128((__m128i *)(out + 16 * r), _mm256_castsi256_si128(block));
        _mm_storeu_si128((__m128i *)(out + 80 + 16 * r), _mm256_extracti128_si256(block, 1));
    }
}

static int decode_base3(const uint8_t *in, size_t n_bytes, int8_t *out) {
    if (any_base3_invalid(in, n_bytes)) return 1;
    size_t j = 0;
    for (; j + 32 <= n_bytes; j += 32) decode_base3_32(in + j, out + 5 * j);
    obx_codec_base3_decode_lut(in + j, n_bytes - j, out + 5 * j);
    return 0;
}

/* 128 codes in {0,1,2} (four vectors, in order) -> 32 packed 2bit bytes. */
static inline __m256i pack_2bit_128(__m256i c0, __m256i c1, __m256i c2, __m256i c3) {
    const __m256i w14 = _mm256_set1_epi16(1 | 4 << 8), w1_16 = _mm256_set1_epi32(1 | 16 << 16);
    /* c0 + 4c1 per 16-bit pair, then + 16 (c2 + 4c3) per 32-bit group */
    __m256i d0 = _mm256_madd_epi16(_mm256_maddubs_epi16(c0, w14), w1_16);
    __m256i d1 = _mm256_madd_epi16(_mm256_maddubs_epi16(c1, w14), w1_16);
    __m256i d2 = _mm256_madd_epi16(_mm256_maddubs_epi16(c2, w14), w1_16);
    __m256i d3 = _mm256_madd_epi16(_mm256_maddubs_epi16(c3, w14), w1_16);
    __m256i packed = _mm256_packus_epi16(_mm256_packs_epi32(d0, d1), _mm256_packs_epi32(d2, d3));
    /* undo the per-lane interleaving of the two pack steps */
    return _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* 32 int8 inputs -> codes w + 1; folds them into *high for the range check. */
static inline __m256i codes_from_i8(const int8_t *w, __m256i *high) {
    __m256i c = _mm256_add_epi8(_mm256_loadu_si256((const __m256i *)w), _mm256_set1_epi8(1));
    *high = _mm256_max_epu8(*high, c);
    return c;
}

static int codes_out_of_range(__m256i high) {
    const __m256i two = _mm256_set1_epi8(2);
    return _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_max_epu8(high, two), two)) != -1;
}

static int encode_2bit(const int8_t *w, size_t n_bytes, uint8_t *out) {
    __m256i high = _mm256_setzero_si256();
    size_t j = 0;
    for (; j + 32 <= n_bytes; j += 32) {
        const int8_t *src = w + 4 * j;
        __m256i c0 = codes_from_i8(src, &high), c1 = codes_from_i8(src + 32, &high);
        __m256i c2 = codes_from_i8(src + 64, &high), c3 = codes_from_i8(src + 96, &high);
        _mm256_storeu_si256((__m256i *)(out + j), pack_2bit_128(c0, c1, c2, c3));
    }
    size_t first;
    int64_t tail_bad = obx_codec_encode_row_scalar(OBX_FMT_2BIT, w + 4 * j, 4 * (n_bytes - j),
                                                   out + j, &first);
    return codes_out_of_range(high) || tail_bad != 0;
}

/* Lane 0 from lo[0..16), lane 1 from hi[0..16). */
static inline __m256i load_lanes(const void *lo, const void *hi) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)lo)),
                                   _mm_loadu_si128((const __m128i *)hi), 1);
}

/* Five code blocks (lane 0: codes 0..79, lane 1: codes 80..159, all in {0,1,2})
 * -> 32 packed base3 bytes. */
static inline __m256i pack_base3_blocks(const __m256i block[5]) {
    const __m256i weights = _mm256_set1_epi32(1 | 3 << 8 | 9 << 16 | 27 << 24);
    const __m256i pair_sum = _mm256_set1_epi16(1);
    __m256i low_sum[4];
    for (int q = 0; q < 4; q++) {
        __m256i quad = _mm256_or_si256(_mm256_shuffle_epi8(block[q], lane_mask(base3_quad_gather[q][q])),
                                       _mm256_shuffle_epi8(block[q + 1], lane_mask(base3_quad_gather[q][q + 1])));
        /* c0 + 3c1 + 9c2 + 27c3 per 32-bit group */
        low_sum[q] = _mm256_madd_epi16(_mm256_maddubs_epi16(quad, weights), pair_sum);
    }
    __m256i d4 = _mm256_setzero_si256();
    for (int r = 0; r < 5; r++)
        d4 = _mm256_or_si256(d4, _mm256_shuffle_epi8(block[r], lane_mask(base3_d4_gather[r])));
    __m256i low = _mm256_packus_epi16(_mm256_packs_epi32(low_sum[0], low_sum[1]),
                                      _mm256_packs_epi32(low_sum[2], low_sum[3]));
    const __m256i times_81 = _mm256_setr_epi8(0, 81, (char)162, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                              0, 81, (char)162, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm256_add_epi8(low, _mm256_shuffle_epi8(times_81, d4));
}

/* Base3 chunk: 160 codes = 32 packed bytes = five code vectors. */
enum { BASE3_CHUNK_BYTES = 32, BASE3_CHUNK_CODES = 160 };

static int encode_base3(const int8_t *w, size_t n_bytes, uint8_t *out) {
    const __m256i one = _mm256_set1_epi8(1);
    __m256i high = _mm256_setzero_si256();
    size_t j = 0;
    for (; j + BASE3_CHUNK_BYTES <= n_bytes; j += BASE3_CHUNK_BYTES) {
        const int8_t *src = w + 5 * j;
        __m256i block[5];
        for (int r = 0; r < 5; r++) {
            block[r] = _mm256_add_epi8(load_lanes(src + 16 * r, src + 80 + 16 * r), one);
            high = _mm256_max_epu8(high, block[r]);
        }
        _mm256_storeu_si256((__m256i *)(out + j), pack_base3_blocks(block));
    }
    size_t first;
    int64_t tail_bad = obx_codec_encode_row_scalar(OBX_FMT_BASE3, w + 5 * j, 5 * (n_bytes - j),
                                                   out + j, &first);
    return codes_out_of_range(high) || tail_bad != 0;
}

/* 8 floats -> 8 codes (int32) 1 + [p > 0.5] - [p < -0.5], p = w * inv, which is
 * clip(rint(p), -1, 1) + 1 under round-half-even; flags non-finite inputs. */
static inline __m256i ternary_codes_8(const float *w, __m256 inv, __m256i *bad) {
    __m256 x = _mm256_loadu_ps(w);
    __m256i magnitude = _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fffffff));
    *bad = _mm256_or_si256(*bad, _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7f7fffff)));
    __m256 p = _mm256_mul_ps(x, inv);
    __m256i up = _mm256_castps_si256(_mm256_cmp_ps(p, _mm256_set1_ps(0.5f), _CMP_GT_OQ));
    __m256i down = _mm256_castps_si256(_mm256_cmp_ps(p, _mm256_set1_ps(-0.5f), _CMP_LT_OQ));
    return _mm256_sub_epi32(_mm256_add_epi32(_mm256_set1_epi32(1), down), up);
}

/* 32 floats -> 32 code bytes in order. */
static inline __m256i ternary_codes_32(const float *w, __m256 inv, __m256i *bad) {
    __m256i a = ternary_codes_8(w, inv, bad), b = ternary_codes_8(w + 8, inv, bad);
    __m256i c = ternary_codes_8(w + 16, inv, bad), d = ternary_codes_8(w + 24, inv, bad);
    __m256i packed = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static int ternarize_2bit(const float *w, size_t n_bytes, float inv_scale, uint8_t *out) {
    const __m256 inv = _mm256_set1_ps(inv_scale);
    __m256i bad = _mm256_setzero_si256();
    size_t j = 0;
    for (; j + 32 <= n_bytes; j += 32) {
        const float *src = w + 4 * j;
        __m256i c0 = ternary_codes_32(src, inv, &bad), c1 = ternary_codes_32(src + 32, inv, &bad);
        __m256i c2 = ternary_codes_32(src + 64, inv, &bad), c3 = ternary_codes_32(src + 96, inv, &bad);
        _mm256_storeu_si256((__m256i *)(out + j), pack_2bit_128(c0, c1, c2, c3));
    }
    size_t first;
    int64_t tail_bad = obx_codec_ternarize_row_scalar(OBX_FMT_2BIT, w + 4 * j, 4 * (n_bytes - j),
                                                      inv_scale, out + j, &first);
    return !_mm256_testz_si256(bad, bad) || tail_bad != 0;
}

static int ternarize_base3(const float *w, size_t n_bytes, float inv_scale, uint8_t *out) {
    uint8_t codes[BASE3_CHUNK_CODES];
    const __m256 inv = _mm256_set1_ps(inv_scale);
    __m256i bad = _mm256_setzero_si256();
    size_t j = 0;
    for (; j + BASE3_CHUNK_BYTES <= n_bytes; j += BASE3_CHUNK_BYTES) {
        const float *src = w + 5 * j;
        for (int v = 0; v < 5; v++)
            _mm256_storeu_si256((__m256i *)(codes + 32 * v), ternary_codes_32(src + 32 * v, inv, &bad));
        __m256i block[5];
        for (int r = 0; r < 5; r++) block[r] = load_lanes(codes + 16 * r, codes + 80 + 16 * r);
        _mm256_storeu_si256((__m256i *)(out + j), pack_base3_blocks(block));
    }
    size_t first;
    int64_t tail_bad = obx_codec_ternarize_row_scalar(OBX_FMT_BASE3, w + 5 * j, 5 * (n_bytes - j),
                                                      inv_scale, out + j, &first);
    return !_mm256_testz_si256(bad, bad) || tail_bad != 0;
}

static void scale_i8_f32(const int8_t *q, size_t n, float scale, float *out) {
    const __m256 s = _mm256_set1_ps(scale);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i bytes = _mm_loadl_epi64((const __m128i *)(q + i));
        __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(f, s));
    }
    for (; i < n; i++) out[i] = (float)q[i] * scale;
}

static double abs_sum(const float *w, size_t n) {
    const __m256 sign_off = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256d lanes_0_3 = _mm256_setzero_pd(), lanes_4_7 = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_and_ps(_mm256_loadu_ps(w + i), sign_off);
        lanes_0_3 = _mm256_add_pd(lanes_0_3, _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
        lanes_4_7 = _mm256_add_pd(lanes_4_7, _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
    }
    double pair[4];
    _mm256_storeu_pd(pair, _mm256_add_pd(lanes_0_3, lanes_4_7)); /* l0+l4, l1+l5, ... */
    double sum = (pair[0] + pair[1]) + (pair[2] + pair[3]);
    for (; i < n; i++) sum += fabs((double)w[i]);
    return sum;
}

const obx_codec_kernels obx_codec_kernels_avx2 = {
    .decode = {[OBX_FMT_2BIT] = decode_2bit, [OBX_FMT_BASE3] = decode_base3},
    .encode = {[OBX_FMT_2BIT] = encode_2bit, [OBX_FMT_BASE3] = encode_base3},
    .ternarize = {[OBX_FMT_2BIT] = ternarize_2bit, [OBX_FMT_BASE3] = ternarize_base3},
    .scale_i8_f32 = scale_i8_f32,
    .abs_sum = abs_sum,
};
