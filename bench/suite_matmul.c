/* suite_matmul.c — tg_matmul on a tape, f32: forward GFLOP/s (2mnk flops) and backward GFLOP/s
 * (the two GEMMs dA = dC B^T and dB = A^T dC, 4mnk flops), for the MLP's layer shapes at batch
 * 128 and square matrices of 256 to 2048. A and B are parameters (on the tape without a copy);
 * the backward is tg_grad with respect to both, which adds into no parameter gradient. Small
 * products run several times per timed sample, so every sample lasts a few milliseconds. */
#include <stdio.h>

#include "bench.h"

typedef struct matmul_job {
    tg_tape *tp;
    tg_param *a, *b, *seed;
    int inner; /* products per timed sample */
    tg_status status;
    double sink;
} matmul_job;

static void matmul_run(void *user, double *times)
{
    matmul_job *j = user;
    times[0] = times[1] = 0;
    for (int r = 0; r < j->inner; r++) {
        tg_tape_reset(j->tp);
        tg_tensor a = tg_param_tensor(j->tp, j->a), b = tg_param_tensor(j->tp, j->b);
        tg_tensor seed = tg_param_tensor(j->tp, j->seed), in[2] = {a, b}, g[2];
        double t0 = bench_now();
        tg_tensor c = tg_matmul(a, b);
        double t1 = bench_now();
        tg_status st = tg_grad(1, &c, &seed, 2, in, g, 0);
        double t2 = bench_now();
        times[0] += t1 - t0;
        times[1] += t2 - t1;
        if (st != TG_OK && j->status == TG_OK) {
            j->status = st;
            fprintf(stderr, "tg-bench matmul: %s\n", tg_tape_error(j->tp));
        }
        const float *gd = tg_data(g[0]);
        j->sink += gd ? gd[0] : 0;
    }
}

static int matmul_case(const bench_options *o, const char *name, int64_t m, int64_t k, int64_t n)
{
    tg_ctx *ctx = bench_ctx(o);
    matmul_job j = {.inner = 1};
    if (tg_tape_new(ctx, &j.tp) || tg_param_new(ctx, "a", TG_F32, 2, (int64_t[]){m, k}, &j.a)
        || tg_param_new(ctx, "b", TG_F32, 2, (int64_t[]){k, n}, &j.b)
        || tg_param_new(ctx, "seed", TG_F32, 2, (int64_t[]){m, n}, &j.seed)) {
        fprintf(stderr, "tg-bench matmul: %s\n", tg_ctx_error(ctx));
        tg_tape_free(j.tp);
        tg_ctx_free(ctx);
        return 1;
    }
    tg_param_uniform(j.a, -1, 1, 1);
    tg_param_uniform(j.b, -1, 1, 2);
    tg_param_uniform(j.seed, -1, 1, 3);
    /* Size the inner loop from one probe run: about 5 ms per sample. */
    double probe[2];
    matmul_run(&j, probe);
    double once = probe[0] + probe[1];
    if (once < 5e-3)
        j.inner = once > 0 ? (int)(5e-3 / once) + 1 : 1000;
    bench_stats st[2];
    bench_measure(o, matmul_run, &j, 2, st);
    double flops = 2.0 * (double)m * (double)n * (double)k;
    char row[96];
    bench_extra ex[] = {{"m", (double)m}, {"k", (double)k}, {"n", (double)n}};
    snprintf(row, sizeof row, "%s forward", name);
    bench_row(o, "matmul", row, "GFLOP/s", bench_rate(st[0], flops * j.inner / 1e9), 3, ex);
    snprintf(row, sizeof row, "%s backward", name);
    bench_row(o, "matmul", row, "GFLOP/s", bench_rate(st[1], 2 * flops * j.inner / 1e9), 3, ex);
    tg_status status = j.status;
    tg_tape_free(j.tp);
    tg_ctx_free(ctx);
    return status != TG_OK;
}

int bench_matmul(const bench_options *o)
{
    bench_suite(o, "matmul", "f32 [m,k] x [k,n] on a tape; forward 2mnk flops, backward 4mnk");
    int failed = 0;
    failed |= matmul_case(o, "mlp fc1 [128,784]x[784,256]", 128, 784, 256);
    failed |= matmul_case(o, "mlp fc2 [128,256]x[256,128]", 128, 256, 128);
    failed |= matmul_case(o, "mlp fc3 [128,128]x[128,10]", 128, 128, 10);
    static const int64_t squares[] = {256, 512, 1024, 2048};
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "square %lld", (long long)squares[i]);
        failed |= matmul_case(o, name, squares[i], squares[i], squares[i]);
    }
    return failed;
}
