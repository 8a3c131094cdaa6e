/* Runtime CPU feature detection and the SIMD level the CPU kernels use. */
#ifndef AFO_CPU_FEATURES_H
#define AFO_CPU_FEATURES_H

#include <stdbool.h>

#include "afo/base.h"

/* Ordered from least to most capable within an architecture. */
typedef enum afo_cpu_level {
    AFO_CPU_SCALAR = 0,
    AFO_CPU_NEON,   /* aarch64 Advanced SIMD */
    AFO_CPU_AVX2,   /* AVX2 + FMA + F16C */
    AFO_CPU_AVX512, /* AVX-512 F/BW/VL/DQ on top of AVX2 */
    AFO_CPU_AMX,    /* AVX512 plus AMX-BF16 tiles (bf16 GEMM); everything else as AVX512 */
    AFO_CPU_LEVEL_COUNT
} afo_cpu_level;

typedef struct afo_cpu_features {
    bool avx2;        /* AVX2, FMA and F16C, with OS support for YMM state */
    bool avx512;      /* AVX-512 F, BW, VL, DQ, with OS support for ZMM/opmask state */
    bool avx512_bf16; /* AVX512_BF16 (vdpbf16ps) */
    bool avx512_vnni; /* AVX512_VNNI (vpdpbusd: int8 dot products) */
    bool amx_bf16;    /* AMX-TILE and AMX-BF16 with OS support, and Linux's permission granted to this process */
    bool neon;
    bool intel;       /* the vendor is GenuineIntel: some tuning differs from AMD's */
} afo_cpu_features;

const afo_cpu_features *afo_cpu_get_features(void);
bool afo_cpu_level_supported(afo_cpu_level level);
/* The best supported level, or the one AFO_CPU_KERNEL=scalar|avx2|avx512|amx|neon
 * names (a level the CPU lacks is refused with a warning on stderr). */
afo_cpu_level afo_cpu_kernel_level(void);
/* Forces a level (tests, benchmarks); refuses levels the CPU lacks. */
afo_status afo_cpu_set_kernel_level(afo_cpu_level level);
const char *afo_cpu_level_name(afo_cpu_level level);
/* Weight rows, each a sequential stream through memory, that a thread of
 * the AVX-512 4-bit decode matvec reads at once: 4 on Intel CPUs, 2 on
 * others (quant_x86.h says why). */
int afo_cpu_qmv_streams(void);
/* Forces 2 or 4 (tests, so both run on any CPU); 0 restores the CPU's. */
afo_status afo_cpu_set_qmv_streams(int streams);

#endif
