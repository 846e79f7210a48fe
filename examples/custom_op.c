/* custom_op.c — defining an op through the public op-definition API, the way the built-ins are
 * defined: swish(x; beta) = x * sigmoid(beta * x), with its backward written two ways.
 *
 *   swish          composite backward (tapegrad ops): differentiable again, so second-order
 *                  gradients work;
 *   swish_kernel   kernel backward (a C loop adding into the gradient): fast, first order only;
 *                  asking for a second derivative through it is a clear error.
 *
 * The forward kernel calls the vector math the built-ins use (tg_vec_map), so it costs no more
 * than the same function composed from built-in ops; `custom_op --bench` measures both.
 * examples/gradcheck.c checks both variants' gradients the way a user checks their own op.
 *
 * Build and run: build/examples/custom_op [--bench]. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <tapegrad.h>

#include "custom_op.h"

/* Attributes: plain data, copied onto the tape with every call. */
typedef struct swish_attr {
    double beta;
} swish_attr;

/* The check: the only step that may fail. Any float shape works; the output has the input's.
 * It asks for scratch to keep s = sigmoid(beta x), which the kernel backward reuses. */
static tg_status swish_check(tg_check *c)
{
    tg_status st = tg_check_float(c, 0);
    if (st)
        return st;
    double beta = ((const swish_attr *)c->attr)->beta;
    if (!isfinite(beta))
        return tg_check_fail(c, TG_RANGE, "beta must be finite, got %g", beta);
    *c->out = *c->in[0];
    c->saved_bytes = (size_t)c->in[0]->numel * tg_dtype_size(c->in[0]->dtype);
    return TG_OK;
}

/* The forward kernel: no failure, no allocation. Three passes of the built-ins' vector kernels
 * (the SIMD sigmoid among them) over cache-sized arrays, with the kernel's threads. */
static void swish_forward(const tg_kernel *k)
{
    double beta = ((const swish_attr *)k->attr)->beta;
    int64_t n = k->out->numel;
    tg_dtype dt = k->out->dtype;
    const void *x = k->in[0]->data;
    void *s = k->saved;
    tg_vec_map(TG_VEC_MUL_SCALAR, k->threads, dt, n, x, NULL, beta, s); /* s = beta x */
    tg_vec_map(TG_VEC_SIGMOID, k->threads, dt, n, s, NULL, 0, s);       /* s = sigmoid(s) */
    tg_vec_map(TG_VEC_MUL, k->threads, dt, n, x, s, 0, k->out->data);   /* y = x s */
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

/* Kernel backward: the same derivative as a loop adding into the input's gradient buffer, from
 * the s = sigmoid(beta x) that the forward kept (plain arithmetic: the compiler vectorises it). */
static void swish_backward_kernel(const tg_kernel *k, const tg_view *grad_output,
                                  tg_view *const *grad_inputs)
{
    double beta = ((const swish_attr *)k->attr)->beta;
    int64_t n = k->out->numel;
    if (!grad_inputs[0])
        return;
    if (k->out->dtype == TG_F32) {
        const float *x = k->in[0]->data, *s = k->saved, *g = grad_output->data, b = (float)beta;
        float *dx = grad_inputs[0]->data;
        for (int64_t i = 0; i < n; i++)
            dx[i] += g[i] * (s[i] + b * x[i] * s[i] * (1.0f - s[i]));
    } else {
        const double *x = k->in[0]->data, *s = k->saved, *g = grad_output->data;
        double *dx = grad_inputs[0]->data;
        for (int64_t i = 0; i < n; i++)
            dx[i] += g[i] * (s[i] + beta * x[i] * s[i] * (1.0 - s[i]));
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
/* ---- --bench: the custom op against the same function composed from built-ins ------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static tg_tensor composed(const tg_op *op, tg_tensor x, double beta)
{
    (void)op;
    return tg_mul(x, tg_sigmoid(tg_mul_scalar(x, beta)));
}

typedef struct variant {
    const char *name;
    tg_tensor (*f)(const tg_op *, tg_tensor, double);
    const tg_op *op;
} variant;

/* Microseconds per step of `reps` steps: forward alone, or forward and backward into the
 * parameter's gradient. */
static double time_steps(tg_tape *tp, tg_param *w, const variant *v, bool backward, int reps)
{
    double t0 = now();
    for (int i = 0; i < reps; i++) {
        tg_tape_reset(tp);
        tg_tensor y = v->f(v->op, tg_param_tensor(tp, w), 1.5);
        if (backward)
            tg_backward(tg_sum_all(y));
    }
    return (now() - t0) / reps * 1e6;
}

static double median9(double *t)
{
    for (int i = 1; i < 9; i++) /* insertion sort */
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double v = t[j];
            t[j] = t[j - 1];
            t[j - 1] = v;
        }
    return t[4];
}

/* The variants take turns within each of 9 rounds, so that a change in the machine's load
 * reaches them alike; each figure is the median of its 9 rounds. */
static int bench(void)
{
    tg_ctx *ctx;
    tg_tape *tp;
    swish_ops ops;
    if (tg_ctx_new(&ctx, NULL) || tg_tape_new(ctx, &tp) || swish_register(ctx, &ops))
        return 1;
    const variant v[3] = {{"built-ins: x * sigmoid(1.5 x), 3 ops", composed, NULL},
                          {"swish (tg_vec_map kernel, composite bwd)", swish, ops.composite},
                          {"swish_kernel (same, kernel bwd)", swish, ops.kernel}};
    printf("swish(x; 1.5) on f32, one thread, median of 9 rounds (microseconds per step)\n"
           "%9s  %-40s %10s %12s\n",
           "elements", "variant", "forward", "fwd + bwd");
    const int64_t sizes[] = {256, 1 << 20};
    for (int s = 0; s < 2; s++) {
        tg_param *w;
        if (tg_param_new(ctx, NULL, TG_F32, 1, &sizes[s], &w) || tg_param_uniform(w, -4, 4, 1))
            return 1;
        int reps = sizes[s] > 10000 ? 10 : 10000;
        double t[3][2][9];
        for (int r = 0; r < 9; r++)
            for (int i = 0; i < 3; i++)
                for (int b = 0; b < 2; b++)
                    t[i][b][r] = time_steps(tp, w, &v[i], b, reps);
        for (int i = 0; i < 3; i++)
            printf("%9lld  %-40s %10.2f %12.2f\n", (long long)sizes[s], v[i].name, median9(t[i][0]),
                   median9(t[i][1]));
        if (tg_tape_status(tp)) {
            fprintf(stderr, "error: %s\n", tg_tape_error(tp));
            return 1;
        }
        tg_tape_reset(tp);
        tg_param_free(w);
    }
    tg_tape_free(tp);
    tg_ctx_free(ctx);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--bench"))
        return bench();
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
    /* The tape is fine, so every handle above is live and tg_data is not NULL. */
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
