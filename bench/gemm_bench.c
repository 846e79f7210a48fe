/* gemm_bench.c — gemm-bench: GFLOP/s of tapegrad's GEMM (src/gemm.c) against OpenBLAS (when
 * Meson found it), on the same number of threads: squares 256 to 2048, the products of an MLP
 * 784-256-128-10 step on a batch of 128 (Linear's y = x W^T, then dx = g W and dW = g^T x), and
 * the three products conv2d runs per image in the trainer's second layer (32 -> 64 channels,
 * 3x3, 14x14: y = W cols, dcols = W^T g, dW = g cols^T). Each figure is the median over the
 * repeats, with the best beside it; a repeat times enough calls to last about 20 ms. The ratio is
 * tapegrad / OpenBLAS, of the medians.
 *
 * Usage: gemm-bench [--threads N] [--repeats N] [--f32|--f64] [--only TEXT] [--isa SET]
 * (default: every processor OpenMP sees, 9 repeats, both dtypes, every product, the best kernel
 * set of this CPU; --only runs the products whose name contains TEXT; --isa avx512f, avx2 or
 * scalar runs that set's micro-kernels, where the CPU has it). */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/gemm.h"
#include "../src/parallel.h"

#ifdef TG_HAVE_CBLAS
#include <cblas.h>
#endif

typedef struct shape {
    const char *name;
    int64_t m, n, k;
    bool ta, tb;
} shape;

static const shape shapes[] = {
    {"square 256", 256, 256, 256, false, false},
    {"square 512", 512, 512, 512, false, false},
    {"square 1024", 1024, 1024, 1024, false, false},
    {"square 2048", 2048, 2048, 2048, false, false},
    {"fc1 y = x W^T  [128x784][784x256]", 128, 256, 784, false, true},
    {"fc1 dx = g W   [128x256][256x784]", 128, 784, 256, false, false},
    {"fc1 dW = g^T x [256x128][128x784]", 256, 784, 128, true, false},
    {"fc2 y = x W^T  [128x256][256x128]", 128, 128, 256, false, true},
    {"fc2 dx = g W   [128x128][128x256]", 128, 256, 128, false, false},
    {"fc2 dW = g^T x [128x128][128x256]", 128, 256, 128, true, false},
    {"fc3 y = x W^T  [128x128][128x10]", 128, 10, 128, false, true},
    {"fc3 dx = g W   [128x10][10x128]", 128, 128, 10, false, false},
    {"fc3 dW = g^T x [10x128][128x128]", 10, 128, 128, true, false},
    {"conv2 y = W cols [64x288][288x196]", 64, 196, 288, false, false},
    {"conv2 dcols = W^T g [288x64][64x196]", 288, 196, 64, true, false},
    {"conv2 dW = g cols^T [64x196][196x288]", 64, 288, 196, false, true},
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct operands {
    tg_dtype dt;
    const shape *s;
    void *a, *b, *c;
    int64_t lda, ldb;
    int threads;
    tg__gemm_isa isa;
} operands;

static void call(const operands *o, bool portable)
{
    const shape *s = o->s;
    if (portable) {
        tg__gemm_with_isa(o->isa, o->dt, s->ta, s->tb, s->m, s->n, s->k, o->a, o->lda, o->b, o->ldb,
                          0.0, o->c, s->n, o->threads);
        return;
    }
#ifdef TG_HAVE_CBLAS
    enum CBLAS_TRANSPOSE ta = s->ta ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = s->tb ? CblasTrans : CblasNoTrans;
    if (o->dt == TG_F32)
        cblas_sgemm(CblasRowMajor, ta, tb, (int)s->m, (int)s->n, (int)s->k, 1.0f, o->a, (int)o->lda,
                    o->b, (int)o->ldb, 0.0f, o->c, (int)s->n);
    else
        cblas_dgemm(CblasRowMajor, ta, tb, (int)s->m, (int)s->n, (int)s->k, 1.0, o->a, (int)o->lda,
                    o->b, (int)o->ldb, 0.0, o->c, (int)s->n);
#endif
}

/* Seconds per call, timed over `calls` calls. */
static double per_call(const operands *o, bool portable, int calls)
{
    double t0 = now();
    for (int i = 0; i < calls; i++)
        call(o, portable);
    return (now() - t0) / calls;
}

/* GFLOP/s of one implementation: g[0] the median of `repeats` timings of `calls` calls, g[1] the
 * best. The implementations are timed one after the other, not interleaved, and each after a
 * pause: OpenBLAS's idle threads spin (sched_yield) for a while after each call, and libgomp's
 * for a shorter while, which would slow whatever runs next on a machine with few cores. */
static void measure(const operands *o, bool portable, int calls, int repeats, double *samples,
                    double flop, double *g)
{
    struct timespec pause = {0, 200000000};
    nanosleep(&pause, NULL);
    per_call(o, portable, calls);
    for (int r = 0; r < repeats; r++)
        samples[r] = per_call(o, portable, calls);
    qsort(samples, (size_t)repeats, sizeof(double), cmp_double);
    g[0] = flop / samples[repeats / 2] * 1e-9;
    g[1] = flop / samples[0] * 1e-9;
}

int main(int argc, char **argv)
{
    int threads = tg__parallel_max(), repeats = 9, dtypes = 3;
    const char *only = "";
    tg__gemm_isa isa = TG__GEMM_BEST;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc)
            repeats = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--f32"))
            dtypes = 1;
        else if (!strcmp(argv[i], "--f64"))
            dtypes = 2;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            const char *name = argv[++i];
            isa = !strcmp(name, "avx512f")  ? TG__GEMM_AVX512
                  : !strcmp(name, "avx2")   ? TG__GEMM_AVX2
                  : !strcmp(name, "scalar") ? TG__GEMM_SCALAR
                                            : (tg__gemm_isa)-1;
            if (isa == (tg__gemm_isa)-1 || !tg__gemm_isa_ok(isa)) {
                fprintf(stderr, "gemm-bench: kernel set %s unknown or not on this CPU\n", name);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: gemm-bench [--threads N] [--repeats N] [--f32|--f64] "
                            "[--only TEXT] [--isa avx512f|avx2|scalar]\n");
            return 2;
        }
    }
    if (threads < 1 || repeats < 1 || repeats > 1000) {
        fprintf(stderr, "gemm-bench: bad --threads or --repeats\n");
        return 2;
    }
