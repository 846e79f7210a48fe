/* linear_regression.c — fits y = 3x + 2 (plus noise) with one Linear layer, MSE and plain SGD.
 *
 *   build/examples/linear_regression [--log FILE]    (FILE: a CSV row per step, tg_train_log) */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <tapegrad.h>

int main(int argc, char **argv)
{
    if (argc != 1 && (argc != 3 || strcmp(argv[1], "--log"))) {
        fprintf(stderr, "usage: linear_regression [--log FILE]\n");
        return 2;
    }
    enum { N = 64 };
    float xs[N], ys[N];
    tg_ctx *ctx;
    tg_tape *tp;
    tg_module *model;
    tg_optim *opt;
    if (tg_ctx_new(&ctx, NULL) || tg_tape_new(ctx, &tp))
        return 1;

    /* Data: x in [-1, 1], y = 3x + 2 with a little seeded noise. */
    const float *noise = tg_data(tg_normal(tp, TG_F32, 1, (int64_t[]){N}, 0.0, 0.05, 7));
    if (!noise) { /* an error handle's data is NULL */
        fprintf(stderr, "error: %s\n", tg_tape_error(tp));
        return 1;
    }
    for (int i = 0; i < N; i++) {
        xs[i] = -1.0f + 2.0f * (float)i / (N - 1);
        ys[i] = 3.0f * xs[i] + 2.0f + noise[i];
    }
    tg_sgd_options so = TG_SGD_DEFAULTS;
    so.lr = 0.1;
    if (tg_linear_new(ctx, "line", 1, 1, NULL, &model)
        || tg_sgd_new(ctx, tg_module_param_count(model), tg_module_params(model), &so, &opt)) {
        fprintf(stderr, "setup failed: %s\n", tg_ctx_error(ctx));
        return 1;
    }
    tg_train_log *log = NULL;
    if (argc == 3 && tg_train_log_open(ctx, argv[2], "samples", &log)) {
        fprintf(stderr, "linear_regression: %s\n", tg_ctx_error(ctx));
        return 1;
    }

    double loss = 0;
    for (int step = 1; step <= 200; step++) {
        tg_tape_reset(tp);
        tg_tensor x = tg_tensor_from(tp, TG_F32, 2, (int64_t[]){N, 1}, xs);
        tg_tensor y = tg_tensor_from(tp, TG_F32, 2, (int64_t[]){N, 1}, ys);
        tg_tensor l = tg_mse_loss(tg_forward(model, x), y, TG_REDUCE_MEAN);
        if (tg_backward(l) || tg_optim_step(opt, tp)) {
            fprintf(stderr, "error: %s\n", tg_tape_error(tp));
            return 1;
        }
        tg_optim_zero_grad(opt);
        loss = tg_item(l);
        tg_log_row row = {step, step, loss, NAN,
                          NAN,  NAN,  NAN,  tg_optim_lr(opt)}; /* 1 epoch/step */
        if (log && tg_train_log_write(log, &row)) {
            fprintf(stderr, "linear_regression: %s\n", tg_ctx_error(ctx));
            return 1;
        }
        if (step % 50 == 0)
            printf("step %3d  mse %.5f\n", step, loss);
    }
    tg_param *const *p = tg_module_params(model);
    float w = ((const float *)tg_param_data(p[0]))[0], b = ((const float *)tg_param_data(p[1]))[0];
    printf("learned y = %.3f x + %.3f (true: 3x + 2)\n", w, b);
    if (tg_train_log_close(log)) {
        fprintf(stderr, "linear_regression: %s\n", tg_ctx_error(ctx));
        return 1;
    }
    tg_optim_free(opt);
    tg_module_free(model);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return (w > 2.9f && w < 3.1f && b > 1.9f && b < 2.1f) ? 0 : 1;
}
