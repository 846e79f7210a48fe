/* tg_bench.c — tg-bench: gradient-throughput benchmarks, reported as medians over repeats after a
 * warm-up, with the machine and settings they ran on. Suites: scalar, overhead. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tapegrad.h>

typedef struct options {
    int repeats;
    int warmup;
    bool json;
} options;

typedef struct stats {
    double median, min, max;
} stats;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static stats summarise(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    stats s = {n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]), t[0], t[n - 1]};
    return s;
}

/* Runs fn(user) warmup + repeats times and summarises the seconds each took. */
static stats measure(const options *o, double (*fn)(void *), void *user)
{
    double t[256];
    int n = o->repeats < 256 ? o->repeats : 256;
    for (int i = 0; i < o->warmup; i++)
        fn(user);
    for (int i = 0; i < n; i++)
        t[i] = fn(user);
    return summarise(t, n);
}

static bool first_row = true;

static void report(const options *o, const char *suite, const char *name, const char *unit, stats s,
                   double extra, const char *extra_name)
{
    if (o->json) {
        printf("%s{\"suite\":\"%s\",\"name\":\"%s\",\"unit\":\"%s\",\"median\":%.6g,"
               "\"min\":%.6g,\"max\":%.6g",
               first_row ? "" : ",\n", suite, name, unit, s.median, s.min, s.max);
        if (extra_name)
            printf(",\"%s\":%.6g", extra_name, extra);
        printf("}");
        first_row = false;
    } else {
        printf("  %-34s %10.3f %-8s (min %.3f, max %.3f)", name, s.median, unit, s.min, s.max);
        if (extra_name)
            printf("  %s %.2f", extra_name, extra);
        printf("\n");
    }
}

/* ---- scalar suite ------------------------------------------------------------------------- */

typedef struct scalar_job {
    tg_tape *tp;
    int n;        /* problem size */
    double sink;  /* keeps results alive */
    size_t nodes; /* scalar entries recorded per run */
} scalar_job;

/* A chain y <- y * a + b, n steps (2n entries): record + backward. */
static double chain_run(void *user)
{
    scalar_job *j = user;
    double t0 = now();
    tg_tape_reset(j->tp);
    tg_scalar a = tg_s_var(j->tp, 0.999), b = tg_s_var(j->tp, 0.001), y = tg_s_var(j->tp, 0.5);
    for (int i = 0; i < j->n; i++)
        y = tg_s_add(tg_s_mul(y, a), b);
    tg_s_backward(y, 0);
    double t = now() - t0;
    j->sink += tg_s_grad(a);
    j->nodes = tg_tape_scalar_count(j->tp);
    return t;
}

/* Rosenbrock f(x) = sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2 on n scalars: record + backward.
 */
static double rosen_run(void *user)
{
    scalar_job *j = user;
    double t0 = now();
    tg_tape_reset(j->tp);
    tg_scalar prev = tg_s_var(j->tp, 0.0), acc = tg_s_const(j->tp, 0.0);
    for (int i = 1; i < j->n; i++) {
        tg_scalar x = tg_s_var(j->tp, 0.001 * (i % 1000));
        tg_scalar d = tg_s_sub(x, tg_s_mul(prev, prev));
        tg_scalar e = tg_s_addc(tg_s_neg(prev), 1.0);
        acc = tg_s_add(acc, tg_s_add(tg_s_mulc(tg_s_mul(d, d), 100.0), tg_s_mul(e, e)));
        prev = x;
    }
    tg_s_backward(acc, 0);
    double t = now() - t0;
    j->sink += tg_s_value(acc);
    j->nodes = tg_tape_scalar_count(j->tp);
    return t;
}

/* The same Rosenbrock in plain C doubles (value only), for the ratio. */
static double rosen_plain(void *user)
{
    scalar_job *j = user;
    double t0 = now();
    volatile double seed = 0.001;
    double prev = 0.0, acc = 0.0;
    for (int i = 1; i < j->n; i++) {
        double x = seed * (i % 1000);
        double d = x - prev * prev, e = 1.0 - prev;
        acc += 100.0 * d * d + e * e;
        prev = x;
    }
    double t = now() - t0;
    j->sink += acc;
    return t;
}

