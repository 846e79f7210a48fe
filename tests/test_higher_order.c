/* test_higher_order.c — gradients of gradients: with TG_CREATE_GRAPH the backward pass records
 * its own ops, so its result can be differentiated again. */
#include "common.h"

/* d/dx and d2/dx2 of sum(f(x)) elementwise, by two reverse passes. */
static void derivatives(tg_tape *tp, tg_tensor (*fn)(tg_tensor), const double *xs, int n,
                        double *d1, double *d2)
{
    tg_tensor x = tg_tensor_from(tp, TG_F64, 1, (int64_t[]){n}, xs);
    tg_tensor y = tg_sum_all(fn(x)), g, h;
    assert_status(tg_grad(1, &y, NULL, 1, &x, &g, TG_CREATE_GRAPH), TG_OK);
    tg_tensor sg = tg_sum_all(g);
    assert_status(tg_grad(1, &sg, NULL, 1, &x, &h, 0), TG_OK);
    tg_read(g, TG_F64, d1, n);
    tg_read(h, TG_F64, d2, n);
}

static tg_tensor cube(tg_tensor x) { return tg_pow(x, 3.0); }
static tg_tensor cube_by_mul(tg_tensor x) { return tg_mul(x, tg_mul(x, x)); }

static void second_derivative_of_tanh(void **state)
{
    fixture *f = *state;
    const double xs[] = {-2.0, -0.5, 0.0, 0.3, 1.7};
    double d1[5], d2[5];
    derivatives(f->tp, tg_tanh, xs, 5, d1, d2);
    for (int i = 0; i < 5; i++) {
        double t = tanh(xs[i]);
        assert_close(d1[i], 1 - t * t, 1e-15);
        assert_close(d2[i], -2 * t * (1 - t * t), 1e-15);
    }
}

static void second_derivative_of_cube(void **state)
{
    fixture *f = *state;
    const double xs[] = {-2.0, -0.5, 0.0, 0.3, 1.7};
    double d1[5], d2[5];
    derivatives(f->tp, cube, xs, 5, d1, d2);
    for (int i = 0; i < 5; i++) {
        assert_close(d1[i], 3 * xs[i] * xs[i], 1e-15);
        assert_close(d2[i], 6 * xs[i], 1e-15);
    }
    tg_tape_reset(f->tp);
    derivatives(f->tp, cube_by_mul, xs, 5, d1, d2); /* fan-in of x three times */
    for (int i = 0; i < 5; i++) {
        assert_close(d1[i], 3 * xs[i] * xs[i], 1e-15);
        assert_close(d2[i], 6 * xs[i], 1e-15);
    }
}

/* Third derivative of x^3 is 6 everywhere: create_graph twice. */
static void third_derivative(void **state)
{
    fixture *f = *state;
    tg_tensor x = VEC64(f->tp, 0.5, -1.5), g1, g2, g3;
    tg_tensor y = tg_sum_all(cube_by_mul(x));
    assert_status(tg_grad(1, &y, NULL, 1, &x, &g1, TG_CREATE_GRAPH), TG_OK);
    tg_tensor s1 = tg_sum_all(g1);
    assert_status(tg_grad(1, &s1, NULL, 1, &x, &g2, TG_CREATE_GRAPH), TG_OK);
    tg_tensor s2 = tg_sum_all(g2);
    assert_status(tg_grad(1, &s2, NULL, 1, &x, &g3, 0), TG_OK);
    const double *d3 = tg_data(g3);
    assert_close(d3[0], 6, 1e-15);
    assert_close(d3[1], 6, 1e-15);
}

/* Rosenbrock: f(x) = sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2 for i < n-1. */
static tg_tensor rosenbrock(tg_tensor x, int n)
{
    tg_tensor head = tg_slice(x, 0, 0, n - 1, 1), tail = tg_slice(x, 0, 1, n, 1);
    tg_tensor a = tg_sub(tail, tg_square(head));
    tg_tensor b = tg_add_scalar(tg_neg(head), 1.0);
    return tg_sum_all(tg_add(tg_mul_scalar(tg_square(a), 100.0), tg_square(b)));
}

