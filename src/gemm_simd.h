/* gemm_simd.h — one GEMM micro-kernel, instantiated once per (instruction set, dtype) by
 * gemm_avx512.c and gemm_avx2.c, each compiled with its own -m flags. No include guard: a file
 * includes it once per dtype, defining before each:
 *   T, V, W      element type, vector type, lanes
 *   MR, KC       rows of the C tile, depth of a packed panel (the tile is MR x 2W)
 *   LOAD, STORE  unaligned vector load/store; FMA(a, b, c) = a * b + c; ADD; SET1 (broadcast);
 *                ZERO
 *   KERNEL       the kernel's name; DESCRIBE the name of its tg__gemm_kernel constructor
 * and it undefines them all at the end.
 *
 * Register blocking: 2*MR accumulators of W lanes hold the MR x 2W tile of C for the whole
 * panel depth; each step of the depth loads two vectors of B and broadcasts MR scalars of A,
 * which feed 2*MR independent FMAs: enough to cover the FMA latency, with one load per FMA or
 * fewer. The packed layouts make every access in the loop sequential. */
#include <stdint.h>

#include "gemm.h"

static void KERNEL(int64_t kc, const void *pa, const void *pb, void *pc, int64_t rs, int64_t cs,
                   int64_t mr, int64_t nr, bool load)
{
    const T *a = pa, *b = pb;
    T *c = pc;
    V acc[MR][2];
#pragma GCC unroll 32
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = ZERO();
    for (int64_t p = 0; p < kc; p++) {
        V b0 = LOAD(b), b1 = LOAD(b + W);
#pragma GCC unroll 32
        for (int i = 0; i < MR; i++) {
            V ai = SET1(a[i]);
            acc[i][0] = FMA(ai, b0, acc[i][0]);
            acc[i][1] = FMA(ai, b1, acc[i][1]);
        }
        a += MR;
        b += 2 * W;
    }
    if (mr == MR && nr == 2 * W && cs == 1) {
#pragma GCC unroll 32
        for (int i = 0; i < MR; i++) {
            T *ci = c + i * rs;
            if (load) {
                acc[i][0] = ADD(acc[i][0], LOAD(ci));
                acc[i][1] = ADD(acc[i][1], LOAD(ci + W));
            }
            STORE(ci, acc[i][0]);
            STORE(ci + W, acc[i][1]);
        }
        return;
    }
    /* An edge tile, or a transposed one: the full tile through a buffer, then its valid part. */
    T tile[MR][2 * W];
#pragma GCC unroll 32
    for (int i = 0; i < MR; i++) {
        STORE(tile[i], acc[i][0]);
        STORE(tile[i] + W, acc[i][1]);
    }
    for (int64_t i = 0; i < mr; i++)
        for (int64_t j = 0; j < nr; j++) {
            T *cij = c + i * rs + j * cs;
            *cij = load ? *cij + tile[i][j] : tile[i][j];
        }
}

static tg__gemm_kernel DESCRIBE(void) { return (tg__gemm_kernel){MR, 2 * W, KC, KERNEL}; }

#undef T
#undef V
#undef W
#undef MR
#undef KC
#undef LOAD
#undef STORE
#undef FMA
#undef ADD
#undef SET1
#undef ZERO
#undef KERNEL
#undef DESCRIBE
