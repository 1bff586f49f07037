/* Instruction-count driver for the ternary matmul: prepacks random 4096 x 4096
 * 2bit weights (per-tensor scale) and runs obx_tmm_compute serially for the
 * requested M and act_quant values. Run it under
 *     valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out /tmp/callgrind_tmm [runs]
 *     callgrind_annotate --threshold=100 /tmp/cg.out | grep libonnxbit
 * and divide each kernel function's Ir by the MACs it did (M * K * N) to get
 * instructions per weight-row product. Callgrind counts instructions, not
 * time, so the numbers do not move with machine load.
 *
 * Build (from the repository root, against a Release build in build/NAME):
 *     gcc -O2 -Icsrc/include -Icsrc tests/native/callgrind_tmm.c \
 *         -Lbuild/NAME -lonnxbit -Wl,-rpath,$PWD/build/NAME -o /tmp/callgrind_tmm
 * Arguments: runs to do, each M followed by i (act_quant = 1, int8), s
 * (act_quant = 2, int8 with the static scale 25) or f (act_quant = 0, float),
 * e.g. `8i 8s 1f`; default 1i 1f 8i 8f. */
#include <stdio.h>
#include <stdlib.h>

#include "onnxbit/codec.h"
#include "onnxbit/tmatmul.h"

#define DIM 4096

/* xorshift32: cheap enough that generating the inputs does not dominate the profile. */
static uint32_t rng_state = 7;
static uint32_t next_random(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static int run(const obx_tmm_weights *w, size_t m, int act_quant) {
    float *a = malloc(m * DIM * sizeof(float)), *y = malloc(m * DIM * sizeof(float));
    if (!a || !y) return 1;
    for (size_t i = 0; i < m * DIM; i++) a[i] = (float)(next_random() % 2001 - 1000.0f) / 250.0f;
    char err[256];
    int rc = obx_tmm_compute_scaled(w, a, m, NULL, act_quant, 25.0f, y, NULL, NULL, err, sizeof err);
    if (rc != 0) printf("compute failed: %s\n", err);
    else printf("m=%zu act_quant=%d y[0]=%g\n", m, act_quant, (double)y[0]);
    free(a);
    free(y);
    return rc != 0;
}

int main(int argc, char **argv) {
    size_t row_bytes = obx_packed_row_bytes(OBX_FMT_2BIT, DIM);
    uint8_t *b = malloc(DIM * row_bytes);
    if (!b) return 1;
    for (size_t i = 0; i < DIM * row_bytes; i++) {
        uint8_t v = 0;
        for (int j = 0; j < 4; j++) v |= (uint8_t)((next_random() % 3) << (2 * j));
        b[i] = v;
    }
    float scale = 0.5f;
    char err[256];
    obx_tmm_weights *w =
        obx_tmm_prepack(OBX_FMT_2BIT, b, DIM * row_bytes, DIM, DIM, &scale, 1, 0, err, sizeof err);
    if (!w) {
        printf("prepack failed: %s\n", err);
        return 2;
    }
    const char *defaults[] = {"1i", "1f", "8i", "8f"};
    int n_runs = argc > 1 ? argc - 1 : 4;
    int bad = 0;
    for (int i = 0; i < n_runs; i++) {
        const char *spec = argc > 1 ? argv[i + 1] : defaults[i];
        char *end = NULL;
        long m = strtol(spec, &end, 10);
        if (m <= 0 || (*end != 'i' && *end != 's' && *end != 'f') || end[1] != '\0') {
            printf("bad run '%s': expected M then i, s or f, e.g. 8i\n", spec);
            return 2;
        }
        bad |= run(w, (size_t)m,
                   *end == 'i' ? OBX_ACT_INT8_TOKEN : *end == 's' ? OBX_ACT_INT8_STATIC : OBX_ACT_NONE);
    }
    obx_tmm_free(w);
    free(b);
    return bad;
}
