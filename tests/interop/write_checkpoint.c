/* write_checkpoint.c — the tapegrad side of tests/interop/safetensors_torch.py (run by hand, not
 * part of the test suite).
 *
 *   write_checkpoint write PATH   a [3 -> 4 -> 2] model ("0.weight" [4,3], "0.bias" [4],
 *                                 "2.weight" [2,4], "2.bias" [2], f32, the names of a PyTorch
 *                                 nn.Sequential(Linear(3, 4), ReLU(), Linear(4, 2))) with
 *                                 initial values init(k, j), two Adam steps (lr 0.1) on the
 *                                 gradients p * 0.5 + grad_offset(j), saved with the optimiser.
 *   write_checkpoint read PATH    loads those four parameters from PATH (a file written by
 *                                 PyTorch) and prints "name v0 v1 ..." per parameter (%.9g, exact
 *                                 for f32); on failure prints the status and message, exits 1.
 *
 * The formulas are mirrored in the Python script; all values are exact in f32.
 */
#include <stdio.h>
#include <string.h>

#include <tapegrad.h>

static const char *const names[4] = {"0.weight", "0.bias", "2.weight", "2.bias"};
static const int64_t shapes[4][2] = {{4, 3}, {4, 0}, {2, 4}, {2, 0}};
static const int ndims[4] = {2, 1, 2, 1};

/* Initial value of element j of parameter k: a multiple of 1/16 in [-0.5, 0.5]. */
static float init(int k, int64_t j) { return (float)((j * 7 + k * 13) % 17 - 8) / 16.0f; }
static float grad_offset(int64_t j) { return 0.01f * (float)(j % 3); }

static int fail(tg_ctx *ctx, const char *what, tg_status st)
{
    fprintf(stderr, "%s: %s: %s\n", what, tg_status_name(st), tg_ctx_error(ctx));
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "write") != 0 && strcmp(argv[1], "read") != 0)) {
        fprintf(stderr, "usage: %s write|read PATH\n", argv[0]);
        return 2;
    }
    tg_ctx *ctx;
    tg_tape *tp;
    tg_param *ps[4];
    if (tg_ctx_new(&ctx, NULL) != TG_OK || tg_tape_new(ctx, &tp) != TG_OK)
        return 1;
    for (int k = 0; k < 4; k++) {
        int64_t shape[2] = {shapes[k][0], shapes[k][1]};
        tg_status st = tg_param_new(ctx, names[k], TG_F32, ndims[k], shape, &ps[k]);
        if (st != TG_OK)
            return fail(ctx, "tg_param_new", st);
    }
    int rc = 0;
    if (strcmp(argv[1], "write") == 0) {
        for (int k = 0; k < 4; k++) {
            float v[12];
            for (int64_t j = 0; j < tg_param_numel(ps[k]); j++)
                v[j] = init(k, j);
            tg_param_set(ps[k], v);
        }
        tg_optim *opt;
        tg_adam_options ao = TG_ADAM_DEFAULTS;
        ao.lr = 0.1;
        tg_status st = tg_adam_new(ctx, 4, ps, &ao, &opt);
        if (st != TG_OK)
            return fail(ctx, "tg_adam_new", st);
        for (int step = 0; step < 2 && rc == 0; step++) {
            for (int k = 0; k < 4; k++) {
                const float *p = tg_param_data(ps[k]);
                float *g = tg_param_grad(ps[k]);
                for (int64_t j = 0; j < tg_param_numel(ps[k]); j++)
                    g[j] = p[j] * 0.5f + grad_offset(j);
            }
            st = tg_optim_step(opt, tp);
            if (st != TG_OK) {
                fprintf(stderr, "tg_optim_step: %s\n", tg_tape_error(tp));
                rc = 1;
            }
            tg_tape_reset(tp);
        }
        if (rc == 0 && (st = tg_checkpoint_save(ctx, argv[2], 4, ps, opt)) != TG_OK)
            rc = fail(ctx, "tg_checkpoint_save", st);
        tg_optim_free(opt);
    } else {
        tg_status st = tg_checkpoint_load(ctx, argv[2], 4, ps, NULL);
        if (st != TG_OK) {
            rc = fail(ctx, "tg_checkpoint_load", st);
        } else {
            for (int k = 0; k < 4; k++) {
                const float *p = tg_param_data(ps[k]);
                printf("%s", names[k]);
                for (int64_t j = 0; j < tg_param_numel(ps[k]); j++)
                    printf(" %.9g", (double)p[j]);
                printf("\n");
            }
        }
    }
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return rc;
}
