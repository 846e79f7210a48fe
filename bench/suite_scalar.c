/* suite_scalar.c — the scalar tape (tg_s_*): record + backward in ns per scalar node, where the
 * nodes are every entry the function puts on the scalar tape (tg_tape_scalar_count: operations
 * and the leaves they read), with the ratio to the same function in plain C doubles. */
#include <math.h>
#include <stdio.h>

#include "bench.h"

typedef struct scalar_job {
    tg_tape *tp;
    int n;        /* problem size */
    double sink;  /* keeps results alive */
    size_t nodes; /* scalar entries recorded per run */
    tg_status status;
} scalar_job;

static void finish(scalar_job *j, tg_status st)
{
    j->nodes = tg_tape_scalar_count(j->tp);
    if (st != TG_OK && j->status == TG_OK) {
        j->status = st;
        fprintf(stderr, "tg-bench scalar: %s\n", tg_tape_error(j->tp));
    }
}

/* A chain y <- y * a + b, n steps (2n entries): record + backward. */
static void chain_run(void *user, double *times)
{
    scalar_job *j = user;
    double t0 = bench_now();
    tg_tape_reset(j->tp);
    tg_scalar a = tg_s_var(j->tp, 0.999), b = tg_s_var(j->tp, 0.001), y = tg_s_var(j->tp, 0.5);
    for (int i = 0; i < j->n; i++)
        y = tg_s_add(tg_s_mul(y, a), b);
    tg_status st = tg_s_backward(y, 0);
    times[0] = bench_now() - t0;
    j->sink += tg_s_grad(a);
    finish(j, st);
}

/* Rosenbrock f(x) = sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2 on n scalars: record + backward.
 * Ten entries per term (the variable, eight operations, the sum). */
static void rosen_run(void *user, double *times)
{
    scalar_job *j = user;
    double t0 = bench_now();
    tg_tape_reset(j->tp);
    tg_scalar prev = tg_s_var(j->tp, 0.0), acc = tg_s_const(j->tp, 0.0);
    for (int i = 1; i < j->n; i++) {
        tg_scalar x = tg_s_var(j->tp, 0.001 * (i % 1000));
        tg_scalar d = tg_s_sub(x, tg_s_mul(prev, prev));
        tg_scalar e = tg_s_addc(tg_s_neg(prev), 1.0);
        acc = tg_s_add(acc, tg_s_add(tg_s_mulc(tg_s_mul(d, d), 100.0), tg_s_mul(e, e)));
        prev = x;
    }
    tg_status st = tg_s_backward(acc, 0);
    times[0] = bench_now() - t0;
    j->sink += tg_s_value(acc);
    finish(j, st);
}

/* The same Rosenbrock in plain C doubles (value only), for the ratio. */
static void rosen_plain(void *user, double *times)
{
    scalar_job *j = user;
    double t0 = bench_now();
    volatile double step = 0.001;
    double prev = 0.0, acc = 0.0;
    for (int i = 1; i < j->n; i++) {
        double x = step * (i % 1000);
        double d = x - prev * prev, e = 1.0 - prev;
        acc += 100.0 * d * d + e * e;
        prev = x;
    }
    times[0] = bench_now() - t0;
    j->sink += acc;
}

/* ---- micrograd's MLP -------------------------------------------------------------------------
 * micrograd's demo network, MLP(2, [16, 16, 1]): each neuron computes b + sum_i w_i x_i (one mul
 * and one add per input, starting from b), ReLU on the hidden layers, linear output. The batch
 * of 32 points goes through it one scalar at a time, then the mean squared error against +-1
 * labels, and one backward. 640 operations per sample, 20,480 for the batch, 96 for the loss,
 * plus the 337 parameters as leaves: 20,913 nodes. compare.py and adolc_scalar.cpp build the same
 * function. */
enum {
    MLP_BATCH = 32,
    MLP_H = 16,
    MLP_PARAMS = 2 * MLP_H + MLP_H + MLP_H * MLP_H + MLP_H + MLP_H + 1
};

typedef struct mlp_data {
    double w[MLP_PARAMS];
    double x[MLP_BATCH][2], y[MLP_BATCH];
} mlp_data;

