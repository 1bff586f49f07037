/* Reference codec kernels: one element at a time, written to be obviously
 * correct. Every other ISA path must match these byte for byte. */
#include <math.h>
#include <string.h>

#include "codec_internal.h"
#include "obx_common.h"

static const unsigned pow3[5] = {1, 3, 9, 27, 81};

static int8_t ternarize_one(float w, float inv_scale) {
    float r = nearbyintf(w * inv_scale); /* default rounding mode: half to even */
    if (r >= 1.0f) return 1;
    if (r <= -1.0f) return -1;
    return 0; /* also NaN products from a non-finite scale */
}

int64_t obx_codec_decode_row_scalar(int fmt, const uint8_t *in, size_t k, int8_t *out,
                                    size_t *first_bad) {
    int64_t bad = 0;
    for (size_t i = 0; i < k; i++) {
        unsigned code;
        int valid;
        if (fmt == OBX_FMT_2BIT) {
            code = (in[i / 4] >> (2 * (i % 4))) & 3u;
            valid = code != 3;
        } else {
            unsigned byte = in[i / 5];
            code = (byte / pow3[i % 5]) % 3;
            valid = byte < 243;
        }
        if (valid) {
            out[i] = (int8_t)((int)code - 1);
            continue;
        }
        out[i] = 0;
        /* a bad base3 byte counts once, at its first element */
        if (fmt == OBX_FMT_2BIT || i % 5 == 0) {
            if (bad == 0) *first_bad = i;
            bad++;
        }
    }
    return bad;
}

/* Codes staged per packing step: at most CHUNK_MAX, whole packed bytes. */
enum { CHUNK_MAX = 256 };
static size_t whole_bytes_chunk(int fmt) { return CHUNK_MAX - CHUNK_MAX % obx_codes_per_byte(fmt); }

/* Packs k codes (each 0..2) into one row, padding with code/digit 0. */
static void pack_codes_row(int fmt, const uint8_t *codes, size_t k, uint8_t *out) {
    size_t n_bytes = OBX_DIV_UP(k, obx_codes_per_byte(fmt));
    memset(out, 0, n_bytes);
    for (size_t i = 0; i < k; i++) {
        if (fmt == OBX_FMT_2BIT)
            out[i / 4] |= (uint8_t)(codes[i] << (2 * (i % 4)));
        else
            out[i / 5] += (uint8_t)(codes[i] * pow3[i % 5]);
    }
}

int64_t obx_codec_encode_row_scalar(int fmt, const int8_t *w, size_t k, uint8_t *out,
                                    size_t *first_bad) {
    int64_t bad = 0;
    uint8_t chunk[CHUNK_MAX];
    size_t per_byte = obx_codes_per_byte(fmt), chunk_len = whole_bytes_chunk(fmt);
    for (size_t start = 0; start < k; start += chunk_len) {
        size_t n = OBX_MIN(chunk_len, k - start);
        for (size_t i = 0; i < n; i++) {
            int v = w[start + i];
            if (v < -1 || v > 1) {
                if (bad == 0) *first_bad = start + i;
                bad++;
                v = 0;
            }
            chunk[i] = (uint8_t)(v + 1);
        }
        pack_codes_row(fmt, chunk, n, out + start / per_byte);
    }
    return bad;
}

int64_t obx_codec_ternarize_row_scalar(int fmt, const float *w, size_t k, float inv_scale,
                                       uint8_t *out, size_t *first_bad) {
    int64_t bad = 0;
    uint8_t chunk[CHUNK_MAX];
    size_t per_byte = obx_codes_per_byte(fmt), chunk_len = whole_bytes_chunk(fmt);
    for (size_t start = 0; start < k; start += chunk_len) {
        size_t n = OBX_MIN(chunk_len, k - start);
        for (size_t i = 0; i < n; i++) {
            float v = w[start + i];
            int8_t q = 0;
            if (!isfinite(v)) {
                if (bad == 0) *first_bad = start + i;
                bad++;
            } else {
                q = ternarize_one(v, inv_scale);
            }
            chunk[i] = (uint8_t)(q + 1);
        }
        pack_codes_row(fmt, chunk, n, out + start / per_byte);
    }
    return bad;
}

double obx_codec_abs_sum_scalar(const float *w, size_t n) {
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) lane[j] += fabs((double)w[i + j]);
    double sum = ((lane[0] + lane[4]) + (lane[1] + lane[5])) +
                 ((lane[2] + lane[6]) + (lane[3] + lane[7]));
    for (; i < n; i++) sum += fabs((double)w[i]);
    return sum;
}

/* Span kernels of the scalar table: whole bytes, so spans are whole rows. */
static int decode_span(int fmt, const uint8_t *in, size_t n_bytes, int8_t *out) {
    size_t first;
    return obx_codec_decode_row_scalar(fmt, in, obx_codes_per_byte(fmt) * n_bytes, out, &first) != 0;
}
static int encode_span(int fmt, const int8_t *w, size_t n_bytes, uint8_t *out) {
    size_t first;
    return obx_codec_encode_row_scalar(fmt, w, obx_codes_per_byte(fmt) * n_bytes, out, &first) != 0;
}
static int ternarize_span(int fmt, const float *w, size_t n_bytes, float inv_scale, uint8_t *out) {
    size_t first;
    return obx_codec_ternarize_row_scalar(fmt, w, obx_codes_per_byte(fmt) * n_bytes, inv_scale,
                                          out, &first) != 0;
}
static int decode_2bit(const uint8_t *in, size_t n, int8_t *out) { return decode_span(OBX_FMT_2BIT, in, n, out); }
static int decode_base3(const uint8_t *in, size_t n, int8_t *out) { return decode_span(OBX_FMT_BASE3, in, n, out); }
static int encode_2bit(const int8_t *w, size_t n, uint8_t *out) { return encode_span(OBX_FMT_2BIT, w, n, out); }
static int encode_base3(const int8_t *w, size_t n, uint8_t *out) { return encode_span(OBX_FMT_BASE3, w, n, out); }
static int ternarize_2bit(const float *w, size_t n, float inv, uint8_t *out) {
    return ternarize_span(OBX_FMT_2BIT, w, n, inv, out);
}
static int ternarize_base3(const float *w, size_t n, float inv, uint8_t *out) {
    return ternarize_span(OBX_FMT_BASE3, w, n, inv, out);
}
static void scale_i8_f32(const int8_t *q, size_t n, float scale, float *out) {
    for (size_t i = 0; i < n; i++) out[i] = (float)q[i] * scale;
}

const obx_codec_kernels obx_codec_kernels_scalar = {
    .decode = {[OBX_FMT_2BIT] = decode_2bit, [OBX_FMT_BASE3] = decode_base3},
    .encode = {[OBX_FMT_2BIT] = encode_2bit, [OBX_FMT_BASE3] = encode_base3},
    .ternarize = {[OBX_FMT_2BIT] = ternarize_2bit, [OBX_FMT_BASE3] = ternarize_base3},
    .scale_i8_f32 = scale_i8_f32,
    .abs_sum = obx_codec_abs_sum_scalar,
};
