/* gemm.h — the engine's matrix multiply: tapegrad's own blocked GEMM, on the context's threads. */
#ifndef TG_GEMM_H
#define TG_GEMM_H

#include <stdbool.h>

#include "tapegrad.h"

/* C[m,n] = op(A)[m,k] * op(B)[k,n] + beta * C, row-major, op = transpose when ta/tb.
 * lda/ldb/ldc are the row strides of A, B, C as stored. beta is 0 or 1 (with 0, C is only
 * written). A blocked, packed GEMM with the best micro-kernel this CPU runs. Allocates nothing:
 * its packing buffers, about 210 KiB, are on the stack of each thread that works on the product
 * (gemm.c says why and how they are bounded).
 *
 * `threads` (the kernel's tg_kernel.threads) is how many threads it may share the product
 * among, through tg__parallel_for: the context's setting governs every thread tapegrad runs, and
 * no other pool (OpenBLAS's, whose kernels tapegrad does not use) wakes. Small products stay on
 * the calling thread. */
void tg__gemm(tg_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
              int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc,
              int threads);

/* ---- Inside the GEMM layer: micro-kernel sets, for gemm.c, gemm_simd.h and the tests ---- */

/* The micro-kernel sets; TG__GEMM_BEST is the best one the CPU runs. */
typedef enum tg__gemm_isa {
    TG__GEMM_BEST,
    TG__GEMM_SCALAR,
    TG__GEMM_AVX2,
    TG__GEMM_AVX512,
} tg__gemm_isa;

/* Whether this build and CPU can run `isa`; its name ("scalar", "avx2", "avx512f"). */
bool tg__gemm_isa_ok(tg__gemm_isa isa);
const char *tg__gemm_isa_name(tg__gemm_isa isa);

/* tg__gemm with a given micro-kernel set (one that tg__gemm_isa_ok accepts). */
void tg__gemm_with_isa(tg__gemm_isa isa, tg_dtype dt, bool ta, bool tb, int64_t m, int64_t n,
                       int64_t k, const void *a, int64_t lda, const void *b, int64_t ldb,
                       double beta, void *c, int64_t ldc, int threads);

/* A micro-kernel: the mr x nr tile of C at c becomes (load ? C : 0) + A B, where A is a packed
 * panel of MR rows (a[p * MR + i], rows past mr zero) and B a packed panel of NR columns
 * (b[p * NR + j], columns past nr zero), both kc deep. Element (i, j) of the tile is at
 * c[i * rs + j * cs]: cs is 1, or the product is computed transposed (rs 1). mr <= MR, nr <= NR. */
typedef void (*tg__gemm_kernel_fn)(int64_t kc, const void *a, const void *b, void *c, int64_t rs,
                                   int64_t cs, int64_t mr, int64_t nr, bool load);
typedef struct tg__gemm_kernel {
    int mr, nr; /* MR x NR: the tile of C the kernel keeps in registers */
    int kc;     /* depth of a packed panel: an MR x kc panel of A stays in L1 */
    tg__gemm_kernel_fn fn;
} tg__gemm_kernel;

/* The micro-kernel of each SIMD set for dt (gemm_avx512.c, gemm_avx2.c; x86-64 builds only). */
tg__gemm_kernel tg__gemm_kernel_avx512(tg_dtype dt);
tg__gemm_kernel tg__gemm_kernel_avx2(tg_dtype dt);

#endif
