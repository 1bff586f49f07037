/* NEON (AArch64) codec kernels. Structured-load/store instructions do the 2bit
 * interleaving; base3 uses the same fixed-point digit extraction as the AVX2
 * kernel and table lookups to put digits in element order. Remainders go to
 * the scalar row functions, so results match the reference byte for byte. */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>
#include <string.h>

#include "codec_internal.h"
#include "obx_common.h"

static int decode_2bit(const uint8_t *in, size_t n_bytes, int8_t *out) {
    const uint8x16_t low2 = vdupq_n_u8(3);
    const int8x16_t ones = vdupq_n_s8(1);
    uint8x16_t bad = vdupq_n_u8(0);
    size_t j = 0;
    for (; j + 16 <= n_bytes; j += 16) {
        uint8x16_t v = vld1q_u8(in + j);
        /* a field equals 3 when both its bits are set */
        bad = vorrq_u8(bad, vandq_u8(vandq_u8(v, vshrq_n_u8(v, 1)), vdupq_n_u8(0x55)));
        int8x16x4_t w;
        w.val[0] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, low2)), ones);
        w.val[1] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 2), low2)), ones);
        w.val[2] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 4), low2)), ones);
        w.val[3] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 6)), ones);
        vst4q_s8(out + 4 * j, w); /* out[4i + p] = w.val[p][i] */
    }
    size_t first;
    int64_t tail_bad = obx_codec_decode_row_scalar(OBX_FMT_2BIT, in + j, 4 * (n_bytes - j),
                                                   out + 4 * j, &first);
    return vmaxvq_u8(bad) != 0 || tail_bad != 0;
}

static int any_base3_invalid(const uint8_t *in, size_t n) {
    uint8x16_t high = vdupq_n_u8(0);
    size_t j = 0;
    for (; j + 16 <= n; j += 16) high = vmaxq_u8(high, vld1q_u8(in + j));
    int bad = vmaxvq_u8(high) >= 243;
    for (; j < n; j++) bad |= in[j] >= 243;
    return bad;
}

/* Table-lookup indices putting digit p % 5 of byte p / 5 at element p of block
 * r (elements 16r .. 16r + 15): from the four-register table d0..d3 (index
 * 16 d + byte) and from d4 alone. 0xFF selects nothing (TBL writes 0). */
#define OBX_P(r, t) (16 * (r) + (t))
#define OBX_FROM_D0_3(r, t) (OBX_P(r, t) % 5 != 4 ? 16 * (OBX_P(r, t) % 5) + OBX_P(r, t) / 5 : 0xFF)
#define OBX_FROM_D4(r, t) (OBX_P(r, t) % 5 == 4 ? OBX_P(r, t) / 5 : 0xFF)
#define OBX_INDEX16(M, r)                                                                  \
    {M(r, 0), M(r, 1), M(r, 2),  M(r, 3),  M(r, 4),  M(r, 5),  M(r, 6),  M(r, 7),            \
     M(r, 8), M(r, 9), M(r, 10), M(r, 11), M(r, 12), M(r, 13), M(r, 14), M(r, 15)}
static const uint8_t base3_from_d0_3[5][16] = {
    OBX_INDEX16(OBX_FROM_D0_3, 0), OBX_INDEX16(OBX_FROM_D0_3, 1), OBX_INDEX16(OBX_FROM_D0_3, 2),
    OBX_INDEX16(OBX_FROM_D0_3, 3), OBX_INDEX16(OBX_FROM_D0_3, 4)};
static const uint8_t base3_from_d4[5][16] = {
    OBX_INDEX16(OBX_FROM_D4, 0), OBX_INDEX16(OBX_FROM_D4, 1), OBX_INDEX16(OBX_FROM_D4, 2),
    OBX_INDEX16(OBX_FROM_D4, 3), OBX_INDEX16(OBX_FROM_D4, 4)};

/* ceil(256 b / 243) for 8 bytes: ((256 b + 240) * 8631) >> 21, exact for b < 243. */
static inline uint8x8_t base3_fraction(uint16x8_t shifted_plus_240) {
    const uint16x4_t magic = vdup_n_u16(8631);
    uint32x4_t lo = vmull_u16(vget_low_u16(shifted_plus_240), magic);
    uint32x4_t hi = vmull_high_u16(shifted_plus_240, vdupq_n_u16(8631));
    return vmovn_u16(vcombine_u16(vshrn_n_u32(vshrq_n_u32(lo, 5), 16), vshrn_n_u32(vshrq_n_u32(hi, 5), 16)));
}

/* 16 packed base3 bytes (< 243) -> 80 values; see codec_avx2.c for the
 * fixed-point digit extraction (x = b / 243 as an 8-bit fraction, kept biased
 * as y = x - 128, digits most significant first). */
