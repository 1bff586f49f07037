/* Run-time ISA detection: what this CPU and build can run, and the ISA names.
 * Which kernels run is chosen from this in platform.c. */
#include "onnxbit/isa.h"

#include <string.h>

#if defined(ONNXBIT_X86)
#include <cpuid.h>
#include <pthread.h>
#endif
#if defined(ONNXBIT_ARM64) && defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20) /* Linux arch/arm64 uapi hwcap bit of SDOT/UDOT */
#endif
#elif defined(ONNXBIT_ARM64) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#include "obx_common.h"

static const char *const isa_names[OBX_ISA_COUNT] = {"scalar", "avx2", "avx512", "neon"};

#if defined(ONNXBIT_X86)
static unsigned long long read_xcr0(void) {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

struct x86_features {
    int avx2, avx512, avxvnni;
};

static struct x86_features detect_x86_uncached(void) {
    struct x86_features f = {0, 0, 0};
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx) return f;
    unsigned long long xcr0 = read_xcr0();
    int ymm_state = (xcr0 & 0x6) == 0x6;
    int zmm_state = (xcr0 & 0xe6) == 0xe6; /* XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM */
    if (__get_cpuid_max(0, NULL) < 7) return f;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1, bmi2 = (b >> 8) & 1;
    int avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1,
        avx512vl = (b >> 31) & 1, avx512vnni = (c >> 11) & 1;
    f.avx2 = ymm_state && avx2 && fma && bmi2;
    f.avx512 = f.avx2 && zmm_state && avx512f && avx512dq && avx512bw && avx512vl && avx512vnni;
    __cpuid_count(7, 1, a, b, c, d);
    f.avxvnni = f.avx2 && ((a >> 4) & 1);
    return f;
}

static struct x86_features x86_features;
static pthread_once_t x86_features_once = PTHREAD_ONCE_INIT;

static void read_x86_features(void) { x86_features = detect_x86_uncached(); }

/* CPUID is read once per process; every later question is a table lookup. */
static struct x86_features detect_x86(void) {
    pthread_once(&x86_features_once, read_x86_features);
    return x86_features;
}
#endif

OBX_API int obx_isa_supported(int isa) {
    switch (isa) {
    case OBX_ISA_SCALAR: return 1;
#if defined(ONNXBIT_X86)
    case OBX_ISA_AVX2: return detect_x86().avx2;
    case OBX_ISA_AVX512: return detect_x86().avx512;
#endif
#if defined(ONNXBIT_ARM64)
    case OBX_ISA_NEON: return 1; /* NEON is mandatory on AArch64. */
#endif
    default: return 0;
    }
}

OBX_API int obx_cpu_has_avxvnni(void) {
#if defined(ONNXBIT_X86)
    return detect_x86().avxvnni;
#else
    return 0;
#endif
}

OBX_API int obx_cpu_has_neon_dotprod(void) {
#if defined(ONNXBIT_ARM64) && defined(__aarch64__) && defined(__linux__)
    /* The kernel reports what user space may execute (what qemu-user emulates
     * for its -cpu, too); getauxval is a cached read, no syscall. */
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(ONNXBIT_ARM64) && defined(__APPLE__)
    int value = 0;
    size_t size = sizeof value;
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &value, &size, NULL, 0) == 0 && value;
#else
    return 0;
#endif
}

OBX_API const char *obx_isa_name(int isa) {
    return (isa >= 0 && isa < OBX_ISA_COUNT) ? isa_names[isa] : "unknown";
}

OBX_API int obx_isa_from_name(const char *name) {
    for (int i = 0; i < OBX_ISA_COUNT; i++)
        if (name && strcmp(name, isa_names[i]) == 0) return i;
    return -1;
}

OBX_API const char *obx_version(void) { return "0.1.0"; }