static void suite_scalar(const options *o, tg_ctx *ctx)
{
    scalar_job j = {0};
    tg_tape_new(ctx, &j.tp);
    if (!o->json)
        printf("scalar: record + backward per scalar entry\n");
    j.n = 500000;
    stats s = measure(o, chain_run, &j);
    double per = 1e9 / (double)j.nodes;
    stats ns = {s.median * per, s.min * per, s.max * per};
    report(o, "scalar", "chain y=y*a+b (1M entries)", "ns/node", ns, 0, NULL);

    static const int sizes[] = {1000, 100000, 1000000};
    for (int k = 0; k < 3; k++) {
        char name[64];
        j.n = sizes[k];
        s = measure(o, rosen_run, &j);
        per = 1e9 / (double)j.nodes;
        stats plain = measure(o, rosen_plain, &j);
        stats r = {s.median * per, s.min * per, s.max * per};
        snprintf(name, sizeof name, "rosenbrock n=%d", sizes[k]);
        report(o, "scalar", name, "ns/node", r, s.median / plain.median, "x_plain_C");
    }
    if (j.sink == 12345.678)
        printf("\n");
    tg_tape_free(j.tp);
}

/* ---- overhead suite ----------------------------------------------------------------------- */

typedef struct overhead_job {
    tg_tape *tp;
    int64_t numel;
    int mode; /* 0: no-grad forward, 1: recording forward, 2: forward + backward */
    double sink;
} overhead_job;

enum { CHAIN_OPS = 1000 };

/* A chain of CHAIN_OPS ops cycling mul, add, tanh on tensors of `numel` f32 elements. */
static double overhead_run(void *user)
{
    overhead_job *j = user;
    double t0 = now();
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
    double t = now() - t0;
    j->sink += tg_item(tg_sum_all(y));
    return t;
}

static void suite_overhead(const options *o, tg_ctx *ctx)
{
    overhead_job j = {0};
    tg_tape_new(ctx, &j.tp);
    if (!o->json)
        printf("overhead: a chain of %d ops (mul, add, tanh), per op\n", CHAIN_OPS);
    static const char *const modes[] = {"no-grad forward", "recording forward",
                                        "forward + backward"};
    static const int64_t sizes[] = {1, 64};
    for (int s = 0; s < 2; s++) {
        for (int m = 0; m < 3; m++) {
            char name[64];
            j.numel = sizes[s];
            j.mode = m;
            stats t = measure(o, overhead_run, &j);
            stats per = {t.median * 1e9 / CHAIN_OPS, t.min * 1e9 / CHAIN_OPS,
                         t.max * 1e9 / CHAIN_OPS};
            snprintf(name, sizeof name, "%s, %lld elem", modes[m], (long long)sizes[s]);
            report(o, "overhead", name, "ns/op", per, 0, NULL);
        }
    }
    tg_tape_free(j.tp);
}

int main(int argc, char **argv)
{
    options o = {15, 3, false};
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            o.json = true;
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc)
            o.repeats = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: tg-bench [--json] [--repeats N] [suite]\nsuites: scalar overhead\n");
            return 0;
        } else
            only = argv[i];
    }
    if (o.repeats < 1)
        o.repeats = 1;
    tg_ctx *ctx;
    if (tg_ctx_new(&ctx, NULL) != TG_OK)
        return 1;
    if (o.json)
        printf("[\n");
    else
        printf("tg-bench: %d repeats after %d warm-up runs, medians\n", o.repeats, o.warmup);
    if (!only || !strcmp(only, "scalar"))
        suite_scalar(&o, ctx);
    if (!only || !strcmp(only, "overhead"))
        suite_overhead(&o, ctx);
    if (o.json)
        printf("\n]\n");
    tg_ctx_free(ctx);
    return 0;
}
