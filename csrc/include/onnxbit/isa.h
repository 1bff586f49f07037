/* Instruction-set selection, shared by every kernel family.
 *
 * The active ISA is chosen once, on first use: the best one the CPU supports,
 * or the one named by the environment variable ONNXBIT_ISA
 * (scalar|avx2|avx512|neon, or avxvnni|neon_dotprod for a level with its
 * refinement). The choice fills one table of every kernel
 * family's entry points (csrc/isa/platform.h).
 *
 * This header is parsed by cffi: keep declarations free of macros. */
#ifndef ONNXBIT_ISA_H
#define ONNXBIT_ISA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    OBX_ISA_SCALAR = 0,
    OBX_ISA_AVX2 = 1,
    OBX_ISA_AVX512 = 2,
    OBX_ISA_NEON = 3,
    OBX_ISA_COUNT = 4
};

/* 1 when this CPU (and this build) can run the ISA, else 0. */
int obx_isa_supported(int isa);
/* The ISA in use; selects on first call. Returns -1 when ONNXBIT_ISA names an
 * unknown or unsupported ISA (obx_isa_error() says which). */
int obx_isa_active(void);
/* Why selection failed, or "" when it did not. */
const char *obx_isa_error(void);
/* "scalar", "avx2", ... or "unknown". */
const char *obx_isa_name(int isa);
/* Index of a name, or -1. */
int obx_isa_from_name(const char *name);
/* Switch the active ISA in this process (tests and benchmarks compare paths
 * in one process). Returns 0, or -1 when the ISA is not supported. A compute
 * already running finishes on the kernels it started with. */
int obx_isa_force(int isa);
/* As obx_isa_force, without the optional extensions of the ISA's level
 * (AVX-VNNI within AVX2), so a CPU that has them can test the plain kernels. */
int obx_isa_force_baseline(int isa);
/* Extra CPU features that refine a path: AVX-VNNI within AVX2, the
 * dot-product extension (SDOT, HWCAP_ASIMDDP) within NEON. ONNXBIT_ISA also
 * takes "avxvnni" and "neon_dotprod": the level with its refinement, refused
 * where the CPU lacks it. */
int obx_cpu_has_avxvnni(void);
int obx_cpu_has_neon_dotprod(void);
/* Version of the library, "MAJOR.MINOR.PATCH". */
const char *obx_version(void);

#ifdef __cplusplus
}
#endif
#endif