#ifdef TG_HAVE_CBLAS
    bool blas = true;
    openblas_set_num_threads(threads);
#else
    bool blas = false;
#endif
    printf("gemm-bench: tapegrad (%s kernels) vs %s, %d thread%s, median of %d repeats, GFLOP/s\n",
           tg__gemm_isa_name(isa), blas ? "OpenBLAS" : "nothing (no BLAS in this build)", threads,
           threads == 1 ? "" : "s", repeats);
    printf("%-4s %-36s %16s %16s %6s\n", "", "product", "tapegrad (best)", "openblas (best)",
           "ratio");
    double *samples = malloc((size_t)repeats * sizeof(double));
    if (!samples)
        return 1;
    for (int d = 0; d < 2; d++) {
        if (!(dtypes & (1 << d)))
            continue;
        tg_dtype dt = d ? TG_F64 : TG_F32;
        size_t es = tg_dtype_size(dt);
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const shape *s = &shapes[si];
            if (!strstr(s->name, only))
                continue;
            operands o = {.dt = dt, .s = s, .threads = threads, .isa = isa};
            o.lda = s->ta ? s->m : s->k;
            o.ldb = s->tb ? s->k : s->n;
            o.a = malloc((size_t)(s->m * s->k) * es);
            o.b = malloc((size_t)(s->k * s->n) * es);
            o.c = malloc((size_t)(s->m * s->n) * es);
            if (!o.a || !o.b || !o.c)
                return 1;
            for (int64_t i = 0; i < s->m * s->k; i++)
                dt == TG_F32 ? (void)(((float *)o.a)[i] = (float)(i % 17) * 0.1f)
                             : (void)(((double *)o.a)[i] = (double)(i % 17) * 0.1);
            for (int64_t i = 0; i < s->k * s->n; i++)
                dt == TG_F32 ? (void)(((float *)o.b)[i] = (float)(i % 13) * 0.1f)
                             : (void)(((double *)o.b)[i] = (double)(i % 13) * 0.1);
            /* Calls per repeat: about 20 ms of the portable kernel, from a warm-up call. */
            call(&o, true);
            double t = per_call(&o, true, 1);
            int calls = t > 0.02 ? 1 : (int)(0.02 / (t > 1e-7 ? t : 1e-7)) + 1;
            double flop = 2.0 * (double)s->m * (double)s->n * (double)s->k, gp[2], gb[2];
            measure(&o, true, calls, repeats, samples, flop, gp);
            printf("%-4s %-36s %8.1f (%5.1f)", d ? "f64" : "f32", s->name, gp[0], gp[1]);
            if (blas) {
                measure(&o, false, calls, repeats, samples, flop, gb);
                printf(" %8.1f (%5.1f) %6.2f\n", gb[0], gb[1], gp[0] / gb[0]);
            } else {
                printf(" %8s  %5s  %6s\n", "-", "", "-");
            }
            fflush(stdout);
            free(o.a);
            free(o.b);
            free(o.c);
        }
    }
    free(samples);
    return 0;
}
