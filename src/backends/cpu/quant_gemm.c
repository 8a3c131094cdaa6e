/* The integer GEMM of quantized prefill (quant_gemm.h): the scalar
 * reference, panel packing and the threaded driver; the SIMD levels
 * supply the panel kernels. */
#include <math.h>
#include <stdlib.h>

#include "backends/cpu/cpu_features.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/quant_gemm.h"
#include "backends/cpu/threadpool.h"

const afo_qmm_level *afo_quant_qmm_best(int bits) {
#if defined(__x86_64__)
    static const afo_qmm_level avx2 = {afo_qmm_pack_avx2, afo_quant_qmm_avx2};
    static const afo_qmm_level avx512 = {afo_qmm_pack_avx2, afo_quant_qmm_avx512}; /* same panel layout */
#elif defined(__aarch64__)
    static const afo_qmm_level neon = {afo_qmm_pack_scalar, afo_quant_qmm_neon};
#endif
    if (bits != 4 && bits != 8) return NULL;
    switch (afo_cpu_kernel_level()) {
#if defined(__x86_64__)
    case AFO_CPU_AVX2: return &avx2;
    case AFO_CPU_AVX512: case AFO_CPU_AMX: return afo_cpu_get_features()->avx512_vnni ? &avx512 : &avx2;
#elif defined(__aarch64__)
    case AFO_CPU_NEON: return &neon;
#endif
    default: return NULL;
    }
}

/* ------------------------------------------------------------ reference */

void afo_quant_qmm_ref(const afo_qmv_args *a, int64_t n0, int64_t n1) {
    const afo_qx *qx = a->qx;
    int64_t nbx = qx->ldx / 32, per = a->gs / 32;
    uint8_t *q = malloc((size_t)a->K);
    float *s = malloc((size_t)(2 * a->G) * sizeof(float));
    size_t ps = afo_dtype_size(a->sdt);
    for (int64_t n = n0; q && s && n < n1; n++) { /* out of memory: y is left as it was, which tests see */
        float *b = s + a->G;
        afo_quant_levels_u8(a->bits, a->w + n * a->words, 0, a->K, q);
        afo_cpu_convert_row(a->sdt, (const char *)a->s + n * a->G * (int64_t)ps, AFO_FLOAT32, s, a->G);
        afo_cpu_convert_row(a->sdt, (const char *)a->b + n * a->G * (int64_t)ps, AFO_FLOAT32, b, a->G);
        for (int m = 0; m < a->M; m++) {
            const int8_t *x8 = (const int8_t *)qx->xq + m * qx->ldx;
            const int16_t *x16 = (const int16_t *)qx->xq + m * qx->ldx;
            float acc = 0.0f;
            for (int64_t blk = 0; blk < a->K / 32; blk++) {
                int64_t g = blk / per;
                if (blk % per == 0) acc = fmaf(qx->xsum[m * a->G + g], b[g], acc);
                int32_t dot = 0;
                for (int i = 0; i < 32; i++)
                    dot += q[blk * 32 + i] * (qx->x8 ? x8[afo_qx_x8_pos(blk, i)] : x16[blk * 32 + i]);
                acc = fmaf((float)dot, s[g] * qx->sx[m * nbx + blk], acc);
            }
            a->y[m * a->ldy + n] = acc;
        }
    }
    free(q);
    free(s);
}

/* ------------------------------------------------------------ panels */

/* Bytes of one block of one tile. */
static int64_t block_bytes(int bits) { return (int64_t)afo_qmm_steps(bits) * AFO_QMM_NR * 4; }

