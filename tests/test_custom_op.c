/* test_custom_op.c — the custom-op API proven on examples/custom_op.c's swish: both backward
 * variants pass gradcheck; the composite one gives exact second derivatives; the kernel one
 * refuses a second derivative with a clear error; bad attributes are a clear error. */
#include "common.h"

#include "../examples/custom_op.h"

static tg_tensor apply_swish(void *user, int n, const tg_tensor *in)
{
    (void)n;
    return swish(user, in[0], 1.5);
}

static void both_variants_pass_gradcheck(void **state)
{
    fixture *f = *state;
    swish_ops ops, again;
    assert_status(swish_register(f->ctx, &ops), TG_OK);
    assert_status(swish_register(f->ctx, &again), TG_EXISTS); /* names are unique */
    assert_null(again.composite);                             /* out is cleared on failure */
    tg_tensor x = tg_uniform(f->tp, TG_F64, 2, (int64_t[]){4, 5}, -3, 3, 9);
    const tg_op *variants[2] = {ops.composite, ops.kernel};
    for (int v = 0; v < 2; v++) {
        tg_gradcheck_result r;
        assert_status(tg_gradcheck(f->ctx, apply_swish, (void *)variants[v], 1, &x, NULL, &r),
                      TG_OK);
        if (!r.passed)
            fail_msg("variant %d: element %lld analytic %.10g numeric %.10g", v, (long long)r.index,
                     r.analytic, r.numeric);
        assert_int_equal(r.checked, 20);
    }
    /* Second order: the composite rule passes; the kernel rule is refused, never a number. */
    tg_gradcheck_options o2 = {.order = 2};
    tg_gradcheck_result r;
    assert_status(tg_gradcheck(f->ctx, apply_swish, (void *)ops.composite, 1, &x, &o2, &r), TG_OK);
    if (!r.passed)
        fail_msg("second order: element %lld analytic %.10g numeric %.10g", (long long)r.index,
                 r.analytic, r.numeric);
    assert_int_equal(r.checked, 20);
    assert_status(tg_gradcheck(f->ctx, apply_swish, (void *)ops.kernel, 1, &x, &o2, &r),
                  TG_FIRST_ORDER);
    assert_contains(tg_ctx_error(f->ctx), "swish_kernel");
    o2.order = 3;
    assert_status(tg_gradcheck(f->ctx, apply_swish, (void *)ops.composite, 1, &x, &o2, &r),
                  TG_INVALID);
    /* The descriptors' own example cases pass too (as the registry-wide check would run). */
    for (int v = 0; v < 2; v++) {
        const tg_op_def *d = tg_op_def_of(variants[v]);
        for (int c = 0;; c++) {
            tg_tensor in[8];
            double attr[4] = {0};
            tg_tape_reset(f->tp);
            if (!d->example(f->tp, c, in, attr))
                break;
            tg_tensor y = tg_op_apply(variants[v], 1, in, attr);
            assert_tape_ok(f->tp);
            assert_int_equal(tg_numel(y), 12);
        }
    }
}

static double sig(double z) { return 1.0 / (1.0 + exp(-z)); }

static void second_order_through_composite_only(void **state)
{
    fixture *f = *state;
    swish_ops ops;
    assert_status(swish_register(f->ctx, &ops), TG_OK);
    const double xs[] = {-2.0, -0.3, 0.0, 0.7, 2.5}, beta = 1.5;
    tg_tensor x = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){5}, xs);
    tg_tensor y = tg_sum_all(swish(ops.composite, x, beta)), d, dd;
    assert_status(tg_grad(1, &y, NULL, 1, &x, &d, TG_CREATE_GRAPH), TG_OK);
    tg_tensor sd = tg_sum_all(d);
    assert_status(tg_grad(1, &sd, NULL, 1, &x, &dd, 0), TG_OK);
    const double *g1 = tg_data(d), *g2 = tg_data(dd);
    for (int i = 0; i < 5; i++) {
        double s = sig(beta * xs[i]);
        assert_close(g1[i], s + beta * xs[i] * s * (1 - s), 1e-14);
        assert_close(g2[i], beta * s * (1 - s) * (2 + beta * xs[i] * (1 - 2 * s)), 1e-13);
    }

    /* The kernel variant: first order fine, second order refused naming the op. */
    tg_tensor yk = tg_sum_all(swish(ops.kernel, x, beta)), dk, ddk;
    assert_status(tg_grad(1, &yk, NULL, 1, &x, &dk, TG_CREATE_GRAPH), TG_OK);
    assert_close(((const double *)tg_data(dk))[3], g1[3], 1e-14);
    tg_tensor sdk = tg_sum_all(dk);
    assert_status(tg_grad(1, &sdk, NULL, 1, &x, &ddk, 0), TG_FIRST_ORDER);
    assert_contains(tg_tape_error(f->tp), "swish_kernel");
}

/* cube(x) = x^3 whose composite backward detaches 3 x^2: right first derivatives, wrong second
 * ones. The second-order gradcheck must catch it (the check can fail). */
static tg_status cube_check(tg_check *c)
{
    tg_status st = tg_check_float(c, 0);
    if (!st)
        *c->out = *c->in[0];
    return st;
}
static void cube_forward(const tg_kernel *k)
{
    const double *x = k->in[0]->data;
    double *y = k->out->data;
    for (int64_t i = 0; i < k->out->numel; i++)
        y[i] = x[i] * x[i] * x[i];
}
static void cube_detached_backward(const tg_backward_io *io)
{
    tg_tensor x = io->inputs[0];
    io->grad_inputs[0] = tg_mul(io->grad_output, tg_detach(tg_mul_scalar(tg_square(x), 3)));
}
static tg_tensor apply_op(void *user, int n, const tg_tensor *in)
{
    return tg_op_apply(user, n, in, NULL);
}

