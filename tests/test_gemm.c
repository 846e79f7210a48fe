/* test_gemm.c — the GEMM (src/gemm.c) against a naive triple loop in double: every
 * micro-kernel set the CPU runs (scalar, AVX2, AVX-512), f32 and f64, all four transpose cases,
 * beta 0 (C holds NaN before, and must not be read) and 1, row strides larger than the rows, and
 * shapes from 1 to 70 in each dimension (primes, kernel tile sizes and their neighbours), plus
 * products deep and wide enough to cross the cache blocks, on one to three threads. Elements
 * outside the m x n part of C must be left alone. Tolerance: |c - ref| <= tol * k * (1 + sum_p
 * |a_ip b_pj|), tol 1e-5 in f32 and 1e-12 in f64. */
#include "common.h"

#include "../src/gemm.h"

/* Numbers in [-1, 1) from a 64-bit LCG, reproducible. */
static double next_value(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static double get(tg_dtype dt, const void *p, int64_t i)
{
    return dt == TG_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}

static void set(tg_dtype dt, void *p, int64_t i, double v)
{
    if (dt == TG_F32)
        ((float *)p)[i] = (float)v;
    else
        ((double *)p)[i] = v;
}

/* One product's operands, as stored: op(A) is m x k, op(B) is k x n, C is m x n. */
typedef struct problem {
    tg_dtype dt;
    bool ta, tb;
    int64_t m, n, k, lda, ldb, ldc;
    void *a, *b, *c0;  /* c0: C before the product (beta 1) */
    double *ref, *mag; /* op(A) op(B) and sum_p |a_ip b_pj|, m x n */
} problem;

#define SENTINEL 12345.0

static void problem_init(problem *pr, tg_dtype dt, bool ta, bool tb, int64_t m, int64_t n,
                         int64_t k, uint64_t seed)
{
    *pr = (problem){.dt = dt, .ta = ta, .tb = tb, .m = m, .n = n, .k = k};
    int64_t ra = ta ? k : m, ca = ta ? m : k, rb = tb ? n : k, cb = tb ? k : n;
    /* Row strides past the minimum, by amounts that vary with the shape. */
    pr->lda = ca + 1 + (m + k) % 5;
    pr->ldb = cb + 2 + (n + k) % 3;
    pr->ldc = n + 3;
    size_t es = tg_dtype_size(dt);
    pr->a = malloc((size_t)(ra * pr->lda) * es);
    pr->b = malloc((size_t)(rb * pr->ldb) * es);
    pr->c0 = malloc((size_t)(m * pr->ldc) * es);
    pr->ref = malloc((size_t)(m * n) * sizeof(double));
    pr->mag = malloc((size_t)(m * n) * sizeof(double));
    assert_true(pr->a && pr->b && pr->c0 && pr->ref && pr->mag);
    uint64_t s = seed;
    for (int64_t i = 0; i < ra * pr->lda; i++)
        set(dt, pr->a, i, next_value(&s));
    for (int64_t i = 0; i < rb * pr->ldb; i++)
        set(dt, pr->b, i, next_value(&s));
    for (int64_t i = 0; i < m * pr->ldc; i++)
        set(dt, pr->c0, i, next_value(&s));
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double acc = 0, mag = 0;
            for (int64_t p = 0; p < k; p++) {
                double x = get(dt, pr->a, ta ? p * pr->lda + i : i * pr->lda + p);
                double y = get(dt, pr->b, tb ? j * pr->ldb + p : p * pr->ldb + j);
                acc += x * y;
                mag += fabs(x * y);
            }
            pr->ref[i * n + j] = acc;
            pr->mag[i * n + j] = mag;
        }
}

static void problem_free(problem *pr)
{
    free(pr->a);
    free(pr->b);
    free(pr->c0);
    free(pr->ref);
    free(pr->mag);
}

/* Runs the product with kernel set isa on `threads` threads (tg__gemm when isa is -1) for beta
 * 0 and 1, and checks every element of C. */
static void check(const problem *pr, int isa, int threads)
{
    tg_dtype dt = pr->dt;
    size_t es = tg_dtype_size(dt);
    int64_t m = pr->m, n = pr->n, k = pr->k, ldc = pr->ldc;
    double tol = (dt == TG_F32 ? 1e-5 : 1e-12) * (double)(k > 1 ? k : 1);
    void *c = malloc((size_t)(m * ldc) * es);
    assert_non_null(c);
    for (int beta = 0; beta <= 1; beta++) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < ldc; j++)
                set(dt, c, i * ldc + j,
                    j >= n ? SENTINEL
                    : beta ? get(dt, pr->c0, i * ldc + j)
                           : NAN);
        if (isa < 0)
            tg__gemm(dt, pr->ta, pr->tb, m, n, k, pr->a, pr->lda, pr->b, pr->ldb, beta, c, ldc,
                     threads);
        else
            tg__gemm_with_isa((tg__gemm_isa)isa, dt, pr->ta, pr->tb, m, n, k, pr->a, pr->lda, pr->b,
                              pr->ldb, beta, c, ldc, threads);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < ldc; j++) {
                double got = get(dt, c, i * ldc + j);
                double want = j >= n
                                  ? SENTINEL
                                  : pr->ref[i * n + j] + (beta ? get(dt, pr->c0, i * ldc + j) : 0);
                double bound = j >= n ? 0 : tol * (1 + pr->mag[i * n + j]);
                if (!(fabs(got - want) <= bound))
                    fail_msg("%s %s ta=%d tb=%d m=%lld n=%lld k=%lld beta=%d threads=%d: "
                             "C[%lld,%lld] = %.17g, expected %.17g",
                             isa < 0 ? "tg__gemm" : tg__gemm_isa_name((tg__gemm_isa)isa),
                             dt == TG_F32 ? "f32" : "f64", pr->ta, pr->tb, (long long)m,
                             (long long)n, (long long)k, beta, threads, (long long)i, (long long)j,
                             got, want);
            }
    }
    free(c);
}

