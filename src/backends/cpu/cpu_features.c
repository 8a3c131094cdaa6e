#include "backends/cpu/cpu_features.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* XCR0 says which register state the OS saves on context switch; without it
 * the instructions exist but their registers would be clobbered. */
static unsigned long long read_xcr0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

/* AMX tile data is 8 KiB of state that Linux (5.16+) only lets a process
 * use after asking; it is granted to the whole process, once. */
static bool request_amx(void) {
#if defined(__x86_64__) && defined(__linux__)
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return false;
#endif
}

static void detect(afo_cpu_features *f) {
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    f->intel = b == 0x756e6547 && d == 0x49656e69 && c == 0x6c65746e; /* "Genu" "ineI" "ntel" */
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
    if (!osxsave || !avx) return;
    unsigned long long xcr0 = read_xcr0();
    bool ymm_os = (xcr0 & 0x6) == 0x6;
    bool zmm_os = (xcr0 & 0xe6) == 0xe6;
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    bool avx2 = b & (1u << 5);
    bool vnni = c & (1u << 11);
    bool avx512f = b & (1u << 16), avx512dq = b & (1u << 17), avx512bw = b & (1u << 30),
         avx512vl = b & (1u << 31);
    bool amx_bf16 = d & (1u << 22), amx_tile = d & (1u << 24);
    bool tiles_os = (xcr0 & (3ull << 17)) == (3ull << 17); /* XTILECFG, XTILEDATA */
    f->avx2 = ymm_os && avx2 && fma && f16c;
    f->avx512 = f->avx2 && zmm_os && avx512f && avx512dq && avx512bw && avx512vl;
    if (f->avx512) {
        f->avx512_vnni = vnni;
        __cpuid_count(7, 1, a, b, c, d);
        f->avx512_bf16 = a & (1u << 5);
        f->amx_bf16 = amx_bf16 && amx_tile && tiles_os && request_amx();
    }
}
#elif defined(__aarch64__)
static void detect(afo_cpu_features *f) { f->neon = true; }
#else
static void detect(afo_cpu_features *f) { (void)f; }
#endif

static afo_cpu_features g_features;
static atomic_int g_level, g_qmv_streams; /* 0: the CPU's choice */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static const char *const level_names[AFO_CPU_LEVEL_COUNT] = {"scalar", "neon", "avx2", "avx512", "amx"};

const char *afo_cpu_level_name(afo_cpu_level level) {
    return (unsigned)level < AFO_CPU_LEVEL_COUNT ? level_names[level] : "unknown";
}

static bool supported(afo_cpu_level level) {
    switch (level) {
    case AFO_CPU_SCALAR: return true;
    case AFO_CPU_NEON: return g_features.neon;
    case AFO_CPU_AVX2: return g_features.avx2;
    case AFO_CPU_AVX512: return g_features.avx512;
    case AFO_CPU_AMX: return g_features.amx_bf16;
    default: return false;
    }
}

static void init(void) {
    detect(&g_features);
    afo_cpu_level best = AFO_CPU_SCALAR;
    for (int l = 0; l < AFO_CPU_LEVEL_COUNT; l++)
        if (supported((afo_cpu_level)l)) best = (afo_cpu_level)l;
    const char *env = getenv("AFO_CPU_KERNEL");
    if (env && *env) {
        int want = -1;
        for (int l = 0; l < AFO_CPU_LEVEL_COUNT; l++)
            if (strcmp(env, level_names[l]) == 0) want = l;
        if (want < 0)
            fprintf(stderr, "afo: AFO_CPU_KERNEL=%s is not one of scalar, neon, avx2, avx512, amx; using %s\n",
                    env, level_names[best]);
        else if (!supported((afo_cpu_level)want))
            fprintf(stderr, "afo: AFO_CPU_KERNEL=%s: this CPU lacks it; using %s\n", env,
                    level_names[best]);
        else
            best = (afo_cpu_level)want;
    }
    atomic_store(&g_level, (int)best);
}

const afo_cpu_features *afo_cpu_get_features(void) {
    pthread_once(&g_once, init);
    return &g_features;
}

bool afo_cpu_level_supported(afo_cpu_level level) {
    pthread_once(&g_once, init);
    return supported(level);
}

afo_cpu_level afo_cpu_kernel_level(void) {
    pthread_once(&g_once, init);
    return (afo_cpu_level)atomic_load_explicit(&g_level, memory_order_relaxed);
}

afo_status afo_cpu_set_kernel_level(afo_cpu_level level) {
    pthread_once(&g_once, init);
    if (!supported(level))
        return afo_error(AFO_ERR_UNSUPPORTED, "cpu kernel level %s: not supported by this CPU",
                         afo_cpu_level_name(level));
    atomic_store(&g_level, (int)level);
    return AFO_OK;
}

int afo_cpu_qmv_streams(void) {
    pthread_once(&g_once, init);
    int forced = atomic_load_explicit(&g_qmv_streams, memory_order_relaxed);
    return forced ? forced : g_features.intel ? 4 : 2;
}

afo_status afo_cpu_set_qmv_streams(int streams) {
    if (streams != 0 && streams != 2 && streams != 4)
        return afo_error(AFO_ERR_INVALID_ARGUMENT, "matvec streams %d: not 2 or 4 (or 0 for the CPU's choice)", streams);
    atomic_store(&g_qmv_streams, streams);
    return AFO_OK;
}