void afo_qmm_pack_scalar(int bits, const uint8_t *const col[AFO_QMM_NR], int64_t nblk, uint8_t *dst) {
    const size_t step = AFO_QMM_NR * 4, srcb = (size_t)(4 * bits);
    for (int r = 0; r < AFO_QMM_NR; r++)
        for (int64_t i = 0; i < nblk; i++) {
            const uint8_t *src = col[r] + (size_t)i * srcb;
            uint8_t *d = dst + (size_t)(i * block_bytes(bits)) + (size_t)r * 4;
            if (bits == 8) {
                for (int j = 0; j < 16; j++) {
                    uint16_t pair[2] = {src[2 * j], src[2 * j + 1]};
                    memcpy(d + j * step, pair, 4);
                }
                continue;
            }
            /* byte i holds element 2i (low nibble) and 2i + 1: steps 0-3 take
             * the low nibbles of bytes 4j .. 4j + 3, steps 4-7 the high ones */
            for (int h = 0; h < 2; h++) {
                uint64_t v;
                memcpy(&v, src + 8 * h, 8);
                uint64_t lo = v & 0x0f0f0f0f0f0f0f0full, hi = v >> 4 & 0x0f0f0f0f0f0f0f0full;
                memcpy(d + (2 * h) * step, &lo, 4);
                memcpy(d + (2 * h + 1) * step, (const char *)&lo + 4, 4);
                memcpy(d + (2 * h + 4) * step, &hi, 4);
                memcpy(d + (2 * h + 5) * step, (const char *)&hi + 4, 4);
            }
        }
}

typedef struct panel_buf {
    uint8_t *lv;
    float *s, *b, *row; /* row: one column's parameters of the panel's groups */
} panel_buf;

/* Levels (through the level's pack) and parameters of tiles tile0 ..
 * tile0 + ntiles over blocks blk0 .. blk0 + nblk, in the layout of
 * quant_gemm.h. */
static void pack_panel(const afo_qmv_args *a, int64_t N, afo_qmm_pack_fn pack, int64_t tile0, int ntiles,
                       int64_t blk0, int64_t nblk, const panel_buf *pb) {
    int per = a->gs / 32;
    int64_t ng = nblk / per, g0 = blk0 / per;
    size_t ps = afo_dtype_size(a->sdt);
    for (int t = 0; t < ntiles; t++) {
        const uint8_t *col[AFO_QMM_NR];
        for (int r = 0; r < AFO_QMM_NR; r++) {
            int64_t n = (tile0 + t) * AFO_QMM_NR + r;
            float *s = pb->s + t * ng * AFO_QMM_NR + r, *b = pb->b + t * ng * AFO_QMM_NR + r;
            if (n >= N) {
                col[r] = col[r - 1]; /* n > 0: a tile starts below N */
                for (int64_t g = 0; g < ng; g++) s[g * AFO_QMM_NR] = b[g * AFO_QMM_NR] = 0.0f;
                continue;
            }
            col[r] = (const uint8_t *)(a->w + n * a->words) + blk0 * 4 * a->bits;
            afo_cpu_convert_row(a->sdt, (const char *)a->s + (n * a->G + g0) * (int64_t)ps, AFO_FLOAT32, pb->row, ng);
            for (int64_t g = 0; g < ng; g++) s[g * AFO_QMM_NR] = pb->row[g];
            afo_cpu_convert_row(a->sdt, (const char *)a->b + (n * a->G + g0) * (int64_t)ps, AFO_FLOAT32, pb->row, ng);
            for (int64_t g = 0; g < ng; g++) b[g * AFO_QMM_NR] = pb->row[g];
        }
        pack(a->bits, col, nblk, pb->lv + t * nblk * block_bytes(a->bits));
    }
}

/* ------------------------------------------------------------ driver */

/* Panel levels per task: about half of a 512 KiB L2, which the panel is
 * read from once per 4 rows of x while those rows stay in L1. */
int64_t afo_qmm_panel_bytes = 256 << 10;
enum { TASK_TILES = 8 };

typedef struct qmm_job {
    const afo_qmv_args *a;
    const afo_qmm_level *lv;
    int64_t N, tiles, kblocks; /* tiles of N, blocks of K per panel */
    int tpt, msplit, mstep;    /* tiles per task; M split into msplit ranges of mstep rows */
    int64_t tasks;
    atomic_llong next;
    atomic_bool failed;
} qmm_job;

