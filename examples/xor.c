/* xor.c — the classic XOR network: a 2-4-1 sigmoid MLP trained by gradient descent on the four
 * XOR points until the mean squared error drops below 0.01. */
#include <stdio.h>

#include <tapegrad.h>

/* w <- w - lr * dL/dw for every parameter, written in tapegrad ops (not recorded). */
static void sgd_step(tg_ctx *ctx, tg_tape *tp, double lr)
{
    bool was = tg_tape_set_grad(tp, false);
    for (size_t i = 0; i < tg_param_count(ctx); i++) {
        tg_param *p = tg_param_at(ctx, i);
        tg_tensor w = tg_param_tensor(tp, p), g = tg_param_grad_tensor(tp, p);
        tg_param_assign(p, tg_sub(w, tg_mul_scalar(g, lr)));
    }
    tg_tape_set_grad(tp, was);
    tg_zero_grad(ctx);
}

int main(void)
{
    const float inputs[4][2] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}};
    const float targets[4][1] = {{0}, {1}, {1}, {0}};
    tg_ctx *ctx;
    tg_tape *tp;
    tg_param *w1, *b1, *w2, *b2;
    if (tg_ctx_new(&ctx, NULL) || tg_tape_new(ctx, &tp)
        || tg_param_new(ctx, "w1", TG_F32, 2, (int64_t[]){2, 4}, &w1)
        || tg_param_new(ctx, "b1", TG_F32, 1, (int64_t[]){4}, &b1)
        || tg_param_new(ctx, "w2", TG_F32, 2, (int64_t[]){4, 1}, &w2)
        || tg_param_new(ctx, "b2", TG_F32, 1, (int64_t[]){1}, &b2)) {
        fprintf(stderr, "setup failed\n");
        return 1;
    }
    tg_param_uniform(w1, -1, 1, 1);
    tg_param_uniform(w2, -1, 1, 2);

    double mse = 1.0;
    int epoch;
    tg_tensor out = {0};
    for (epoch = 1; epoch <= 20000 && mse >= 0.01; epoch++) {
        tg_tape_reset(tp);
        tg_tensor x = tg_tensor_from(tp, TG_F32, 2, (int64_t[]){4, 2}, inputs);
        tg_tensor y = tg_tensor_from(tp, TG_F32, 2, (int64_t[]){4, 1}, targets);
        tg_tensor h =
            tg_sigmoid(tg_add(tg_matmul(x, tg_param_tensor(tp, w1)), tg_param_tensor(tp, b1)));
        out = tg_sigmoid(tg_add(tg_matmul(h, tg_param_tensor(tp, w2)), tg_param_tensor(tp, b2)));
        tg_tensor loss = tg_mean_all(tg_square(tg_sub(out, y)));
        if (tg_backward(loss) != TG_OK) {
            fprintf(stderr, "error: %s\n", tg_tape_error(tp));
            return 1;
        }
        mse = tg_item(loss);
        sgd_step(ctx, tp, 2.0);
    }
    printf("trained in %d epochs, MSE %.5f\n", epoch - 1, mse);
    const float *pred = tg_data(out); /* NULL if `out` were an error handle: check first */
    if (!pred)
        return 1;
    for (int i = 0; i < 4; i++)
        printf("  %g xor %g -> %.3f\n", inputs[i][0], inputs[i][1], pred[i]);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return mse < 0.01 ? 0 : 1;
}
