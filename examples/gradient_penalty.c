/* gradient_penalty.c — training with a penalty on the input gradient (as in WGAN-GP or double
 * backpropagation): a 2-16-1 tanh MLP f fits a smooth target while the penalty
 *     P = mean over the batch of |df/dx|^2
 * keeps it flat. df/dx comes from tg_grad with TG_CREATE_GRAPH, so P is an ordinary tensor on
 * the tape and tg_backward(loss) differentiates through the gradient itself (second order, into
 * the weights). The network starts steep (large weights). It is trained twice from the same
 * start, without and with the penalty, printing the data loss and the penalty; the exit status
 * is 1 unless the penalised run lowered the penalty, and below the unpenalised run's. */
#include <math.h>
#include <stdio.h>

#include <tapegrad.h>

enum { B = 64, STEPS = 300 };

/* The input gradient of f at every point of the batch: since f's rows are independent, the
 * gradient of sum(f) with respect to x is df/dx row by row. Recorded, so differentiable. */
static tg_tensor input_gradient(tg_tensor f, tg_tensor x)
{
    tg_tensor total = tg_sum_all(f), gx;
    if (tg_grad(1, &total, NULL, 1, &x, &gx, TG_CREATE_GRAPH))
        return tg_error(tg_tensor_tape(x));
    return gx;
}

/* Trains from a fixed start with loss = mse + lambda * P; returns P before and after. */
static int train(tg_ctx *ctx, tg_tape *tp, double lambda, const float (*xs)[2],
                 const float (*ys)[1], double *before, double *after)
{
    tg_module *layers[3], *net;
    tg_optim *opt;
    tg_linear_options l1 = {.seed = 1}, l2 = {.seed = 2};
    tg_adam_options ao = TG_ADAM_DEFAULTS;
    ao.lr = 0.01;
    if (tg_linear_new(ctx, "hidden", 2, 16, &l1, &layers[0])
        || tg_activation_new(ctx, TG_ACT_TANH, &layers[1])
        || tg_linear_new(ctx, "out", 16, 1, &l2, &layers[2])
        || tg_sequential_new(ctx, "f", 3, layers, &net)
        || tg_adam_new(ctx, tg_module_param_count(net), tg_module_params(net), &ao, &opt)) {
        fprintf(stderr, "setup failed: %s\n", tg_ctx_error(ctx));
        return 1;
    }
    /* A steep start: the hidden weights scaled up to uniform(-3, 3). */
    tg_param_uniform(tg_module_params(net)[0], -3, 3, 7);
    printf("lambda = %g (Adam lr %.2g, batch %d):\n", lambda, ao.lr, B);
    for (int step = 0; step <= STEPS; step++) {
        tg_tape_reset(tp);
        tg_tensor x = tg_tensor_from(tp, TG_F32, 2, (int64_t[]){B, 2}, xs);
        tg_tensor y = tg_tensor_from(tp, TG_F32, 2, (int64_t[]){B, 1}, ys);
        tg_tensor f = tg_forward(net, x);
        tg_tensor gx = input_gradient(f, x); /* [B, 2] */
        tg_tensor pen = tg_mul_scalar(tg_sum_all(tg_square(gx)), 1.0 / B);
        tg_tensor mse = tg_mse_loss(f, y, TG_REDUCE_MEAN);
        tg_tensor loss = tg_add(mse, tg_mul_scalar(pen, lambda));
        *after = tg_item(pen);
        if (step == 0)
            *before = *after;
        if (step % 100 == 0)
            printf("  step %3d  mse %.5f  penalty %.5f\n", step, tg_item(mse), *after);
        if (step == STEPS)
            break;
        tg_optim_zero_grad(opt);
        if (tg_backward(loss) || tg_optim_step(opt, tp)) {
            fprintf(stderr, "error: %s\n", tg_tape_error(tp));
            return 1;
        }
    }
    tg_optim_free(opt);
    tg_module_free(net);
    return 0;
}

int main(void)
{
    tg_ctx *ctx;
    tg_tape *tp;
    if (tg_ctx_new(&ctx, NULL) || tg_tape_new(ctx, &tp))
        return 1;
    /* Data: points in [-2, 2]^2, target sin(x0) cos(x1) / 2. */
    float xs[B][2], ys[B][1];
    tg_read(tg_uniform(tp, TG_F32, 2, (int64_t[]){B, 2}, -2, 2, 3), TG_F32, xs, B * 2);
    for (int i = 0; i < B; i++)
        ys[i][0] = 0.5f * sinf(xs[i][0]) * cosf(xs[i][1]);

    printf("2-16-1 tanh MLP, loss = mse + lambda * mean |df/dx|^2, %d Adam steps\n", STEPS);
    double p0, plain, before, after;
    if (train(ctx, tp, 0.0, xs, ys, &p0, &plain) || train(ctx, tp, 0.1, xs, ys, &before, &after))
        return 1;
    printf("penalty: %.5f at the start; %.5f after training without it, %.5f with it\n", before,
           plain, after);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return after < before && after < plain ? 0 : 1;
}