static void second_order_check_catches_a_detached_rule(void **state)
{
    fixture *f = *state;
    const tg_op_def def = {.name = "cube_detached",
                           .ninputs = 1,
                           .check = cube_check,
                           .forward = cube_forward,
                           .backward = cube_detached_backward};
    const tg_op *op;
    assert_status(tg_op_register(f->ctx, &def, &op), TG_OK);
    tg_tensor x = tg_uniform(f->tp, TG_F64, 1, (int64_t[]){6}, 0.5, 2, 3);
    tg_gradcheck_result r;
    assert_status(tg_gradcheck(f->ctx, apply_op, (void *)op, 1, &x, NULL, &r), TG_OK);
    assert_true(r.passed);
    tg_gradcheck_options o2 = {.order = 2};
    assert_status(tg_gradcheck(f->ctx, apply_op, (void *)op, 1, &x, &o2, &r), TG_OK);
    assert_false(r.passed);
    assert_int_equal(r.input, 0);
    assert_close(r.analytic, 0, 0); /* the detached rule's second derivative */
    assert_true(fabs(r.numeric) > 0.1);
}

static void bad_attribute_is_a_clear_error(void **state)
{
    fixture *f = *state;
    swish_ops ops;
    assert_status(swish_register(f->ctx, &ops), TG_OK);
    tg_tensor y = swish(ops.composite, VEC64(f->tp, 1, 2), INFINITY);
    assert_false(tg_ok(y));
    assert_status(tg_tape_status(f->tp), TG_RANGE);
    assert_contains(tg_tape_error(f->tp), "swish: beta must be finite");
    assert_contains(tg_tape_error(f->tp), "f64[2]");
}

/* A variadic elementwise sum through tg_kernel_loop: any number of inputs, broadcast or not
 * (it used to write nothing from 16 inputs on, and report success). */
static void sum_run(int64_t n, char *const *ptrs, const int64_t *steps, void *user)
{
    int nin = *(const int *)user;
    for (int64_t e = 0; e < n; e++) {
        double acc = 0;
        for (int j = 0; j < nin; j++)
            acc += *(const double *)(ptrs[j] + e * steps[j]);
        *(double *)(ptrs[nin] + e * steps[nin]) = acc;
    }
}

static void sum_forward(const tg_kernel *k)
{
    int nin = k->ninputs;
    tg_kernel_loop(k, sum_run, &nin);
}

static void sum_backward(const tg_kernel *k, const tg_view *grad_output, tg_view *const *grads)
{
    for (int j = 0; j < k->ninputs; j++)
        if (grads[j])
            for (int64_t e = 0; e < grad_output->numel; e++)
                ((double *)grads[j]->data)[e] += ((const double *)grad_output->data)[e];
}

static tg_status sum_check(tg_check *c)
{
    if (c->in[0]->dtype != TG_F64)
        return tg_check_fail(c, TG_DTYPE, "f64 only");
    return tg_check_elementwise(c);
}

static void many_inputs_through_the_loop(void **state)
{
    fixture *f = *state;
    const tg_op *op;
    tg_op_def d = {.name = "sum_many",
                   .ninputs = TG_VARIADIC,
                   .flags = TG_OP_BROADCAST,
                   .check = sum_check,
                   .forward = sum_forward,
                   .backward_kernel = sum_backward};
    assert_status(tg_op_register(f->ctx, &d, &op), TG_OK);
    enum { MAX_INPUTS = 40 };
    int counts[] = {15, 16, 17, MAX_INPUTS};
    for (int c = 0; c < 4; c++) {
        for (int broadcast = 0; broadcast < 2; broadcast++) {
            tg_tape_reset(f->tp);
            int n = counts[c];
            tg_tensor in[MAX_INPUTS];
            double expect[6] = {0};
            for (int j = 0; j < n; j++) {
                bool row = broadcast && j % 3 == 0; /* a [3] row broadcast over [2, 3] */
                int64_t shape[2] = {2, 3};
                in[j] = tg_requires_grad(row ? tg_full(f->tp, TG_F64, 1, shape + 1, j + 1)
                                             : tg_full(f->tp, TG_F64, 2, shape, j + 1));
                for (int e = 0; e < 6; e++)
                    expect[e] += j + 1;
            }
            tg_tensor y = tg_op_apply(op, n, in, NULL);
            assert_tape_ok(f->tp);
            double got[6];
            assert_status(tg_read(y, TG_F64, got, 6), TG_OK);
            for (int e = 0; e < 6; e++)
                assert_close(got[e], expect[e], 0);
            assert_status(tg_backward(tg_sum_all(y)), TG_OK);
            for (int j = 0; j < n; j++)
                assert_close(tg_item(tg_sum_all(tg_tensor_grad(in[j]))), 6, 0);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(both_variants_pass_gradcheck),
        FIXTURE_TEST(second_order_through_composite_only),
        FIXTURE_TEST(second_order_check_catches_a_detached_rule),
        FIXTURE_TEST(bad_attribute_is_a_clear_error),
        FIXTURE_TEST(many_inputs_through_the_loop),
    };
    return cmocka_run_group_tests_name("custom_op", tests, NULL, NULL);
}