static void rosenbrock_hessian(const double *x, int n, double *h)
{
    memset(h, 0, (size_t)n * n * sizeof *h);
    for (int i = 0; i < n - 1; i++) {
        h[i * n + i] += 1200 * x[i] * x[i] - 400 * x[i + 1] + 2;
        h[(i + 1) * n + i + 1] += 200;
        h[i * n + i + 1] += -400 * x[i];
        h[(i + 1) * n + i] += -400 * x[i];
    }
}

static void rosenbrock_hessian_vector_product(void **state)
{
    fixture *f = *state;
    enum { N = 10 };
    double xs[N], vs[N], h[N * N];
    for (int i = 0; i < N; i++) {
        xs[i] = 0.3 * sin(1.0 + i) + 0.5;
        vs[i] = cos(0.7 * i);
    }
    tg_tensor x = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){N}, xs);
    tg_tensor v = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){N}, vs);
    tg_tensor y = rosenbrock(x, N), g, hv;
    assert_status(tg_grad(1, &y, NULL, 1, &x, &g, TG_CREATE_GRAPH), TG_OK);
    tg_tensor gv = tg_sum_all(tg_mul(g, v));
    assert_status(tg_grad(1, &gv, NULL, 1, &x, &hv, 0), TG_OK);
    rosenbrock_hessian(xs, N, h);
    const double *got = tg_data(hv), *grad = tg_data(g);
    for (int i = 0; i < N; i++) {
        double want = 0;
        for (int j = 0; j < N; j++)
            want += h[i * N + j] * vs[j];
        assert_close(got[i], want, 1e-12);
    }
    /* And the gradient itself against the analytic one. */
    for (int i = 0; i < N; i++) {
        double want = 0;
        if (i < N - 1)
            want += -400 * xs[i] * (xs[i + 1] - xs[i] * xs[i]) - 2 * (1 - xs[i]);
        if (i > 0)
            want += 200 * (xs[i] - xs[i - 1] * xs[i - 1]);
        assert_close(grad[i], want, 1e-12);
    }
}

/* create_graph gradients stay on the tape like any tensor: a gradient penalty trains. */
static void gradient_of_gradient_norm(void **state)
{
    fixture *f = *state;
    tg_param *w;
    tg_param_new(f->ctx, "w", TG_F64, 2, (int64_t[]){3, 2}, &w);
    tg_param_uniform(w, -1, 1, 3);
    tg_tensor x = tg_uniform(f->tp, TG_F64, 2, (int64_t[]){4, 3}, -1, 1, 4);
    tg_tensor out = tg_sum_all(tg_tanh(tg_matmul(x, tg_param_tensor(f->tp, w)))), gx;
    assert_status(tg_grad(1, &out, NULL, 1, &x, &gx, TG_CREATE_GRAPH), TG_OK);
    tg_tensor penalty = tg_sum_all(tg_square(gx));
    assert_status(tg_backward(penalty), TG_OK);
    /* Check d(penalty)/dw against finite differences of the penalty. */
    double wd[6], analytic = ((const double *)tg_param_grad(w))[1];
    memcpy(wd, tg_param_data(w), sizeof wd);
    double keep = wd[1], pv[2], eps = 1e-6;
    for (int k = 0; k < 2; k++) {
        wd[1] = keep + (k ? -eps : eps);
        tg_param_set(w, wd);
        tg_tape_reset(f->tp);
        x = tg_uniform(f->tp, TG_F64, 2, (int64_t[]){4, 3}, -1, 1, 4);
        out = tg_sum_all(tg_tanh(tg_matmul(x, tg_param_tensor(f->tp, w))));
        assert_status(tg_grad(1, &out, NULL, 1, &x, &gx, TG_CREATE_GRAPH), TG_OK);
        pv[k] = tg_item(tg_sum_all(tg_square(gx)));
    }
    assert_close(analytic, (pv[0] - pv[1]) / (2 * eps), 1e-7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(second_derivative_of_tanh), FIXTURE_TEST(second_derivative_of_cube),
        FIXTURE_TEST(third_derivative),          FIXTURE_TEST(rosenbrock_hessian_vector_product),
        FIXTURE_TEST(gradient_of_gradient_norm),
    };
    return cmocka_run_group_tests_name("higher_order", tests, NULL, NULL);
}
