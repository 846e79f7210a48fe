/* suite_higher.c — the cost of second order: a Hessian-vector product of the MLP loss beside its
 * gradient. The MLP is tg-train's, 784-256-128-10, on a batch of 128 (f32, cross-entropy), with
 * ReLU and with tanh activations; its six parameters are the inputs of tg_grad and tg_hvp. A run
 * records the forward pass and then takes the gradient (one reverse pass) or the HVP (a recorded
 * reverse pass and a reverse pass through it). The ratio of the medians is the HVP's cost in
 * gradients. */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

enum { BATCH = 128, NLAYERS = 3, NPARAMS = 2 * NLAYERS };
static const int64_t widths[NLAYERS + 1] = {784, 256, 128, 10};

typedef struct higher_job {
    tg_tape *tp;
    tg_param *params[NPARAMS]; /* W1 b1 W2 b2 W3 b3 */
    tg_param *v[NPARAMS];      /* the direction of the HVP, one per parameter */
    float *x;                  /* [BATCH, 784] */
    int64_t labels[BATCH];
    bool tanh_act;
    bool hvp;
    double sink;
    tg_status status;
} higher_job;

static void higher_run(void *user, double *times)
{
    higher_job *j = user;
    double t0 = bench_now();
    tg_tape *tp = j->tp;
    tg_tape_reset(tp);
    tg_tensor p[NPARAMS], out[NPARAMS];
    for (int i = 0; i < NPARAMS; i++)
        p[i] = tg_param_tensor(tp, j->params[i]);
    tg_tensor h = tg_tensor_from(tp, TG_F32, 2, (int64_t[]){BATCH, widths[0]}, j->x);
    for (int l = 0; l < NLAYERS; l++) {
        h = tg_add(tg_matmul(h, p[2 * l]), p[2 * l + 1]);
        if (l + 1 < NLAYERS)
            h = j->tanh_act ? tg_tanh(h) : tg_relu(h);
    }
    tg_tensor labels = tg_tensor_from(tp, TG_I64, 1, (int64_t[]){BATCH}, j->labels);
    tg_tensor loss = tg_cross_entropy(h, labels, TG_REDUCE_MEAN, 0.0);
    if (j->hvp) {
        tg_tensor v[NPARAMS];
        for (int i = 0; i < NPARAMS; i++)
            v[i] = tg_param_tensor(tp, j->v[i]);
        tg_hvp(loss, NPARAMS, p, v, out, 0);
    } else {
        tg_grad(1, &loss, NULL, NPARAMS, p, out, 0);
    }
    times[0] = bench_now() - t0;
    if (tg_tape_status(tp) != TG_OK && j->status == TG_OK) {
        j->status = tg_tape_status(tp);
        fprintf(stderr, "tg-bench higher: %s\n", tg_tape_error(tp));
    }
    j->sink += tg_item(tg_sum_all(out[0]));
}

/* Weights [in, out] Xavier-uniform; biases 0.01 (parameters) or 0.1 (the direction). */
static tg_status make_params(tg_ctx *ctx, tg_param **ps, uint64_t seed, double bias)
{
    for (int l = 0; l < NLAYERS; l++) {
        int64_t ws[2] = {widths[l], widths[l + 1]};
        tg_status st = tg_param_new(ctx, NULL, TG_F32, 2, ws, &ps[2 * l]);
        if (!st)
            st = tg_param_new(ctx, NULL, TG_F32, 1, &ws[1], &ps[2 * l + 1]);
        if (!st)
            st = tg_init_xavier_uniform(ps[2 * l], 1.0, seed + (uint64_t)l);
        if (!st)
            st = tg_param_fill(ps[2 * l + 1], bias);
        if (st)
            return st;
    }
    return TG_OK;
}

int bench_higher(const bench_options *o)
{
    tg_ctx *ctx = bench_ctx(o);
    higher_job j = {0};
    j.x = malloc(sizeof(float) * BATCH * 784);
    uint64_t s = 12345;
    for (int64_t i = 0; j.x && i < BATCH * 784; i++) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        j.x[i] = (float)(s >> 40) / (float)(1u << 24);
    }
    for (int i = 0; i < BATCH; i++)
        j.labels[i] = i % 10;
    if (!j.x || tg_tape_new(ctx, &j.tp) != TG_OK || make_params(ctx, j.params, 1, 0.01) != TG_OK
        || make_params(ctx, j.v, 100, 0.1) != TG_OK) {
        fprintf(stderr, "tg-bench higher: setup failed: %s\n", tg_ctx_error(ctx));
        free(j.x);
        tg_ctx_free(ctx);
        return 1;
    }
    bench_suite(o, "higher",
                "MLP 784-256-128-10 cross-entropy loss, batch 128, f32: gradient and "
                "Hessian-vector product with respect to the parameters");
    for (int a = 0; a < 2; a++) {
        j.tanh_act = a == 1;
        bench_stats t[2];
        for (int m = 0; m < 2; m++) {
            j.hvp = m == 1;
            bench_measure(o, higher_run, &j, 1, &t[m]);
        }
        char name[64];
        snprintf(name, sizeof name, "gradient, %s", a ? "tanh" : "relu");
        bench_row(o, "higher", name, "ms", bench_per(t[0], 1e3), 0, NULL);
        snprintf(name, sizeof name, "hvp, %s", a ? "tanh" : "relu");
        bench_extra x = {"x_gradient", t[1].median / t[0].median};
        bench_row(o, "higher", name, "ms", bench_per(t[1], 1e3), 1, &x);
    }
    tg_status st = j.status;
    free(j.x);
    tg_tape_free(j.tp);
    tg_ctx_free(ctx);
    return st != TG_OK;
}