static inline void decode_base3_16(const uint8_t *in, int8_t *out) {
    const uint16x8_t round_up = vdupq_n_u16(240);
    uint8x16_t b = vld1q_u8(in);
    uint8x8_t f_lo = base3_fraction(vaddq_u16(vshll_n_u8(vget_low_u8(b), 8), round_up));
    uint8x8_t f_hi = base3_fraction(vaddq_u16(vshll_high_n_u8(b, 8), round_up));
    int8x16_t y = vreinterpretq_s8_u8(veorq_u8(vcombine_u8(f_lo, f_hi), vdupq_n_u8(0x80)));
    int8x16x4_t low_digits;
    int8x16_t digit4 = vdupq_n_s8(0);
    for (int d = 4; d >= 0; d--) {
        uint8x16_t zero_digit = vcltq_s8(y, vdupq_n_s8(86 - 128)); /* x < 86 */
        uint8x16_t two_digit = vcgtq_s8(y, vdupq_n_s8(171 - 128 - 1)); /* x >= 171 */
        int8x16_t w = vreinterpretq_s8_u8(vsubq_u8(zero_digit, two_digit)); /* -1, 0, 1 */
        if (d == 4)
            digit4 = w;
        else
            low_digits.val[d] = w;
        y = vaddq_s8(vaddq_s8(y, y), y);
    }
    for (int r = 0; r < 5; r++) {
        int8x16_t block = vorrq_s8(vqtbl4q_s8(low_digits, vld1q_u8(base3_from_d0_3[r])),
                                   vqtbl1q_s8(digit4, vld1q_u8(base3_from_d4[r])));
        vst1q_s8(out + 16 * r, block);
    }
}

static int decode_base3(const uint8_t *in, size_t n_bytes, int8_t *out) {
    if (any_base3_invalid(in, n_bytes)) return 1;
    size_t j = 0;
    for (; j + 16 <= n_bytes; j += 16) decode_base3_16(in + j, out + 5 * j);
    obx_codec_base3_decode_lut(in + j, n_bytes - j, out + 5 * j);
    return 0;
}

/* 64 codes in {0,1,2} at `codes` -> 16 packed 2bit bytes. */
static inline uint8x16_t pack_2bit_64(const uint8_t *codes) {
    uint8x16x4_t c = vld4q_u8(codes); /* c.val[p][i] = codes[4i + p] */
    uint8x16_t low = vorrq_u8(c.val[0], vshlq_n_u8(c.val[1], 2));
    uint8x16_t high = vorrq_u8(vshlq_n_u8(c.val[2], 4), vshlq_n_u8(c.val[3], 6));
    return vorrq_u8(low, high);
}

/* 16 int8 inputs -> codes w + 1; folds them into *high for the range check. */
static inline uint8x16_t codes_from_i8(const int8_t *w, uint8x16_t *high) {
    uint8x16_t c = vaddq_u8(vreinterpretq_u8_s8(vld1q_s8(w)), vdupq_n_u8(1));
    *high = vmaxq_u8(*high, c);
    return c;
}

/* Chunks of whole packed bytes for both formats: 320 codes = 80 2bit bytes = 64 base3 bytes. */
enum { CHUNK_CODES = 320 };

static int encode_2bit(const int8_t *w, size_t n_bytes, uint8_t *out) {
    uint8_t codes[64];
    uint8x16_t high = vdupq_n_u8(0);
    size_t j = 0;
    for (; j + 16 <= n_bytes; j += 16) {
        for (int v = 0; v < 4; v++) vst1q_u8(codes + 16 * v, codes_from_i8(w + 4 * j + 16 * v, &high));
        vst1q_u8(out + j, pack_2bit_64(codes));
    }
    size_t first;
    int64_t tail_bad = obx_codec_encode_row_scalar(OBX_FMT_2BIT, w + 4 * j, 4 * (n_bytes - j),
                                                   out + j, &first);
    return vmaxvq_u8(high) > 2 || tail_bad != 0;
}

static int encode_base3(const int8_t *w, size_t n_bytes, uint8_t *out) {
    uint8_t codes[CHUNK_CODES + 8];
    uint8x16_t high = vdupq_n_u8(0);
    size_t j = 0;
    for (; j + CHUNK_CODES / 5 <= n_bytes; j += CHUNK_CODES / 5) {
        for (int v = 0; v < CHUNK_CODES / 16; v++)
            vst1q_u8(codes + 16 * v, codes_from_i8(w + 5 * j + 16 * v, &high));
        obx_codec_base3_pack_codes(codes, CHUNK_CODES / 5, out + j);
    }
    size_t first;
    int64_t tail_bad = obx_codec_encode_row_scalar(OBX_FMT_BASE3, w + 5 * j, 5 * (n_bytes - j),
                                                   out + j, &first);
    return vmaxvq_u8(high) > 2 || tail_bad != 0;
}

/* 4 floats -> codes 1 + [p > 0.5] - [p < -0.5], p = w * inv (= clip(rint(p)) + 1
 * under round-half-even); flags non-finite inputs in *bad. */