static void qmm_worker(void *p, int thread, int nthreads) {
    (void)thread, (void)nthreads;
    qmm_job *j = p;
    const afo_qmv_args *a = j->a;
    int64_t nblk_all = a->K / 32, ng = j->kblocks / (a->gs / 32);
    size_t lvb = (size_t)(j->tpt * j->kblocks * block_bytes(a->bits));
    size_t pf = (size_t)(j->tpt * ng * AFO_QMM_NR);
    char *buf = aligned_alloc(64, (lvb + (2 * pf + (size_t)ng) * sizeof(float) + 63) / 64 * 64);
    if (!buf) {
        atomic_store(&j->failed, true);
        return;
    }
    panel_buf pb = {.lv = (uint8_t *)buf, .s = (float *)(buf + lvb)};
    pb.b = pb.s + pf;
    pb.row = pb.b + pf;
    for (;;) {
        int64_t task = atomic_fetch_add(&j->next, 1);
        if (task >= j->tasks) break;
        int64_t tile0 = task / j->msplit * j->tpt;
        int ntiles = (int)(j->tiles - tile0 < j->tpt ? j->tiles - tile0 : j->tpt);
        int m0 = (int)(task % j->msplit) * j->mstep, m1 = m0 + j->mstep < a->M ? m0 + j->mstep : a->M;
        int64_t n0 = tile0 * AFO_QMM_NR, ncols = j->N - n0 < ntiles * AFO_QMM_NR ? j->N - n0 : ntiles * AFO_QMM_NR;
        for (int64_t blk0 = 0; blk0 < nblk_all; blk0 += j->kblocks) {
            int64_t nblk = nblk_all - blk0 < j->kblocks ? nblk_all - blk0 : j->kblocks;
            pack_panel(a, j->N, j->lv->pack, tile0, ntiles, blk0, nblk, &pb);
            afo_qmm_panel pn = {.a = a, .m0 = m0, .m1 = m1, .n0 = n0, .ncols = ncols, .ntiles = ntiles,
                                .blk0 = blk0, .nblk = nblk, .lv = pb.lv, .s = pb.s, .b = pb.b, .accumulate = blk0 > 0};
            j->lv->kernel(&pn);
        }
    }
    free(buf);
}

afo_status afo_quant_qmm(const afo_qmv_args *a, int64_t N, const afo_qmm_level *lv) {
    int nt = afo_get_threads();
    qmm_job j = {.a = a, .lv = lv, .N = N, .tiles = (N + AFO_QMM_NR - 1) / AFO_QMM_NR};
    /* fewer tiles per task until every thread has one, then ranges of M */
    int64_t tpt = (j.tiles + nt - 1) / nt;
    j.tpt = (int)(tpt < TASK_TILES ? tpt : TASK_TILES);
    int64_t ntn = (j.tiles + j.tpt - 1) / j.tpt, msplit = ntn >= nt ? 1 : (nt + ntn - 1) / ntn;
    int64_t mmax = (a->M + 15) / 16;
    j.msplit = (int)(msplit < mmax ? msplit : mmax);
    j.mstep = (a->M + j.msplit - 1) / j.msplit;
    j.tasks = ntn * j.msplit;
    /* whole groups of every size (up to 128 = 4 blocks) */
    int64_t kb = afo_qmm_panel_bytes / (j.tpt * block_bytes(a->bits)) / 4 * 4;
    j.kblocks = kb < 4 ? 4 : kb;
    atomic_init(&j.next, 0);
    atomic_init(&j.failed, false);
    afo_parallel_run(qmm_worker, &j);
    return atomic_load(&j.failed) ? afo_error(AFO_ERR_OUT_OF_MEMORY, "quantized_matmul: out of memory for a panel")
                                  : AFO_OK;
}
