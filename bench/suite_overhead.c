/* suite_overhead.c — the fixed cost of a tensor op: a chain of 1,000 ops (mul, add, tanh) on
 * tiny f32 tensors, in ns per op, for a no-grad forward, a recording forward, and forward plus
 * backward. */
#include <stdio.h>

#include "bench.h"

typedef struct overhead_job {
    tg_tape *tp;
    int64_t numel;
    int mode; /* 0: no-grad forward, 1: recording forward, 2: forward + backward */
    double sink;
    tg_status status;
} overhead_job;

enum { CHAIN_OPS = 1000 };

/* A chain of CHAIN_OPS ops cycling mul, add, tanh on tensors of `numel` f32 elements. */
static void overhead_run(void *user, double *times)
{
    overhead_job *j = user;
    double t0 = bench_now();
    tg_tape_reset(j->tp);
    tg_tape_set_grad(j->tp, j->mode != 0);
    tg_tensor x = tg_full(j->tp, TG_F32, 1, &j->numel, 0.5);
    tg_tensor c = tg_full(j->tp, TG_F32, 1, &j->numel, 0.999);
    if (j->mode)
        x = tg_requires_grad(x);
    tg_tensor y = x;
    for (int i = 0; i < CHAIN_OPS / 3; i++)
        y = tg_tanh(tg_add(tg_mul(y, c), c));
    y = tg_mul(y, c); /* 1000 ops in all */
    if (j->mode == 2)
        tg_backward_ex(y, tg_full(j->tp, TG_F32, 1, &j->numel, 1.0), 0);
    times[0] = bench_now() - t0;
    if (tg_tape_status(j->tp) != TG_OK && j->status == TG_OK) {
        j->status = tg_tape_status(j->tp);
        fprintf(stderr, "tg-bench overhead: %s\n", tg_tape_error(j->tp));
    }
    j->sink += tg_item(tg_sum_all(y));
}

int bench_overhead(const bench_options *o)
{
    tg_ctx *ctx = bench_ctx(o);
    overhead_job j = {0};
    if (tg_tape_new(ctx, &j.tp) != TG_OK) {
        tg_ctx_free(ctx);
        return 1;
    }
    bench_suite(o, "overhead", "a chain of 1000 ops (mul, add, tanh) on tiny f32 tensors, per op");
    static const char *const modes[] = {"no-grad forward", "recording forward",
                                        "forward + backward"};
    static const int64_t sizes[] = {1, 64};
    for (int s = 0; s < 2; s++) {
        for (int m = 0; m < 3; m++) {
            char name[64];
            j.numel = sizes[s];
            j.mode = m;
            bench_stats t;
            bench_measure(o, overhead_run, &j, 1, &t);
            snprintf(name, sizeof name, "%s, %lld elem", modes[m], (long long)sizes[s]);
            bench_row(o, "overhead", name, "ns/op", bench_per(t, 1e9 / CHAIN_OPS), 0, NULL);
        }
    }
    tg_status st = j.status;
    tg_tape_free(j.tp);
    tg_ctx_free(ctx);
    return st != TG_OK;
}
