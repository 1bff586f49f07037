/* The process-wide platform table (platform.h) and the public selection
 * calls of isa.h that act on it. */
#include "isa/platform.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obx_common.h"
#include "onnxbit/isa.h"

static const struct obx_platform platform_scalar = {
    OBX_ISA_SCALAR, &obx_codec_kernels_scalar, obx_cols_gather_scalar,
    &tmm_kernels_scalar, &tconv_rows_scalar, obx_crc32c_scalar,
    tmm_quantize_static_scalar, NULL, &bf16_kernels_scalar};
/* Scalar kernels standing in after a refused ONNXBIT_ISA. */
static const struct obx_platform platform_refused = {
    -1, &obx_codec_kernels_scalar, obx_cols_gather_scalar,
    &tmm_kernels_scalar, &tconv_rows_scalar, obx_crc32c_scalar,
    tmm_quantize_static_scalar, NULL, &bf16_kernels_scalar};
#if defined(ONNXBIT_X86)
static const struct obx_platform platform_avx2 = {
    OBX_ISA_AVX2, &obx_codec_kernels_avx2, obx_cols_gather_avx2,
    &tmm_kernels_avx2, &tconv_rows_avx2, obx_crc32c_avx2,
    tmm_quantize_static_avx2, &tconv_lanes_avx2, &bf16_kernels_avx2};
/* AVX2 with AVX-VNNI: only the integer kernels (matmul, pixel-lanes conv) differ. */
static const struct obx_platform platform_avx2_vnni = {
    OBX_ISA_AVX2, &obx_codec_kernels_avx2, obx_cols_gather_avx2,
    &tmm_kernels_avxvnni, &tconv_rows_avx2, obx_crc32c_avx2,
    tmm_quantize_static_avx2, &tconv_lanes_avxvnni, &bf16_kernels_avx2};
static const struct obx_platform platform_avx512 = {
    OBX_ISA_AVX512, &obx_codec_kernels_avx512, obx_cols_gather_avx2,
    &tmm_kernels_avx512, &tconv_rows_avx512, obx_crc32c_avx2,
    tmm_quantize_static_avx512, &tconv_lanes_avx512, &bf16_kernels_avx512};
#endif
#if defined(ONNXBIT_ARM64) && defined(__aarch64__)
static const struct obx_platform platform_neon = {
    OBX_ISA_NEON, &obx_codec_kernels_neon, obx_cols_gather_scalar,
    &tmm_kernels_neon, &tconv_rows_scalar, obx_crc32c_scalar,
    tmm_quantize_static_scalar, NULL, &bf16_kernels_neon};
/* NEON with the dot-product extension: only the integer matmul kernels differ. */
static const struct obx_platform platform_neon_dotprod = {
    OBX_ISA_NEON, &obx_codec_kernels_neon, obx_cols_gather_scalar,
    &tmm_kernels_neon_dotprod, &tconv_rows_scalar, obx_crc32c_scalar,
    tmm_quantize_static_scalar, NULL, &bf16_kernels_neon};
#endif

static _Atomic(const struct obx_platform *) active;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static char selection_error[160];

/* The table of a supported ISA; with_extensions adds the optional
 * refinements of its level (AVX-VNNI within AVX2, SDOT within NEON). */
static const struct obx_platform *table_for(int isa, int with_extensions) {
    switch (isa) {
#if defined(ONNXBIT_X86)
    case OBX_ISA_AVX2:
        return with_extensions && obx_cpu_has_avxvnni() ? &platform_avx2_vnni : &platform_avx2;
    case OBX_ISA_AVX512: return &platform_avx512;
#endif
#if defined(ONNXBIT_ARM64) && defined(__aarch64__)
    case OBX_ISA_NEON:
        return with_extensions && obx_cpu_has_neon_dotprod() ? &platform_neon_dotprod
                                                              : &platform_neon;
#endif
    default: return &platform_scalar;
    }
}

static int best_supported(void) {
    for (int isa = OBX_ISA_COUNT - 1; isa > OBX_ISA_SCALAR; isa--)
        if (obx_isa_supported(isa)) return isa;
    return OBX_ISA_SCALAR;
}

/* ONNXBIT_ISA names of a level with its refinement, refused where the CPU
 * lacks the refinement (a plain level name takes it only where present). */
static const struct {
    const char *name;
    int isa;
    int (*cpu_has)(void);
} refinements[] = {
    {"avxvnni", OBX_ISA_AVX2, obx_cpu_has_avxvnni},
    {"neon_dotprod", OBX_ISA_NEON, obx_cpu_has_neon_dotprod},
};

/* The level a name selects, or -1 (unknown name: -2). */
static int level_from_name(const char *name) {
    for (size_t i = 0; i < sizeof refinements / sizeof refinements[0]; i++)
        if (strcmp(name, refinements[i].name) == 0)
            return obx_isa_supported(refinements[i].isa) && refinements[i].cpu_has()
                       ? refinements[i].isa
                       : -1;
    int isa = obx_isa_from_name(name);
    if (isa < 0) return -2;
    return obx_isa_supported(isa) ? isa : -1;
}

static void select_at_start(void) {
    const char *requested = getenv("ONNXBIT_ISA");
    int isa = best_supported();
    if (requested && *requested) {
        isa = level_from_name(requested);
        if (isa == -2) {
            snprintf(selection_error, sizeof selection_error,
                     "ONNXBIT_ISA=%.40s is not an ISA name (use scalar, avx2, avxvnni, avx512, "
                     "neon or neon_dotprod)",
                     requested);
            isa = -1;
        } else if (isa < 0) {
            snprintf(selection_error, sizeof selection_error,
                     "ONNXBIT_ISA=%.40s is not supported by this CPU or build", requested);
            isa = -1;
        }
    }
    atomic_store(&active, isa < 0 ? &platform_refused : table_for(isa, 1));
}

const struct obx_platform *obx_platform(void) {
    pthread_once(&init_once, select_at_start);
    return atomic_load_explicit(&active, memory_order_acquire);
}

OBX_API int obx_isa_active(void) { return obx_platform()->isa; }

OBX_API const char *obx_isa_error(void) {
    obx_platform();
    return selection_error;
}

static int force(int isa, int with_extensions) {
    if (!obx_isa_supported(isa)) return -1;
    pthread_once(&init_once, select_at_start);
    selection_error[0] = '\0';
    atomic_store(&active, table_for(isa, with_extensions));
    return 0;
}

OBX_API int obx_isa_force(int isa) { return force(isa, 1); }

OBX_API int obx_isa_force_baseline(int isa) { return force(isa, 0); }
