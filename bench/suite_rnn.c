/* suite_rnn.c — recurrent layers: a one-layer GRU and LSTM (PyTorch's nn.GRU and nn.LSTM
 * defaults: sequence-first, biases) with input and hidden size 128 over 32 steps of a batch of
 * 32, f32, in microseconds per step: the forward pass alone (gradient recording off) and a
 * forward pass with the backward of sum(output) (gradients of every parameter, none for the
 * input). bench/compare.py runs the same with torch.nn.GRU and torch.nn.LSTM. */
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

enum { STEPS = 32, BATCH = 32, SIZE = 128 };

typedef struct rnn_job {
    tg_tape *tp;
    tg_module *rnn;
    float *x; /* [STEPS, BATCH, SIZE] */
    bool backward;
    double sink;
    tg_status status;
} rnn_job;

static void rnn_run(void *user, double *times)
{
    rnn_job *j = user;
    double t0 = bench_now();
    tg_tape *tp = j->tp;
    tg_tape_reset(tp);
    bool was = tg_tape_set_grad(tp, j->backward);
    tg_tensor x = tg_tensor_from(tp, TG_F32, 3, (int64_t[]){STEPS, BATCH, SIZE}, j->x);
    tg_tensor out = tg_forward(j->rnn, x);
    if (j->backward)
        tg_backward(tg_sum_all(out));
    tg_tape_set_grad(tp, was);
    times[0] = bench_now() - t0;
    if (tg_tape_status(tp) != TG_OK && j->status == TG_OK) {
        j->status = tg_tape_status(tp);
        fprintf(stderr, "tg-bench rnn: %s\n", tg_tape_error(tp));
    }
    j->sink += (double)((const float *)tg_data(out))[0];
}

int bench_rnn(const bench_options *o)
{
    tg_ctx *ctx = bench_ctx(o);
    rnn_job j = {0};
    j.x = malloc(sizeof(float) * STEPS * BATCH * SIZE);
    uint64_t s = 4321;
    for (int64_t i = 0; j.x && i < STEPS * BATCH * SIZE; i++) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        j.x[i] = (float)(s >> 40) / (float)(1u << 24) - 0.5f;
    }
    if (!j.x || tg_tape_new(ctx, &j.tp) != TG_OK) {
        fprintf(stderr, "tg-bench rnn: setup failed: %s\n", tg_ctx_error(ctx));
        free(j.x);
        tg_ctx_free(ctx);
        return 1;
    }
    bench_suite(
        o, "rnn",
        "one-layer GRU and LSTM, input and hidden 128, 32 steps of batch 32, f32, per step");
    static const struct {
        const char *name;
        tg_rnn_mode mode;
    } kinds[] = {{"gru", TG_RNN_GRU}, {"lstm", TG_RNN_LSTM}};
    for (int k = 0; k < 2 && j.status == TG_OK; k++) {
        if (tg_rnn_new(ctx, kinds[k].name, kinds[k].mode, SIZE, SIZE, NULL, &j.rnn) != TG_OK) {
            fprintf(stderr, "tg-bench rnn: %s\n", tg_ctx_error(ctx));
            j.status = TG_INVALID;
            break;
        }
        for (int b = 0; b < 2; b++) {
            j.backward = b == 1;
            bench_stats t;
            bench_measure(o, rnn_run, &j, 1, &t);
            char name[64];
            snprintf(name, sizeof name, "%s %s", kinds[k].name,
                     b ? "forward + backward" : "forward");
            bench_row(o, "rnn", name, "us/step", bench_per(t, 1e6 / STEPS), 0, NULL);
        }
        tg_module_free(j.rnn);
    }
    tg_status st = j.status;
    free(j.x);
    tg_tape_free(j.tp);
    tg_ctx_free(ctx);
    return st != TG_OK;
}
