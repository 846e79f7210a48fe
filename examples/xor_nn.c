/* xor_nn.c — the XOR network of xor.c written with the layer and optimiser API: a Sequential of
 * Linear(2,4), Sigmoid, Linear(4,1), Sigmoid trained with SGD on the MSE until it is below 0.01.
 *
 *   build/examples/xor_nn [--log FILE]    (FILE: a CSV row every 100 epochs, tg_train_log) */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <tapegrad.h>

int main(int argc, char **argv)
{
    if (argc != 1 && (argc != 3 || strcmp(argv[1], "--log"))) {
        fprintf(stderr, "usage: xor_nn [--log FILE]\n");
        return 2;
    }
    const float inputs[4][2] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}};
    const float targets[4][1] = {{0}, {1}, {1}, {0}};
    tg_ctx *ctx;
    tg_tape *tp;
    tg_module *layers[4], *net;
    tg_optim *opt;
    tg_linear_options l1 = {.seed = 1}, l2 = {.seed = 2};
    tg_sgd_options so = TG_SGD_DEFAULTS;
    so.lr = 2.0;
    if (tg_ctx_new(&ctx, NULL) || tg_tape_new(ctx, &tp)
        || tg_linear_new(ctx, "hidden", 2, 4, &l1, &layers[0])
        || tg_activation_new(ctx, TG_ACT_SIGMOID, &layers[1])
        || tg_linear_new(ctx, "out", 4, 1, &l2, &layers[2])
        || tg_activation_new(ctx, TG_ACT_SIGMOID, &layers[3])
        || tg_sequential_new(ctx, "xor", 4, layers, &net)
        || tg_sgd_new(ctx, tg_module_param_count(net), tg_module_params(net), &so, &opt)) {
        fprintf(stderr, "setup failed: %s\n", tg_ctx_error(ctx));
        return 1;
    }
    tg_train_log *log = NULL;
    if (argc == 3 && tg_train_log_open(ctx, argv[2], "samples", &log)) {
        fprintf(stderr, "xor_nn: %s\n", tg_ctx_error(ctx));
        return 1;
    }
    double mse = 1.0;
    int epoch;
    tg_tensor out = {0};
    for (epoch = 1; epoch <= 20000 && mse >= 0.01; epoch++) {
        tg_tape_reset(tp);
        tg_tensor x = tg_tensor_from(tp, TG_F32, 2, (int64_t[]){4, 2}, inputs);
        tg_tensor y = tg_tensor_from(tp, TG_F32, 2, (int64_t[]){4, 1}, targets);
        out = tg_forward(net, x);
        tg_tensor loss = tg_mse_loss(out, y, TG_REDUCE_MEAN);
        if (tg_backward(loss) || tg_optim_step(opt, tp)) {
            fprintf(stderr, "error: %s\n", tg_tape_error(tp));
            return 1;
        }
        tg_optim_zero_grad(opt);
        mse = tg_item(loss);
        /* Every 100 epochs a row: the loss (of this epoch), the lr; no throughput measured. */
        tg_log_row row = {epoch, epoch, mse, NAN, NAN, NAN, NAN, tg_optim_lr(opt)};
        if (log && epoch % 100 == 0 && tg_train_log_write(log, &row)) {
            fprintf(stderr, "xor_nn: %s\n", tg_ctx_error(ctx));
            return 1;
        }
    }
    if (tg_train_log_close(log)) {
        fprintf(stderr, "xor_nn: %s\n", tg_ctx_error(ctx));
        return 1;
    }
    printf("trained in %d epochs, MSE %.5f\n", epoch - 1, mse);
    const float *pred = tg_data(out); /* NULL if `out` were an error handle: check first */
    if (!pred)
        return 1;
    for (int i = 0; i < 4; i++)
        printf("  %g xor %g -> %.3f\n", inputs[i][0], inputs[i][1], pred[i]);
    for (size_t i = 0; i < tg_module_param_count(net); i++)
        printf("  parameter %s\n", tg_param_name(tg_module_params(net)[i]));
    tg_optim_free(opt);
    tg_module_free(net);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return mse < 0.01 ? 0 : 1;
}
