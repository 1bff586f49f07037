/* Compares one ISA's codec kernel table with the scalar table on random spans,
 * valid and corrupt, without Python: lets the NEON kernels be checked under
 * qemu-aarch64 from an x86 machine (tests/test_codec_kernels_c.py).
 * Build with -DKERNELS=obx_codec_kernels_avx2 (or _neon, _avx512). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "codec/codec_internal.h"

static unsigned long long rng_state = 88172645463325252ull;

static unsigned next_random(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)rng_state;
}

enum { MAX_BYTES = 700 };

int main(void) {
    const obx_codec_kernels *ref = &obx_codec_kernels_scalar, *isa = &KERNELS;
    static uint8_t in[MAX_BYTES], pa[MAX_BYTES], pb[MAX_BYTES];
    static int8_t oa[5 * MAX_BYTES], ob[5 * MAX_BYTES], w[5 * MAX_BYTES];
    static float f[5 * MAX_BYTES], fa[5 * MAX_BYTES], fb[5 * MAX_BYTES];
    int failures = 0;
    for (int trial = 0; trial < 2000; trial++) {
        size_t n = next_random() % MAX_BYTES;
        int corrupt = trial % 3 == 0;
        for (size_t i = 0; i < n; i++) {
            unsigned two_bit = (next_random() % 3) | (next_random() % 3) << 2 |
                               (next_random() % 3) << 4 | (next_random() % 3) << 6;
            in[i] = (uint8_t)(corrupt ? next_random() : trial & 1 ? next_random() % 243 : two_bit);
        }
        for (size_t i = 0; i < 5 * n; i++) {
            w[i] = (int8_t)(corrupt && next_random() % 500 == 0 ? 5 : (int)(next_random() % 3) - 1);
            f[i] = ((int)(next_random() % 2001) - 1000) / 400.0f; /* many exact .5 ties */
        }
        if (corrupt && n) f[next_random() % (4 * n)] = NAN;
        int ra, rb;
#define CHECK(name, call_ref, call_isa, a, b, bytes)                                     \
    ra = call_ref;                                                                       \
    rb = call_isa;                                                                       \
    if (ra != rb || (!ra && memcmp(a, b, bytes))) {                                      \
        printf("%s differs at n=%zu (flags %d vs %d)\n", name, n, ra, rb);              \
        failures++;                                                                      \
    }
        if (!(trial & 1) || corrupt) {
            CHECK("decode_2bit", ref->decode[OBX_FMT_2BIT](in, n, oa), isa->decode[OBX_FMT_2BIT](in, n, ob), oa, ob, 4 * n);
        }
        CHECK("decode_base3", ref->decode[OBX_FMT_BASE3](in, n, oa), isa->decode[OBX_FMT_BASE3](in, n, ob), oa, ob, 5 * n);
        CHECK("encode_2bit", ref->encode[OBX_FMT_2BIT](w, n, pa), isa->encode[OBX_FMT_2BIT](w, n, pb), pa, pb, n);
        CHECK("encode_base3", ref->encode[OBX_FMT_BASE3](w, n, pa), isa->encode[OBX_FMT_BASE3](w, n, pb), pa, pb, n);
        CHECK("ternarize_2bit", ref->ternarize[OBX_FMT_2BIT](f, n, 1.7f, pa),
              isa->ternarize[OBX_FMT_2BIT](f, n, 1.7f, pb), pa, pb, n);
        CHECK("ternarize_base3", ref->ternarize[OBX_FMT_BASE3](f, n, 2.0f, pa),
              isa->ternarize[OBX_FMT_BASE3](f, n, 2.0f, pb), pa, pb, n);
        ref->scale_i8_f32(w, 5 * n, -0.37f, fa);
        isa->scale_i8_f32(w, 5 * n, -0.37f, fb);
        if (memcmp(fa, fb, sizeof(float) * 5 * n)) {
            printf("scale_i8_f32 differs at n=%zu\n", n);
            failures++;
        }
        double sa = ref->abs_sum(f, 5 * n), sb = isa->abs_sum(f, 5 * n);
        if (memcmp(&sa, &sb, sizeof sa) && !(isnan(sa) && isnan(sb))) {
            printf("abs_sum differs at n=%zu: %.17g vs %.17g\n", n, sa, sb);
            failures++;
        }
    }
    /* every valid base3 byte value through the vector body */
    static uint8_t all[2 * 243];
    for (int i = 0; i < 2 * 243; i++) all[i] = (uint8_t)(i % 243);
    ref->decode[OBX_FMT_BASE3](all, sizeof all, oa);
    isa->decode[OBX_FMT_BASE3](all, sizeof all, ob);
    if (memcmp(oa, ob, 5 * sizeof all)) {
        printf("decode_base3 differs on the byte values 0..242\n");
        failures++;
    }
    printf("%d failures\n", failures);
    return failures != 0;
}
