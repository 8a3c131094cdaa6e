/* AMX-BF16 GEMM microkernel: a 32x32 f32 block of C in four 16x16 tiles,
 * each k block of 32 adding two A tiles (16 rows x 32 bf16) times two B
 * tiles (16 k-pairs x 16 columns) with TDPBF16PS, 16x16x32 multiply-adds
 * per instruction. */
#include <immintrin.h>

#include "backends/cpu/gemm.h"

enum { MR = 32, NR = 32, KB = 32 };

/* ldtilecfg's 64-byte operand (palette 1). Static and initialised: GCC's
 * _tile_loadconfig tells the compiler it reads only 8 bytes, so stores
 * into a local copy could be dropped. */
typedef struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* tmm0..3 C (rows 0-15/16-31 x columns 0-15/16-31), tmm4..5 A, tmm6..7 B */
static const _Alignas(64) tile_config k_config = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

static void tiles_begin(void) { _tile_loadconfig(&k_config); }

static void tiles_end(void) { _tile_release(); }

/* Each tile loaded is used twice: 4 loads feed 4 TDPBF16PS per k block. */
static void ukr_amx(int64_t kb, const uint16_t *a, const uint16_t *b, float *c, int64_t ldc, bool accumulate) {
    long ldcb = (long)ldc * (long)sizeof(float);
    float *c1 = c + 16 * ldc;
    if (accumulate) {
        _tile_loadd(0, c, ldcb);
        _tile_loadd(1, c + 16, ldcb);
        _tile_loadd(2, c1, ldcb);
        _tile_loadd(3, c1 + 16, ldcb);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int64_t k = 0; k < kb; k++) {
        const uint16_t *ak = a + k * MR * KB, *bk = b + k * (KB / 2) * NR * 2;
        /* B rows are k-pairs of NR columns (4*NR bytes); A rows 32 bf16 */
        _tile_loadd(4, ak, KB * 2);
        _tile_loadd(6, bk, NR * 4);
        _tile_loadd(7, bk + 32, NR * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(5, ak + 16 * KB, KB * 2);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, c, ldcb);
    _tile_stored(1, c + 16, ldcb);
    _tile_stored(2, c1, ldcb);
    _tile_stored(3, c1 + 16, ldcb);
}

/* kc 1024: C is read and written once per 1024 k (its tile loads stall on
 * the caches) while a 32 x 1024 panel (64 KiB) still streams from L2. It
 * was the best of 512, 1024 and 2048 on a Sapphire Rapids class Xeon, if
 * within that machine's large run-to-run spread. */
const afo_gemm_tiles afo_gemm_tiles_amx = {
    .mr = MR, .nr = NR, .kc = 1024, .mc = 256, .nc = 1024,
    .begin = tiles_begin, .end = tiles_end, .ukr = ukr_amx,
};
