/* hypergradient.c — the derivative of a validation loss with respect to the learning rate,
 * through K steps of SGD with momentum on a small linear regression.
 *
 * Each step is recorded with tg_optim_step_graph, with lr a 0-d tensor that requires a gradient,
 * and the training gradients come from tg_grad with TG_CREATE_GRAPH: the whole unrolled training
 * run is one graph, and one reverse pass from the validation loss gives d(val loss)/d(lr). The
 * program checks it against a central finite difference over lr (exit status 1 if they
 * disagree), then uses it to tune lr by a few steps of gradient descent on the validation loss.
 */
#include <math.h>
#include <stdio.h>

#include <tapegrad.h>

enum { N = 32, D = 3, K = 5 };

typedef struct problem {
    double x_train[N * D], y_train[N], x_val[N * D], y_val[N];
} problem;

/* y = x w_true + noise, on seeded uniform inputs. */
static void make_data(tg_tape *tp, problem *p)
{
    const double w_true[D] = {1.5, -2.0, 0.5};
    for (int set = 0; set < 2; set++) {
        double *x = set ? p->x_val : p->x_train, *y = set ? p->y_val : p->y_train;
        tg_read(tg_uniform(tp, TG_F64, 1, (int64_t[]){N * D}, -1, 1, 11 + (uint64_t)set), TG_F64, x,
                N * D);
        double noise[N];
        tg_read(tg_normal(tp, TG_F64, 1, (int64_t[]){N}, 0, 0.1, 21 + (uint64_t)set), TG_F64, noise,
                N);
        for (int i = 0; i < N; i++) {
            y[i] = noise[i];
            for (int j = 0; j < D; j++)
                y[i] += x[i * D + j] * w_true[j];
        }
    }
    tg_tape_reset(tp);
}

static tg_tensor mse(tg_tape *tp, const double *x, const double *y, tg_tensor w)
{
    tg_tensor xt = tg_tensor_from(tp, TG_F64, 2, (int64_t[]){N, D}, x);
    tg_tensor yt = tg_tensor_from(tp, TG_F64, 2, (int64_t[]){N, 1}, y);
    return tg_mse_loss(tg_matmul(xt, w), yt, TG_REDUCE_MEAN);
}

/* K recorded SGD steps from the parameter's current value with learning rate `lr` (a 0-d
 * tensor), then the validation loss of the result. */
static tg_tensor unrolled(tg_tape *tp, const problem *p, tg_param *w0, tg_optim *opt, tg_tensor lr)
{
    tg_tensor w = tg_param_tensor(tp, w0), state = {0}, g;
    for (int k = 0; k < K; k++) {
        tg_tensor loss = mse(tp, p->x_train, p->y_train, w);
        if (tg_grad(1, &loss, NULL, 1, &w, &g, TG_CREATE_GRAPH)
            || tg_optim_step_graph(opt, lr, 1, &w, &g, &state, &w))
            return tg_error(tp);
    }
    return mse(tp, p->x_val, p->y_val, w);
}

/* The validation loss after K steps at a given lr: plain values, no gradient. */
static double val_loss_at(tg_tape *tp, const problem *p, tg_param *w0, tg_optim *opt, double lr)
{
    tg_tape_reset(tp);
    double v = tg_item(unrolled(tp, p, w0, opt, tg_constant(tp, TG_F64, lr)));
    tg_tape_reset(tp);
    return v;
}

/* d(val loss)/d(lr) by one reverse pass through the unrolled run; the loss into *loss. */
static double hypergradient(tg_tape *tp, const problem *p, tg_param *w0, tg_optim *opt, double lr,
                            double *loss)
{
    tg_tape_reset(tp);
    tg_tensor lr_t = tg_requires_grad(tg_constant(tp, TG_F64, lr)), d;
    tg_tensor val = unrolled(tp, p, w0, opt, lr_t);
    if (tg_grad(1, &val, NULL, 1, &lr_t, &d, 0)) {
        fprintf(stderr, "error: %s\n", tg_tape_error(tp));
        return NAN;
    }
    *loss = tg_item(val);
    double h = tg_item(d);
    tg_tape_reset(tp);
    return h;
}

int main(void)
{
    tg_ctx *ctx;
    tg_tape *tp;
    tg_param *w;
    tg_optim *opt;
    problem p;
    tg_sgd_options so = TG_SGD_DEFAULTS;
    so.momentum = 0.5;
    if (tg_ctx_new(&ctx, NULL) || tg_tape_new(ctx, &tp)
        || tg_param_new(ctx, "w", TG_F64, 2, (int64_t[]){D, 1}, &w)
        || tg_sgd_new(ctx, 1, &w, &so, &opt)) {
        fprintf(stderr, "setup failed\n");
        return 1;
    }
    make_data(tp, &p); /* w starts at zero */

    double lr = 0.1, loss, eps = 1e-6;
    double h = hypergradient(tp, &p, w, opt, lr, &loss);
    double fd =
        (val_loss_at(tp, &p, w, opt, lr + eps) - val_loss_at(tp, &p, w, opt, lr - eps)) / (2 * eps);
    double rel = fabs(h - fd) / fmax(fabs(fd), 1e-12);
    printf("hypergradient through %d SGD steps (momentum %.1f) of a %d-sample linear regression\n",
           K, so.momentum, N);
    printf("lr = %.4f: validation loss %.6f\n", lr, loss);
    printf("  d(val loss)/d(lr), reverse mode:       %+.12f\n", h);
    printf("  d(val loss)/d(lr), central difference: %+.12f  (eps %g)\n", fd, eps);
    printf("  relative difference %.2e\n", rel);
    if (!(rel < 1e-6)) {
        fprintf(stderr, "hypergradient and finite difference disagree\n");
        return 1;
    }

    /* Tuning lr by gradient descent on the validation loss. */
    printf("tuning lr by gradient descent on the validation loss (step 0.02):\n");
    for (int it = 1; it <= 5; it++) {
        lr -= 0.02 * h;
        h = hypergradient(tp, &p, w, opt, lr, &loss);
        printf("  step %d: lr %.4f  validation loss %.6f  d/dlr %+.6f\n", it, lr, loss, h);
    }
    tg_optim_free(opt);
    tg_param_free(w);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return isfinite(loss) ? 0 : 1;
}