/* The kernel sets this CPU runs. */
static int kernel_sets(int *isas)
{
    static const tg__gemm_isa all[] = {TG__GEMM_SCALAR, TG__GEMM_AVX2, TG__GEMM_AVX512};
    int count = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (tg__gemm_isa_ok(all[i]))
            isas[count++] = (int)all[i];
    return count;
}

/* Every (m, n, k) from `dims`, the four transpose cases, f32 and f64, every kernel set. */
static void sweep(const int64_t *dims, int ndims, int threads)
{
    int isas[3], nisa = kernel_sets(isas);
    uint64_t seed = 1;
    for (int d = 0; d < 2; d++)
        for (int t = 0; t < 4; t++)
            for (int im = 0; im < ndims; im++)
                for (int in = 0; in < ndims; in++)
                    for (int ik = 0; ik < ndims; ik++) {
                        problem pr;
                        problem_init(&pr, d ? TG_F64 : TG_F32, t & 1, t & 2, dims[im], dims[in],
                                     dims[ik], seed++);
                        for (int s = 0; s < nisa; s++)
                            check(&pr, isas[s], threads);
                        problem_free(&pr);
                    }
}

/* Small shapes: around the tiles (4x8 scalar, 6x16 / 6x8 AVX2, 14x32 / 14x16 AVX-512), primes,
 * up to 70. */
static void small_shapes(void **state)
{
    (void)state;
    static const int64_t dims[] = {1, 2, 3, 5, 6, 7, 8, 13, 14, 15, 16, 17, 29, 31, 32, 33, 47, 70};
    sweep(dims, (int)(sizeof dims / sizeof dims[0]), 1);
}

/* Products past the cache blocks (KC deep, NB wide) and large enough to be shared among
 * threads, split by rows or by columns. */
static void blocked_shapes(void **state)
{
    (void)state;
    static const int64_t shapes[][3] = {
        {29, 390, 300},  {100, 200, 513}, {130, 250, 97}, {300, 41, 200}, {97, 700, 50},
        {256, 256, 256}, {71, 67, 1031},  {3, 1000, 129}, {1000, 3, 129}, {64, 64, 64},
    };
    int isas[3], nisa = kernel_sets(isas);
    uint64_t seed = 1000;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int d = 0; d < 2; d++)
            for (int t = 0; t < 4; t++) {
                problem pr;
                problem_init(&pr, d ? TG_F64 : TG_F32, t & 1, t & 2, shapes[s][0], shapes[s][1],
                             shapes[s][2], seed++);
                for (int i = 0; i < nisa; i++)
                    for (int threads = 1; threads <= 3; threads++)
                        check(&pr, isas[i], threads);
                problem_free(&pr);
            }
}

/* Empty products: m or n zero leaves C alone; k zero makes C zero (beta 0) or leaves it. */
static void empty_products(void **state)
{
    (void)state;
    int isas[3], nisa = kernel_sets(isas);
    for (int s = 0; s < nisa; s++)
        for (int d = 0; d < 2; d++) {
            problem pr;
            problem_init(&pr, d ? TG_F64 : TG_F32, false, false, 5, 7, 0, 7);
            check(&pr, isas[s], 1);
            problem_free(&pr);
        }
    float c[4] = {1, 2, 3, 4}, a[1] = {0}, b[1] = {0};
    tg__gemm(TG_F32, false, false, 0, 2, 3, a, 1, b, 1, 0.0, c, 2, 1);
    tg__gemm(TG_F32, false, false, 2, 0, 3, a, 1, b, 1, 0.0, c, 2, 1);
    for (int i = 0; i < 4; i++)
        assert_true(c[i] == (float)(i + 1));
}

/* tg__gemm (the best kernel set, on two threads) meets the same reference. */
static void dispatch_agrees(void **state)
{
    (void)state;
    static const int64_t dims[] = {1, 17, 70};
    uint64_t seed = 5000;
    for (int d = 0; d < 2; d++)
        for (int t = 0; t < 4; t++)
            for (int i = 0; i < 3; i++) {
                problem pr;
                problem_init(&pr, d ? TG_F64 : TG_F32, t & 1, t & 2, dims[i], dims[2 - i],
                             dims[(i + 1) % 3], seed++);
                check(&pr, -1, 2);
                problem_free(&pr);
            }
}

int main(void)
{
    printf("gemm: best kernel set %s\n", tg__gemm_isa_name(TG__GEMM_BEST));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(small_shapes),
        cmocka_unit_test(blocked_shapes),
        cmocka_unit_test(empty_products),
        cmocka_unit_test(dispatch_agrees),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