/* Parameters uniform in [-1, 1) from a fixed LCG; points on two interleaved half-moons. */
static void mlp_init(mlp_data *d)
{
    uint64_t s = 42;
    for (int i = 0; i < MLP_PARAMS; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        d->w[i] = (double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0;
    }
    for (int i = 0; i < MLP_BATCH; i++) {
        double t = 3.14159265358979 * (i / 2) / (MLP_BATCH / 2 - 1);
        bool upper = i % 2 == 0;
        d->x[i][0] = upper ? cos(t) : 1.0 - cos(t);
        d->x[i][1] = upper ? sin(t) : 0.5 - sin(t);
        d->y[i] = upper ? 1.0 : -1.0;
    }
}

typedef struct mlp_job {
    scalar_job base;
    mlp_data d;
} mlp_job;

static void mlp_run(void *user, double *times)
{
    mlp_job *m = user;
    scalar_job *j = &m->base;
    const double *w = m->d.w;
    tg_scalar p[MLP_PARAMS], h1[MLP_H], h2[MLP_H], loss = {0};
    double t0 = bench_now();
    tg_tape_reset(j->tp);
    for (int i = 0; i < MLP_PARAMS; i++)
        p[i] = tg_s_var(j->tp, w[i]);
    const tg_scalar *w1 = p, *b1 = w1 + 2 * MLP_H, *w2 = b1 + MLP_H, *b2 = w2 + MLP_H * MLP_H,
                    *w3 = b2 + MLP_H, *b3 = w3 + MLP_H;
    for (int s = 0; s < MLP_BATCH; s++) {
        for (int o = 0; o < MLP_H; o++) {
            tg_scalar acc = b1[o];
            for (int i = 0; i < 2; i++)
                acc = tg_s_add(acc, tg_s_mulc(w1[o * 2 + i], m->d.x[s][i]));
            h1[o] = tg_s_relu(acc);
        }
        for (int o = 0; o < MLP_H; o++) {
            tg_scalar acc = b2[o];
            for (int i = 0; i < MLP_H; i++)
                acc = tg_s_add(acc, tg_s_mul(w2[o * MLP_H + i], h1[i]));
            h2[o] = tg_s_relu(acc);
        }
        tg_scalar out = b3[0];
        for (int i = 0; i < MLP_H; i++)
            out = tg_s_add(out, tg_s_mul(w3[i], h2[i]));
        tg_scalar e = tg_s_addc(out, -m->d.y[s]), sq = tg_s_mul(e, e);
        loss = s ? tg_s_add(loss, sq) : sq;
    }
    loss = tg_s_mulc(loss, 1.0 / MLP_BATCH);
    tg_status st = tg_s_backward(loss, 0);
    times[0] = bench_now() - t0;
    j->sink += tg_s_grad(p[0]);
    finish(j, st);
}

static double relu(double v) { return v > 0 ? v : 0; }

static void mlp_plain(void *user, double *times)
{
    mlp_job *m = user;
    const double *w1 = m->d.w, *b1 = w1 + 2 * MLP_H, *w2 = b1 + MLP_H, *b2 = w2 + MLP_H * MLP_H,
                 *w3 = b2 + MLP_H, *b3 = w3 + MLP_H;
    double h1[MLP_H], h2[MLP_H], loss = 0;
    double t0 = bench_now();
    for (int s = 0; s < MLP_BATCH; s++) {
        for (int o = 0; o < MLP_H; o++) {
            double acc = b1[o];
            for (int i = 0; i < 2; i++)
                acc += w1[o * 2 + i] * m->d.x[s][i];
            h1[o] = relu(acc);
        }
        for (int o = 0; o < MLP_H; o++) {
            double acc = b2[o];
            for (int i = 0; i < MLP_H; i++)
                acc += w2[o * MLP_H + i] * h1[i];
            h2[o] = relu(acc);
        }
        double out = b3[0];
        for (int i = 0; i < MLP_H; i++)
            out += w3[i] * h2[i];
        loss += (out - m->d.y[s]) * (out - m->d.y[s]);
    }
    times[0] = bench_now() - t0;
    m->base.sink += loss / MLP_BATCH;
}

/* One row: ns per node of `run`, and the ratio to `plain`. */
static void scalar_row(const bench_options *o, const char *name, bench_fn run, bench_fn plain,
                       scalar_job *j, void *user)
{
    bench_stats t, p;
    bench_measure(o, run, user, 1, &t);
    bench_stats per = bench_per(t, 1e9 / (double)j->nodes);
    if (plain) {
        bench_measure(o, plain, user, 1, &p);
        bench_extra ex[] = {{"nodes", (double)j->nodes}, {"x_plain_C", t.median / p.median}};
        bench_row(o, "scalar", name, "ns/node", per, 2, ex);
    } else {
        bench_extra ex[] = {{"nodes", (double)j->nodes}};
        bench_row(o, "scalar", name, "ns/node", per, 1, ex);
    }
}

int bench_scalar(const bench_options *o)
{
    tg_ctx *ctx = bench_ctx(o);
    static mlp_job m; /* the tape and the network's data */
    scalar_job *j = &m.base;
    if (tg_tape_new(ctx, &j->tp) != TG_OK) {
        tg_ctx_free(ctx);
        return 1;
    }
    bench_suite(o, "scalar", "record + backward, ns per scalar node (every entry on the tape)");

    mlp_init(&m.d);
    scalar_row(o, "micrograd MLP 2-16-16-1, batch 32", mlp_run, mlp_plain, j, &m);

    j->n = 500000;
    scalar_row(o, "chain y=y*a+b (1M nodes)", chain_run, NULL, j, j);

    static const int sizes[] = {1000, 100000, 1000000};
    for (int k = 0; k < 3; k++) {
        char name[64];
        j->n = sizes[k];
        snprintf(name, sizeof name, "rosenbrock n=%d", sizes[k]);
        scalar_row(o, name, rosen_run, rosen_plain, j, j);
    }
    if (j->sink == 12345.678)
        printf("\n");
    tg_status st = j->status;
    tg_tape_free(j->tp);
    tg_ctx_free(ctx);
    return st != TG_OK;
}
