/* gemm.h — the engine's matrix multiply; the only layer that names BLAS. */
#ifndef TG_GEMM_H
#define TG_GEMM_H

#include <stdbool.h>

#include "tapegrad.h"

/* C[m,n] = op(A)[m,k] * op(B)[k,n] + beta * C, row-major, op = transpose when ta/tb.
 * lda/ldb/ldc are the row strides of A, B, C as stored. beta is 0 or 1. */
void tg__gemm(tg_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
              int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc);

/* "openblas" or "portable". */
const char *tg__gemm_backend(void);

#endif
