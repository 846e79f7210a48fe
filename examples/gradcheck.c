/* gradcheck.c — checking gradients the way a user does: tg_gradcheck compares the gradients
 * tapegrad computes with central finite differences in f64, element by element, and reports the
 * worst element. Three checks:
 *
 *   1. a function of your own (a small network's loss as a function of its input and weights),
 *      first and second order;
 *   2. a custom op, swish from examples/custom_op.c, in both of its variants: the composite
 *      backward passes at both orders, the kernel backward at first order and is refused at the
 *      second (TG_FIRST_ORDER: it is not differentiable again);
 *   3. the same op with a deliberate mistake in its backward: the check fails and its report
 *      points at the element where the two disagree.
 *
 * Build and run: build/examples/gradcheck (built with examples/custom_op.c). */
#include <math.h>
#include <stdio.h>

#include <tapegrad.h>

#include "custom_op.h"

/* 1. A function of your own: y = mean(softplus(x W + b)) with x [4, 3], W [3, 5], b [5]. The
 *    inputs arrive as f64 leaves on a scratch tape; build the graph and return its output. */
static tg_tensor my_loss(void *user, int n, const tg_tensor *in)
{
    (void)user, (void)n;
    return tg_mean_all(tg_softplus(tg_add(tg_matmul(in[0], in[1]), in[2])));
}

/* Prints one report: what was compared and where the worst element is, as coordinates in its
 * input (result->index is a flat, row-major index into inputs[result->input]). */
static void report(const char *what, tg_status st, const tg_gradcheck_result *r, tg_ctx *ctx,
                   const tg_tensor *inputs)
{
    if (st != TG_OK) {
        printf("%-34s %s: %s\n", what, tg_status_name(st), tg_ctx_error(ctx));
        return;
    }
    if (r->input < 0) {
        printf("%-34s no element checked\n", what);
        return;
    }
    const tg_tensor t = inputs[r->input];
    int64_t coord[TG_MAX_DIMS], rest = r->index;
    for (int d = tg_ndim(t) - 1; d >= 0; d--) {
        coord[d] = rest % tg_dim(t, d);
        rest /= tg_dim(t, d);
    }
    char at[TG_MAX_DIMS * 24] = "";
    for (int d = 0, len = 0; d < tg_ndim(t); d++)
        len +=
            snprintf(at + len, sizeof at - (size_t)len, d ? ",%lld" : "%lld", (long long)coord[d]);
    printf("%-34s %s: %lld elements; worst: input %d at [%s]: analytic %.10f, numeric %.10f, "
           "|difference| / tolerance %.3g\n",
           what, r->passed ? "passed" : "FAILED", (long long)r->checked, r->input, at, r->analytic,
           r->numeric, r->error);
}

/* 2. The custom op: the graph is the op applied to input 0 (with beta 1.5). */
static tg_tensor apply_swish(void *op, int n, const tg_tensor *in)
{
    (void)n;
    return swish(op, in[0], 1.5);
}

/* 3. swish with a wrong backward: it forgets the beta x s (1 - s) term of the derivative. */
typedef struct beta_attr {
    double beta;
} beta_attr;

static tg_status same_shape(tg_check *c)
{
    tg_status st = tg_check_float(c, 0);
    if (st == TG_OK)
        *c->out = *c->in[0];
    return st;
}

static void wrong_forward(const tg_kernel *k)
{
    double beta = ((const beta_attr *)k->attr)->beta;
    const double *x = k->in[0]->data;
    double *y = k->out->data;
    for (int64_t i = 0; i < k->out->numel; i++)
        y[i] = x[i] / (1.0 + exp(-beta * x[i]));
}

static void wrong_backward(const tg_backward_io *io)
{
    double beta = ((const beta_attr *)io->attr)->beta;
    tg_tensor s = tg_sigmoid(tg_mul_scalar(io->inputs[0], beta));
    io->grad_inputs[0] = tg_mul(io->grad_output, s); /* should be s + beta x s (1 - s) */
}

static const tg_op_def wrong_def = {
    .name = "swish_wrong",
    .ninputs = 1,
    .attr_size = sizeof(beta_attr),
    .check = same_shape,
    .forward = wrong_forward,
    .backward = wrong_backward,
};

static tg_tensor apply_wrong(void *op, int n, const tg_tensor *in)
{
    (void)n;
    return tg_op_apply(op, 1, in, &(beta_attr){1.5});
}

int main(void)
{
    tg_ctx *ctx;
    tg_tape *tp;
    swish_ops ops;
    const tg_op *wrong;
    if (tg_ctx_new(&ctx, NULL) || tg_tape_new(ctx, &tp) || swish_register(ctx, &ops)
        || tg_op_register(ctx, &wrong_def, &wrong)) {
        fprintf(stderr, "setup failed: %s\n", tg_ctx_error(ctx));
        return 1;
    }
    /* The point to check at: f64 tensors (the check runs in f64). */
    tg_tensor in[3] = {tg_uniform(tp, TG_F64, 2, (int64_t[]){4, 3}, -1, 1, 1),
                       tg_uniform(tp, TG_F64, 2, (int64_t[]){3, 5}, -1, 1, 2),
                       tg_uniform(tp, TG_F64, 1, (int64_t[]){5}, -1, 1, 3)};
    tg_tensor x = tg_uniform(tp, TG_F64, 2, (int64_t[]){4, 5}, -3, 3, 4);
    if (tg_tape_status(tp)) {
        fprintf(stderr, "error: %s\n", tg_tape_error(tp));
        return 1;
    }
    tg_gradcheck_options first = {0}, second = {.order = 2};
    tg_gradcheck_result r[7];
    tg_status st[7];
    st[0] = tg_gradcheck(ctx, my_loss, NULL, 3, in, &first, &r[0]);
    report("my_loss, first order", st[0], &r[0], ctx, in);
    st[1] = tg_gradcheck(ctx, my_loss, NULL, 3, in, &second, &r[1]);
    report("my_loss, second order", st[1], &r[1], ctx, in);
    st[2] = tg_gradcheck(ctx, apply_swish, (void *)ops.composite, 1, &x, &first, &r[2]);
    report("swish, first order", st[2], &r[2], ctx, &x);
    st[3] = tg_gradcheck(ctx, apply_swish, (void *)ops.composite, 1, &x, &second, &r[3]);
    report("swish, second order", st[3], &r[3], ctx, &x);
    st[4] = tg_gradcheck(ctx, apply_swish, (void *)ops.kernel, 1, &x, &first, &r[4]);
    report("swish_kernel, first order", st[4], &r[4], ctx, &x);
    st[5] = tg_gradcheck(ctx, apply_swish, (void *)ops.kernel, 1, &x, &second, &r[5]);
    report("swish_kernel, second order", st[5], &r[5], ctx, &x);
    st[6] = tg_gradcheck(ctx, apply_wrong, (void *)wrong, 1, &x, &first, &r[6]);
    report("swish_wrong (a bug), first order", st[6], &r[6], ctx, &x);

    /* What a user reads: the right ones pass, the kernel rule is refused at second order, and
     * the bug is caught at a real element of its input. */
    bool ok = true;
    for (int i = 0; i < 5; i++)
        ok &= st[i] == TG_OK && r[i].passed;
    ok &= st[5] == TG_FIRST_ORDER;
    ok &= st[6] == TG_OK && !r[6].passed && r[6].input == 0 && r[6].index >= 0 && r[6].error > 1;
    printf("%s\n", ok ? "every check came out as expected" : "UNEXPECTED RESULT");
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return ok ? 0 : 1;
}
