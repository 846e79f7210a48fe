/* gemm.c — matrix multiply through CBLAS when built with it, else a portable loop nest. */
#include "gemm.h"

#include <string.h>

#ifdef TG_HAVE_CBLAS
#include <cblas.h>
#endif

const char *tg__gemm_backend(void)
{
#ifdef TG_HAVE_CBLAS
    return "openblas";
#else
    return "portable";
#endif
}

/* Portable kernel: C = op(A) op(B) + beta C, accumulating rows of C with unit-stride inner
 * loops the compiler vectorises. B^T is handled by dot products along contiguous rows. */
#define PORTABLE(T, name)                                                                          \
    static void name(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T *a, int64_t lda,   \
                     const T *b, int64_t ldb, double beta, T *c, int64_t ldc)                      \
    {                                                                                              \
        for (int64_t i = 0; i < m; i++) {                                                          \
            T *ci = c + i * ldc;                                                                   \
            if (beta == 0)                                                                         \
                memset(ci, 0, (size_t)n * sizeof(T));                                              \
            if (!tb) {                                                                             \
                for (int64_t p = 0; p < k; p++) {                                                  \
                    T aip = ta ? a[p * lda + i] : a[i * lda + p];                                  \
                    const T *bp = b + p * ldb;                                                     \
                    for (int64_t j = 0; j < n; j++)                                                \
                        ci[j] += aip * bp[j];                                                      \
                }                                                                                  \
            } else {                                                                               \
                for (int64_t j = 0; j < n; j++) {                                                  \
                    const T *bj = b + j * ldb;                                                     \
                    T s = 0;                                                                       \
                    if (!ta) {                                                                     \
                        const T *ai = a + i * lda;                                                 \
                        for (int64_t p = 0; p < k; p++)                                            \
                            s += ai[p] * bj[p];                                                    \
                    } else {                                                                       \
                        for (int64_t p = 0; p < k; p++)                                            \
                            s += a[p * lda + i] * bj[p];                                           \
                    }                                                                              \
                    ci[j] += s;                                                                    \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }
PORTABLE(float, gemm_f32)
PORTABLE(double, gemm_f64)

void tg__gemm(tg_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void *a,
              int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc)
{
    if (m == 0 || n == 0)
        return;
    if (k == 0) {
        if (beta == 0)
            for (int64_t i = 0; i < m; i++)
                memset((char *)c + (size_t)(i * ldc) * tg_dtype_size(dt), 0,
                       (size_t)n * tg_dtype_size(dt));
        return;
    }
#ifdef TG_HAVE_CBLAS
    if (m < INT32_MAX && n < INT32_MAX && k < INT32_MAX) {
        enum CBLAS_TRANSPOSE tA = ta ? CblasTrans : CblasNoTrans;
        enum CBLAS_TRANSPOSE tB = tb ? CblasTrans : CblasNoTrans;
        if (dt == TG_F32)
            cblas_sgemm(CblasRowMajor, tA, tB, (int)m, (int)n, (int)k, 1.0f, a, (int)lda, b,
                        (int)ldb, (float)beta, c, (int)ldc);
        else
            cblas_dgemm(CblasRowMajor, tA, tB, (int)m, (int)n, (int)k, 1.0, a, (int)lda, b,
                        (int)ldb, beta, c, (int)ldc);
        return;
    }
#endif
    if (dt == TG_F32)
        gemm_f32(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
    else
        gemm_f64(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
}