static inline uint32x4_t ternary_codes_4(const float *w, float inv, uint32x4_t *bad) {
    float32x4_t x = vld1q_f32(w);
    uint32x4_t magnitude = vandq_u32(vreinterpretq_u32_f32(x), vdupq_n_u32(0x7fffffff));
    *bad = vorrq_u32(*bad, vcgtq_u32(magnitude, vdupq_n_u32(0x7f7fffff)));
    float32x4_t p = vmulq_n_f32(x, inv);
    uint32x4_t up = vcgtq_f32(p, vdupq_n_f32(0.5f)), down = vcltq_f32(p, vdupq_n_f32(-0.5f));
    return vsubq_u32(vaddq_u32(vdupq_n_u32(1), down), up); /* masks are all ones */
}

/* 16 floats -> 16 code bytes in order. */
static inline uint8x16_t ternary_codes_16(const float *w, float inv, uint32x4_t *bad) {
    uint16x8_t lo = vcombine_u16(vmovn_u32(ternary_codes_4(w, inv, bad)),
                                 vmovn_u32(ternary_codes_4(w + 4, inv, bad)));
    uint16x8_t hi = vcombine_u16(vmovn_u32(ternary_codes_4(w + 8, inv, bad)),
                                 vmovn_u32(ternary_codes_4(w + 12, inv, bad)));
    return vcombine_u8(vmovn_u16(lo), vmovn_u16(hi));
}

static int ternarize_2bit(const float *w, size_t n_bytes, float inv_scale, uint8_t *out) {
    uint8_t codes[64];
    uint32x4_t bad = vdupq_n_u32(0);
    size_t j = 0;
    for (; j + 16 <= n_bytes; j += 16) {
        for (int v = 0; v < 4; v++) vst1q_u8(codes + 16 * v, ternary_codes_16(w + 4 * j + 16 * v, inv_scale, &bad));
        vst1q_u8(out + j, pack_2bit_64(codes));
    }
    size_t first;
    int64_t tail_bad = obx_codec_ternarize_row_scalar(OBX_FMT_2BIT, w + 4 * j, 4 * (n_bytes - j),
                                                      inv_scale, out + j, &first);
    return vmaxvq_u32(bad) != 0 || tail_bad != 0;
}

static int ternarize_base3(const float *w, size_t n_bytes, float inv_scale, uint8_t *out) {
    uint8_t codes[CHUNK_CODES + 8];
    uint32x4_t bad = vdupq_n_u32(0);
    size_t j = 0;
    for (; j + CHUNK_CODES / 5 <= n_bytes; j += CHUNK_CODES / 5) {
        for (int v = 0; v < CHUNK_CODES / 16; v++)
            vst1q_u8(codes + 16 * v, ternary_codes_16(w + 5 * j + 16 * v, inv_scale, &bad));
        obx_codec_base3_pack_codes(codes, CHUNK_CODES / 5, out + j);
    }
    size_t first;
    int64_t tail_bad = obx_codec_ternarize_row_scalar(OBX_FMT_BASE3, w + 5 * j, 5 * (n_bytes - j),
                                                      inv_scale, out + j, &first);
    return vmaxvq_u32(bad) != 0 || tail_bad != 0;
}

static void scale_i8_f32(const int8_t *q, size_t n, float scale, float *out) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        int16x8_t wide = vmovl_s8(vld1_s8(q + i));
        vst1q_f32(out + i, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(wide))), scale));
        vst1q_f32(out + i + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(wide)), scale));
    }
    for (; i < n; i++) out[i] = (float)q[i] * scale;
}

static double abs_sum(const float *w, size_t n) {
    /* lanes (0,1), (2,3), (4,5), (6,7) of the canonical eight accumulators */
    float64x2_t l01 = vdupq_n_f64(0), l23 = vdupq_n_f64(0), l45 = vdupq_n_f64(0), l67 = vdupq_n_f64(0);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float32x4_t a = vabsq_f32(vld1q_f32(w + i)), b = vabsq_f32(vld1q_f32(w + i + 4));
        l01 = vaddq_f64(l01, vcvt_f64_f32(vget_low_f32(a)));
        l23 = vaddq_f64(l23, vcvt_high_f64_f32(a));
        l45 = vaddq_f64(l45, vcvt_f64_f32(vget_low_f32(b)));
        l67 = vaddq_f64(l67, vcvt_high_f64_f32(b));
    }
    float64x2_t s = vaddq_f64(l01, l45), t = vaddq_f64(l23, l67); /* l0+l4, l1+l5 | l2+l6, l3+l7 */
    double sum = (vgetq_lane_f64(s, 0) + vgetq_lane_f64(s, 1)) + (vgetq_lane_f64(t, 0) + vgetq_lane_f64(t, 1));
    for (; i < n; i++) sum += fabs((double)w[i]);
    return sum;
}

const obx_codec_kernels obx_codec_kernels_neon = {
    .decode = {[OBX_FMT_2BIT] = decode_2bit, [OBX_FMT_BASE3] = decode_base3},
    .encode = {[OBX_FMT_2BIT] = encode_2bit, [OBX_FMT_BASE3] = encode_base3},
    .ternarize = {[OBX_FMT_2BIT] = ternarize_2bit, [OBX_FMT_BASE3] = ternarize_base3},
    .scale_i8_f32 = scale_i8_f32,
    .abs_sum = abs_sum,
};
#endif
