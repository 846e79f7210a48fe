/* suite_elementwise.c — memory throughput of the elementwise ops: exp, tanh, sigmoid, gelu
 * (tanh approximation), silu and gelu_erf (exact gelu), forward and backward, on 1M and 16M f32
 * elements, in GB/s of the bytes the op must move, beside a triad a[i] = b[i] + s * c[i] on 16M
 * floats with the same thread count, measured in the same run (at 16M, one triad beside each run of
 * an op). Forward reads x and writes y (8 bytes per element); backward is one fused pass that reads
 * two arrays (the output gradient and x or y) and writes the input gradient (12 bytes, as the
 * triad's). The input is a parameter, so putting it on the tape copies nothing; the backward is
 * tg_grad with respect to it, which adds into no parameter gradient. */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

typedef struct triad_job {
    float *block, *a, *b, *c;
    int64_t n;
    int threads;
} triad_job;

static void triad_run(void *user, double *times)
{
    triad_job *t = user;
    float *restrict a = t->a;
    const float *restrict b = t->b, *restrict c = t->c;
    const float s = 0.5f;
    int64_t n = t->n;
    double t0 = bench_now();
#ifdef _OPENMP
#pragma omp parallel for num_threads(t->threads) schedule(static)
#endif
    for (int64_t i = 0; i < n; i++)
        a[i] = b[i] + s * c[i];
    times[0] = bench_now() - t0;
}

/* The triad's arrays: one block, as STREAM's static arrays (and a tape's arena) are, each array
 * 4 KiB + 64 bytes past a multiple of its size from the last so that a[i], b[i] and c[i] do not
 * share cache sets (three separate allocations run 10-15% slower here), first touched by the
 * threads that use them. */
static bool triad_init(triad_job *t, int64_t n, int threads)
{
    const int64_t stride = n + 1040;
    t->n = n;
    t->threads = threads;
    t->block = aligned_alloc(64, (size_t)(3 * stride) * sizeof(float));
    if (!t->block)
        return false;
    t->a = t->block;
    t->b = t->block + stride;
    t->c = t->block + 2 * stride;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (int64_t i = 0; i < n; i++) {
        t->a[i] = 0;
        t->b[i] = 1;
        t->c[i] = 2;
    }
    return true;
}

typedef struct unary_job {
    tg_tape *tp;
    tg_param *x, *seed;
    tg_tensor (*op)(tg_tensor);
    triad_job *triad; /* run beside the op (times[2]), or NULL */
    tg_status status;
    double sink;
} unary_job;

/* Forward y = op(x) (times[0]) and the gradient d<seed, y>/dx (times[1]); with j->triad, a triad
 * run just before (times[2]), so the op and its reference share the machine's conditions. */
static void unary_run(void *user, double *times)
{
    unary_job *j = user;
    if (j->triad)
        triad_run(j->triad, times + 2);
    tg_tape_reset(j->tp);
    tg_tensor x = tg_param_tensor(j->tp, j->x), seed = tg_param_tensor(j->tp, j->seed), g;
    double t0 = bench_now();
    tg_tensor y = j->op(x);
    double t1 = bench_now();
    tg_status st = tg_grad(1, &y, &seed, 1, &x, &g, 0);
    double t2 = bench_now();
    times[0] = t1 - t0;
    times[1] = t2 - t1;
    if (st != TG_OK && j->status == TG_OK) {
        j->status = st;
        fprintf(stderr, "tg-bench elementwise: %s\n", tg_tape_error(j->tp));
    }
    const float *gd = tg_data(g);
    j->sink += gd ? gd[0] : 0;
}

int bench_elementwise(const bench_options *o)
{
    enum { BIG = 16 << 20, SMALL = 1 << 20 };
    bench_suite(o, "elementwise",
                "f32, GB/s of the bytes each op must move, and the fraction of "
                "the triad's");
    triad_job t = {0};
    if (!triad_init(&t, BIG, o->threads)) {
        fprintf(stderr, "tg-bench elementwise: out of memory\n");
        return 1;
    }
    bench_stats ts;
    bench_measure(o, triad_run, &t, 1, &ts);
    bench_stats triad = bench_rate(ts, 12.0 * BIG / 1e9);
    bench_row(o, "elementwise", "triad a=b+s*c, 16M", "GB/s", triad, 0, NULL);

    static const struct {
        const char *name;
        tg_tensor (*op)(tg_tensor);
    } ops[] = {{"exp", tg_exp},   {"tanh", tg_tanh}, {"sigmoid", tg_sigmoid},
               {"gelu", tg_gelu}, {"silu", tg_silu}, {"gelu_erf", tg_gelu_erf}};
    static const int64_t sizes[] = {SMALL, BIG};
    int failed = 0;
    for (int s = 0; s < 2; s++) {
        int64_t n = sizes[s];
        tg_ctx *ctx = bench_ctx(o);
        unary_job j = {0};
        if (tg_tape_new(ctx, &j.tp) || tg_param_new(ctx, "x", TG_F32, 1, &n, &j.x)
            || tg_param_new(ctx, "seed", TG_F32, 1, &n, &j.seed)) {
            fprintf(stderr, "tg-bench elementwise: %s\n", tg_ctx_error(ctx));
            tg_tape_free(j.tp);
            tg_ctx_free(ctx);
            failed = 1;
            break;
        }
        tg_param_uniform(j.x, -3, 3, 1);
        tg_param_uniform(j.seed, -1, 1, 2);
        /* At 16M a triad runs beside every op run, and the op's fraction is of that triad's
         * median; the 1M arrays would be evicted by it, so they are set against the triad
         * measured above. */
        j.triad = n == BIG ? &t : NULL;
        for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
            char name[64];
            bench_stats st[3];
            j.op = ops[k].op;
            bench_measure(o, unary_run, &j, j.triad ? 3 : 2, st);
            bench_stats fwd = bench_rate(st[0], 8.0 * (double)n / 1e9);
            bench_stats bwd = bench_rate(st[1], 12.0 * (double)n / 1e9);
            double ref = j.triad ? bench_rate(st[2], 12.0 * BIG / 1e9).median : triad.median;
            bench_extra ef[] = {{"of_triad", fwd.median / ref}, {"triad_GBs", ref}};
            bench_extra eb[] = {{"of_triad", bwd.median / ref}, {"triad_GBs", ref}};
            snprintf(name, sizeof name, "%s forward, %lldM", ops[k].name, (long long)(n >> 20));
            bench_row(o, "elementwise", name, "GB/s", fwd, 2, ef);
            snprintf(name, sizeof name, "%s backward, %lldM", ops[k].name, (long long)(n >> 20));
            bench_row(o, "elementwise", name, "GB/s", bwd, 2, eb);
        }
        failed |= j.status != TG_OK;
        tg_tape_free(j.tp);
        tg_ctx_free(ctx);
    }
    free(t.block);
    return failed;
}
