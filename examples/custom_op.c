/* custom_op.c — defining an op through the public op-definition API, the way the built-ins are
 * defined: swish(x; beta) = x * sigmoid(beta * x), with its backward written two ways.
 *
 *   swish          composite backward (tapegrad ops): differentiable again, so second-order
 *                  gradients work;
 *   swish_kernel   kernel backward (a C loop adding into the gradient): fast, first order only;
 *                  asking for a second derivative through it is a clear error.
 *
 * Build and run: examples/custom_op (built by meson). tests/test_custom_op.c gradchecks both. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <tapegrad.h>

#include "custom_op.h"

/* Attributes: plain data, copied onto the tape with every call. */
typedef struct swish_attr {
    double beta;
} swish_attr;

/* The check: the only step that may fail. Any float shape works; the output has the input's. */
static tg_status swish_check(tg_check *c)
{
    tg_status st = tg_check_float(c, 0);
    if (st)
        return st;
    double beta = ((const swish_attr *)c->attr)->beta;
    if (!isfinite(beta))
        return tg_check_fail(c, TG_RANGE, "beta must be finite, got %g", beta);
    *c->out = *c->in[0];
    return TG_OK;
}

/* The forward kernel: no failure, no allocation. */
static void swish_forward(const tg_kernel *k)
{
    double beta = ((const swish_attr *)k->attr)->beta;
    int64_t n = k->out->numel;
    if (k->out->dtype == TG_F32) {
        const float *x = k->in[0]->data;
        float *y = k->out->data;
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] / (1.0f + expf(-(float)beta * x[i]));
    } else {
        const double *x = k->in[0]->data;
        double *y = k->out->data;
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] / (1.0 + exp(-beta * x[i]));
    }
}

/* Composite backward: with s = sigmoid(beta x),  dx += g * (s + beta * x * s * (1 - s)).
 * Written with tapegrad ops, so under TG_CREATE_GRAPH it is recorded and differentiable. */
static void swish_backward(const tg_backward_io *io)
{
    double beta = ((const swish_attr *)io->attr)->beta;
    tg_tensor x = io->inputs[0], g = io->grad_output;
    tg_tensor s = tg_sigmoid(tg_mul_scalar(x, beta));
    tg_tensor one_minus_s = tg_add_scalar(tg_neg(s), 1.0);
    tg_tensor ds = tg_add(s, tg_mul(tg_mul_scalar(x, beta), tg_mul(s, one_minus_s)));
    io->grad_inputs[0] = tg_mul(g, ds);
}

/* Kernel backward: the same derivative as a loop adding into the input's gradient buffer. */
static void swish_backward_kernel(const tg_kernel *k, const tg_view *grad_output,
                                  tg_view *const *grad_inputs)
{
    double beta = ((const swish_attr *)k->attr)->beta;
    int64_t n = k->out->numel;
    if (!grad_inputs[0])
        return;
    if (k->out->dtype == TG_F32) {
        const float *x = k->in[0]->data, *g = grad_output->data;
        float *dx = grad_inputs[0]->data;
        for (int64_t i = 0; i < n; i++) {
            float s = 1.0f / (1.0f + expf(-(float)beta * x[i]));
            dx[i] += g[i] * (s + (float)beta * x[i] * s * (1.0f - s));
        }
    } else {
        const double *x = k->in[0]->data, *g = grad_output->data;
        double *dx = grad_inputs[0]->data;
        for (int64_t i = 0; i < n; i++) {
            double s = 1.0 / (1.0 + exp(-beta * x[i]));
            dx[i] += g[i] * (s + beta * x[i] * s * (1.0 - s));
        }
    }
}

/* Example inputs for the registry-wide gradient check. */
static int swish_example(tg_tape *tp, int index, tg_tensor *inputs, void *attr)
{
    static const double betas[] = {1.0, 1.702, -0.5};
    if (index >= 3)
        return 0;
    ((swish_attr *)attr)->beta = betas[index];
    inputs[0] = tg_uniform(tp, TG_F64, 2, (int64_t[]){3, 4}, -3, 3, 100 + (uint64_t)index);
    return 1;
}

static const tg_op_def swish_def = {
    .name = "swish",
    .ninputs = 1,
    .attr_size = sizeof(swish_attr),
    .check = swish_check,
    .forward = swish_forward,
    .backward = swish_backward,
    .example = swish_example,
};

static const tg_op_def swish_kernel_def = {
    .name = "swish_kernel",
    .ninputs = 1,
    .attr_size = sizeof(swish_attr),
    .check = swish_check,
    .forward = swish_forward,
    .backward_kernel = swish_backward_kernel,
    .example = swish_example,
};

tg_status swish_register(tg_ctx *ctx, swish_ops *ops)
{
    tg_status st = tg_op_register(ctx, &swish_def, &ops->composite);
    if (st == TG_OK)
        st = tg_op_register(ctx, &swish_kernel_def, &ops->kernel);
    return st;
}

tg_tensor swish(const tg_op *op, tg_tensor x, double beta)
{
    swish_attr attr = {beta};
    return tg_op_apply(op, 1, &x, &attr);
}

#ifndef CUSTOM_OP_NO_MAIN
int main(void)
{
    tg_ctx *ctx;
    tg_tape *tp;
    swish_ops ops;
    if (tg_ctx_new(&ctx, NULL) || tg_tape_new(ctx, &tp) || swish_register(ctx, &ops)) {
        fprintf(stderr, "setup failed: %s\n", tg_ctx_error(ctx));
        return 1;
    }
    const double xs[] = {-2.0, -0.5, 0.0, 0.5, 2.0};
    tg_tensor x = tg_tensor_from(tp, TG_F64, 1, (int64_t[]){5}, xs);
    tg_tensor y1 = swish(ops.composite, x, 1.0), y2 = swish(ops.kernel, x, 1.0);

    /* First derivatives both ways; second derivative through the composite rule. */
    tg_tensor d1, d2, dd;
    tg_tensor s1 = tg_sum_all(y1), s2 = tg_sum_all(y2);
    tg_grad(1, &s1, NULL, 1, &x, &d1, TG_CREATE_GRAPH);
    tg_grad(1, &s2, NULL, 1, &x, &d2, TG_RETAIN_GRAPH); /* s2 is differentiated again below */
    tg_tensor sd = tg_sum_all(d1);
    tg_grad(1, &sd, NULL, 1, &x, &dd, 0);
    if (tg_tape_status(tp)) {
        fprintf(stderr, "error: %s\n", tg_tape_error(tp));
        return 1;
    }
    const double *v = tg_data(y1), *g1 = tg_data(d1), *g2 = tg_data(d2), *h = tg_data(dd);
    printf("     x    swish(x)   d/dx (composite)   d/dx (kernel)   d2/dx2\n");
    for (int i = 0; i < 5; i++)
        printf("%6.2f  %10.6f  %17.9f  %14.9f  %9.6f\n", xs[i], v[i], g1[i], g2[i], h[i]);

    /* A second derivative through the kernel rule is refused, not silently zero. */
    tg_tensor d3, bad;
    tg_grad(1, &s2, NULL, 1, &x, &d3, TG_CREATE_GRAPH);
    tg_tensor sd3 = tg_sum_all(d3);
    tg_status st = tg_grad(1, &sd3, NULL, 1, &x, &bad, 0);
    printf("second order through swish_kernel: %s\n  %s\n", tg_status_name(st), tg_tape_error(tp));
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return st == TG_FIRST_ORDER ? 0 : 1;
}
#endif
