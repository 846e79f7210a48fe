/* neuron.c — one sigmoid neuron, y = sigmoid(w . x + b), loss (y - t)^2: the gradient derived by
 * hand beside the engine's. */
#include <math.h>
#include <stdio.h>

#include <tapegrad.h>

int main(void)
{
    const double x[3] = {0.5, -1.0, 2.0}, w0[3] = {0.2, 0.4, -0.1}, b0 = 0.3, t = 1.0;
    tg_ctx *ctx;
    tg_tape *tp;
    if (tg_ctx_new(&ctx, NULL) || tg_tape_new(ctx, &tp))
        return 1;
    tg_tensor xt = tg_tensor_from(tp, TG_F64, 1, (int64_t[]){3}, x);
    tg_tensor w = tg_requires_grad(tg_tensor_from(tp, TG_F64, 1, (int64_t[]){3}, w0));
    tg_tensor b = tg_requires_grad(tg_constant(tp, TG_F64, b0));
    tg_tensor y = tg_sigmoid(tg_add(tg_sum_all(tg_mul(w, xt)), b));
    tg_tensor loss = tg_square(tg_add_scalar(y, -t));
    if (tg_backward(loss)) {
        fprintf(stderr, "error: %s\n", tg_tape_error(tp));
        return 1;
    }

    /* By hand: z = w.x + b, y = sigmoid(z), L = (y - t)^2;
     * dL/dz = 2 (y - t) y (1 - y), dL/dw_i = dL/dz x_i, dL/db = dL/dz. */
    double z = b0, yv;
    for (int i = 0; i < 3; i++)
        z += w0[i] * x[i];
    yv = 1.0 / (1.0 + exp(-z));
    double dz = 2.0 * (yv - t) * yv * (1.0 - yv), worst = 0;
    const double *gw = tg_data(tg_tensor_grad(w)); /* NULL for an invalid handle */
    if (!gw)
        return 1;
    printf("y = %.6f  loss = %.6f\n", tg_item(y), tg_item(loss));
    printf("          by hand        tapegrad\n");
    for (int i = 0; i < 3; i++) {
        printf("dL/dw%d  %12.9f  %14.9f\n", i, dz * x[i], gw[i]);
        worst = fmax(worst, fabs(dz * x[i] - gw[i]));
    }
    double gb = tg_item(tg_tensor_grad(b));
    printf("dL/db   %12.9f  %14.9f\n", dz, gb);
    worst = fmax(worst, fabs(dz - gb));
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return worst < 1e-15 ? 0 : 1;
}
