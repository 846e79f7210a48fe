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

/* ---- the helpers: tg_hvp, tg_jvp, tg_jacobian, tg_hessian ------------------------------------ */

static void rosenbrock_point(double *xs, double *vs, int n)
{
    for (int i = 0; i < n; i++) {
        xs[i] = 0.3 * sin(1.0 + i) + 0.5;
        vs[i] = cos(0.7 * i);
    }
}

/* tg_hvp against the analytic Rosenbrock Hessian, and against the manual double backward. */
static void hvp_rosenbrock(void **state)
{
    fixture *f = *state;
    enum { N = 10 };
    double xs[N], vs[N], h[N * N], worst = 0;
    rosenbrock_point(xs, vs, N);
    rosenbrock_hessian(xs, N, h);
    tg_tensor x = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){N}, xs);
    tg_tensor v = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){N}, vs);
    tg_tensor y = rosenbrock(x, N), hv;
    assert_status(tg_hvp(y, 1, &x, &v, &hv, TG_RETAIN_GRAPH), TG_OK);
    assert_int_equal(tg_ndim(hv), 1);
    assert_int_equal(tg_dim(hv, 0), N);
    const double *got = tg_data(hv);
    for (int i = 0; i < N; i++) {
        double want = 0;
        for (int j = 0; j < N; j++)
            want += h[i * N + j] * vs[j];
        assert_close(got[i], want, 1e-12);
        worst = fmax(worst, fabs(got[i] - want) / (1 + fabs(want)));
    }
    /* The graph was retained: a second product (with another v) on the same f. */
    tg_tensor e0 = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){N}, (double[N]){1});
    assert_status(tg_hvp(y, 1, &x, &e0, &hv, 0), TG_OK);
    for (int i = 0; i < N; i++)
        assert_close(((const double *)tg_data(hv))[i], h[i * N], 1e-12);
    /* Without TG_CREATE_GRAPH the product is a plain value: nothing flows back from it. */
    tg_tensor s = tg_sum_all(hv), back;
    assert_status(tg_grad(1, &s, NULL, 1, &x, &back, 0), TG_OK);
    for (int i = 0; i < N; i++)
        assert_close(((const double *)tg_data(back))[i], 0, 0);
    /* Without TG_RETAIN_GRAPH the last pass released it. */
    assert_status(tg_hvp(y, 1, &x, &e0, &hv, 0), TG_RELEASED);
    printf("hvp_rosenbrock: worst relative error %.3g\n", worst);
}

/* f(a, b) = sum(a^2 * b) + sum(sin(a)) * b[0], with two inputs of different shapes:
 * H_aa = diag(2 b - sin(a) b0), H_ab[i][j] = 2 a_i [i == j] + cos(a_i) [j == 0], H_bb = 0. */
static void hvp_two_inputs(void **state)
{
    fixture *f = *state;
    double as[3] = {0.3, -1.1, 0.8}, bs[3] = {1.5, -0.4, 2.0}, va[3] = {1, -2, 0.5},
           vb[3] = {0.25, 1, -1};
    tg_tensor a = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){3}, as);
    tg_tensor b = tg_tensor_from(f->tp, TG_F64, 2, (int64_t[]){1, 3}, bs);
    tg_tensor b0 = tg_slice(tg_reshape(b, 1, (int64_t[]){3}), 0, 0, 1, 1);
    tg_tensor y = tg_add(tg_sum_all(tg_mul(tg_square(a), tg_reshape(b, 1, (int64_t[]){3}))),
                         tg_sum_all(tg_mul(tg_sum_all(tg_sin(a)), b0)));
    tg_tensor ins[2] = {a, b}, vs[2], hv[2];
    vs[0] = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){3}, va);
    vs[1] = tg_tensor_from(f->tp, TG_F64, 2, (int64_t[]){1, 3}, vb);
    assert_status(tg_hvp(y, 2, ins, vs, hv, 0), TG_OK);
    double ha[3], hb[3];
    assert_status(tg_read(hv[0], TG_F64, ha, 3), TG_OK);
    assert_status(tg_read(hv[1], TG_F64, hb, 3), TG_OK);
    assert_int_equal(tg_ndim(hv[1]), 2);
    double sum_cos_va = 0;
    for (int i = 0; i < 3; i++)
        sum_cos_va += cos(as[i]) * va[i];
    for (int i = 0; i < 3; i++) {
        /* (H v)_a = H_aa va + H_ab vb; (H v)_b = H_ba va */
        double want_a =
            (2 * bs[i] - sin(as[i]) * bs[0]) * va[i] + 2 * as[i] * vb[i] + cos(as[i]) * vb[0];
        double want_b = 2 * as[i] * va[i] + (i == 0 ? sum_cos_va : 0);
        assert_close(ha[i], want_a, 1e-13);
        assert_close(hb[i], want_b, 1e-13);
    }
}

/* out(x) = [x0 x1, sin(x0) x2, x1^3, exp(x2) x0]: analytic Jacobian. */
static tg_tensor vector_function(tg_tensor x)
{
    tg_tensor x0 = tg_slice(x, 0, 0, 1, 1), x1 = tg_slice(x, 0, 1, 2, 1),
              x2 = tg_slice(x, 0, 2, 3, 1);
    tg_tensor parts[4] = {tg_mul(x0, x1), tg_mul(tg_sin(x0), x2), tg_pow(x1, 3),
                          tg_mul(tg_exp(x2), x0)};
    return tg_concat(4, parts, 0);
}

static void vector_function_jacobian(const double *x, double *j)
{
    double want[12] = {x[1], x[0],      0, cos(x[0]) * x[2], 0, sin(x[0]), 0, 3 * x[1] * x[1],
                       0,    exp(x[2]), 0, exp(x[2]) * x[0]};
    memcpy(j, want, sizeof want);
}

static void jacobian_analytic(void **state)
{
    fixture *f = *state;
    double xs[3] = {0.7, -1.3, 0.4}, want[12];
    tg_tensor x = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){3}, xs), jac;
    tg_tensor out = vector_function(x);
    assert_status(tg_jacobian(out, x, &jac, 0), TG_OK);
    assert_int_equal(tg_ndim(jac), 2);
    assert_int_equal(tg_dim(jac, 0), 4);
    assert_int_equal(tg_dim(jac, 1), 3);
    vector_function_jacobian(xs, want);
    const double *got = tg_data(jac);
    for (int i = 0; i < 12; i++)
        assert_close(got[i], want[i], 1e-15);
    /* An f32 matrix output and input: [m, k] with m, k the element counts. */
    tg_tape_reset(f->tp);
    tg_tensor w = tg_tensor_from(f->tp, TG_F32, 2, (int64_t[]){2, 2}, (float[]){1, 2, 3, 4});
    tg_tensor y = tg_mul_scalar(tg_square(w), 0.5); /* dy_r/dw_c = w_r [r == c] */
    assert_status(tg_jacobian(y, w, &jac, 0), TG_OK);
    assert_int_equal(tg_tensor_dtype(jac), TG_F32);
    float jf[16];
    assert_status(tg_read(jac, TG_F32, jf, 16), TG_OK);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            assert_close(jf[r * 4 + c], r == c ? (float)(r + 1) : 0.0f, 0);
}

/* jvp = J v, against J v from tg_jacobian and against a central difference of out. */
static void jvp_against_jacobian_and_differences(void **state)
{
    fixture *f = *state;
    double xs[3] = {0.7, -1.3, 0.4}, vs[3] = {0.5, -1, 2}, jv[4], jac[12], worst = 0;
    tg_tensor x = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){3}, xs);
    tg_tensor v = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){3}, vs);
    tg_tensor out = vector_function(x), r, j;
    assert_status(tg_jvp(out, 1, &x, &v, &r, TG_RETAIN_GRAPH), TG_OK);
    assert_int_equal(tg_numel(r), 4);
    assert_status(tg_read(r, TG_F64, jv, 4), TG_OK);
    assert_status(tg_jacobian(out, x, &j, 0), TG_OK);
    assert_status(tg_read(j, TG_F64, jac, 12), TG_OK);
    double eps = 1e-6;
    for (int i = 0; i < 4; i++) {
        double want = 0;
        for (int c = 0; c < 3; c++)
            want += jac[i * 3 + c] * vs[c];
        assert_close(jv[i], want, 1e-14);
    }
    double yp[4], ym[4];
    for (int s = 0; s < 2; s++) {
        double xe[3];
        for (int c = 0; c < 3; c++)
            xe[c] = xs[c] + (s ? -eps : eps) * vs[c];
        tg_tensor xt = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){3}, xe);
        assert_status(tg_read(vector_function(xt), TG_F64, s ? ym : yp, 4), TG_OK);
    }
    for (int i = 0; i < 4; i++) {
        double fd = (yp[i] - ym[i]) / (2 * eps);
        assert_close(jv[i], fd, 1e-8);
        worst = fmax(worst, fabs(jv[i] - fd) / (1 + fabs(fd)));
    }
    printf("jvp: worst relative difference from central differences %.3g\n", worst);
    /* Two inputs, a matrix output: out = tanh(A x) with A and x both inputs. */
    tg_tape_reset(f->tp);
    double as[6] = {0.5, -0.2, 0.1, 0.3, 0.8, -0.6}, xv[3] = {0.4, -0.9, 1.2},
           dav[6] = {1, 0, -1, 0.5, 0.5, 2}, dxv[3] = {-0.3, 0.2, 0.7};
    tg_tensor A = tg_tensor_from(f->tp, TG_F64, 2, (int64_t[]){2, 3}, as);
    tg_tensor X = tg_tensor_from(f->tp, TG_F64, 2, (int64_t[]){3, 1}, xv);
    tg_tensor o = tg_tanh(tg_matmul(A, X));
    tg_tensor ins[2] = {A, X}, dirs[2] = {tg_tensor_from(f->tp, TG_F64, 2, (int64_t[]){2, 3}, dav),
                                          tg_tensor_from(f->tp, TG_F64, 2, (int64_t[]){3, 1}, dxv)};
    assert_status(tg_jvp(o, 2, ins, dirs, &r, 0), TG_OK);
    assert_int_equal(tg_ndim(r), 2);
    for (int i = 0; i < 2; i++) {
        double z = 0, dz = 0;
        for (int c = 0; c < 3; c++) {
            z += as[i * 3 + c] * xv[c];
            dz += dav[i * 3 + c] * xv[c] + as[i * 3 + c] * dxv[c];
        }
        double t = tanh(z);
        assert_close(((const double *)tg_data(r))[i], (1 - t * t) * dz, 1e-14);
    }
}

/* f(x) = x0^2 x1 + exp(x1) x2 + sin(x0 x2): analytic Hessian. */
static void hessian_analytic(void **state)
{
    fixture *f = *state;
    double xs[3] = {0.6, -0.4, 1.3};
    tg_tensor x = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){3}, xs), hess;
    tg_tensor x0 = tg_slice(x, 0, 0, 1, 1), x1 = tg_slice(x, 0, 1, 2, 1),
              x2 = tg_slice(x, 0, 2, 3, 1);
    tg_tensor y = tg_sum_all(
        tg_add(tg_add(tg_mul(tg_square(x0), x1), tg_mul(tg_exp(x1), x2)), tg_sin(tg_mul(x0, x2))));
    assert_status(tg_hessian(y, x, &hess, 0), TG_OK);
    assert_int_equal(tg_dim(hess, 0), 3);
    assert_int_equal(tg_dim(hess, 1), 3);
    double a = xs[0], b = xs[1], c = xs[2], s = sin(a * c), co = cos(a * c);
    double want[9] = {2 * b - c * c * s, 2 * a,  co - a * c * s, 2 * a, exp(b) * c, exp(b),
                      co - a * c * s,    exp(b), -a * a * s};
    const double *got = tg_data(hess);
    for (int i = 0; i < 9; i++)
        assert_close(got[i], want[i], 1e-14);
    /* Rosenbrock n = 6 against its analytic Hessian. */
    tg_tape_reset(f->tp);
    enum { N = 6 };
    double rx[N], rv[N], h[N * N];
    rosenbrock_point(rx, rv, N);
    rosenbrock_hessian(rx, N, h);
    x = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){N}, rx);
    assert_status(tg_hessian(rosenbrock(x, N), x, &hess, 0), TG_OK);
    for (int i = 0; i < N * N; i++)
        assert_close(((const double *)tg_data(hess))[i], h[i], 1e-12);
}

/* Nested: the Hessian recorded with TG_CREATE_GRAPH is differentiable, which gives third
 * derivatives. f = x0^3 x1 + x1^4: sum(H) = 6 x0 x1 + 6 x0^2 + 12 x1^2. */
static void third_derivative_through_hessian(void **state)
{
    fixture *f = *state;
    double xs[2] = {0.8, -1.7};
    tg_tensor x = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){2}, xs), hess, g;
    tg_tensor x0 = tg_slice(x, 0, 0, 1, 1), x1 = tg_slice(x, 0, 1, 2, 1);
    tg_tensor y = tg_sum_all(tg_add(tg_mul(tg_pow(x0, 3), x1), tg_pow(x1, 4)));
    assert_status(tg_hessian(y, x, &hess, TG_CREATE_GRAPH), TG_OK);
    tg_tensor s = tg_sum_all(hess);
    assert_close(tg_item(s), 6 * xs[0] * xs[1] + 6 * xs[0] * xs[0] + 12 * xs[1] * xs[1], 1e-14);
    assert_status(tg_grad(1, &s, NULL, 1, &x, &g, 0), TG_OK);
    const double *d3 = tg_data(g);
    assert_close(d3[0], 6 * xs[1] + 12 * xs[0], 1e-14);
    assert_close(d3[1], 6 * xs[0] + 24 * xs[1], 1e-14);
    /* Without TG_CREATE_GRAPH the result is a plain value: no gradient flows from it. */
    tg_tape_reset(f->tp);
    x = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){2}, xs);
    x0 = tg_slice(x, 0, 0, 1, 1);
    x1 = tg_slice(x, 0, 1, 2, 1);
    y = tg_sum_all(tg_add(tg_mul(tg_pow(x0, 3), x1), tg_pow(x1, 4)));
    assert_status(tg_hessian(y, x, &hess, 0), TG_OK);
    s = tg_sum_all(hess);
    assert_status(tg_grad(1, &s, NULL, 1, &x, &g, 0), TG_OK);
    assert_close(((const double *)tg_data(g))[0], 0, 0);
    assert_close(((const double *)tg_data(g))[1], 0, 0);
    /* hvp and jvp nest too: d/dx <H v, 1> with f = sum(x^4) is 24 x v. */
    tg_tape_reset(f->tp);
    x = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){2}, xs);
    tg_tensor v = VEC64(f->tp, 0.5, 2.0), hv, jv;
    y = tg_sum_all(tg_pow(x, 4));
    assert_status(tg_hvp(y, 1, &x, &v, &hv, TG_CREATE_GRAPH), TG_OK);
    s = tg_sum_all(hv);
    assert_status(tg_grad(1, &s, NULL, 1, &x, &g, 0), TG_OK);
    for (int i = 0; i < 2; i++)
        assert_close(((const double *)tg_data(g))[i], 24 * xs[i] * (i ? 2.0 : 0.5), 1e-14);
    tg_tape_reset(f->tp);
    x = tg_tensor_from(f->tp, TG_F64, 1, (int64_t[]){2}, xs);
    v = VEC64(f->tp, 0.5, 2.0);
    tg_tensor cube = tg_pow(x, 3); /* J v = 3 x^2 v; d/dx sum(J v) = 6 x v */
    assert_status(tg_jvp(cube, 1, &x, &v, &jv, TG_CREATE_GRAPH), TG_OK);
    s = tg_sum_all(jv);
    assert_status(tg_grad(1, &s, NULL, 1, &x, &g, 0), TG_OK);
    for (int i = 0; i < 2; i++)
        assert_close(((const double *)tg_data(g))[i], 6 * xs[i] * (i ? 2.0 : 0.5), 1e-14);
}

/* An op with a first-order kernel backward (y = 2x): the helpers fail with TG_FIRST_ORDER. */
static tg_status double_check(tg_check *c)
{
    *c->out = *c->in[0];
    return tg_check_float(c, 0);
}
static void double_forward(const tg_kernel *k)
{
    for (int64_t i = 0; i < k->out->numel; i++)
        ((double *)k->out->data)[i] = 2 * ((const double *)k->in[0]->data)[i];
}
static void double_backward(const tg_kernel *k, const tg_view *g, tg_view *const *gi)
{
    (void)k;
    for (int64_t i = 0; gi[0] && i < g->numel; i++)
        ((double *)gi[0]->data)[i] += 2 * ((const double *)g->data)[i];
}

static void helper_errors(void **state)
{
    fixture *f = *state;
    tg_tape *tp = f->tp;
    tg_param *w;
    tg_param_new(f->ctx, "w", TG_F64, 1, (int64_t[]){3}, &w);
    tg_param_fill(w, 0.5);
    tg_tensor x = VEC64(tp, 1, 2, 3), v2 = VEC64(tp, 1, 2), none = {0}, out[2], r;
    tg_tensor wx = tg_mul(tg_param_tensor(tp, w), x);
    tg_tensor y = tg_sum_all(tg_square(wx));
    struct {
        tg_status got, want;
        const char *needle;
    } cases[16];
    int n = 0;
#define CASE(call, st, msg)                                                                        \
    do {                                                                                           \
        cases[n].got = (call);                                                                     \
        cases[n].want = (st);                                                                      \
        cases[n].needle = (msg);                                                                   \
        if (cases[n].got != cases[n].want)                                                         \
            fail_msg("case %d: %s gave %s, expected %s (%s)", n, #call,                            \
                     tg_status_name(cases[n].got), tg_status_name(st), tg_tape_error(tp));         \
        if (!strstr(tg_tape_error(tp), msg))                                                       \
            fail_msg("case %d: message \"%s\" lacks \"%s\"", n, tg_tape_error(tp), msg);           \
        n++;                                                                                       \
        tg_tape_reset(tp);                                                                         \
        x = VEC64(tp, 1, 2, 3);                                                                    \
        v2 = VEC64(tp, 1, 2);                                                                      \
        wx = tg_mul(tg_param_tensor(tp, w), x);                                                    \
        y = tg_sum_all(tg_square(wx));                                                             \
    } while (0)
    CASE(tg_hvp(wx, 1, &x, &x, out, 0), TG_NOT_SCALAR, "tg_hvp: f must have one element");
    CASE(tg_hvp(y, 1, &x, &v2, out, 0), TG_SHAPE, "v[0] is f64[2] but input 0 is f64[3]");
    CASE(tg_hvp(y, 0, &x, &x, out, 0), TG_INVALID, "needs n >= 1");
    CASE(tg_hvp(y, 1, NULL, &x, out, 0), TG_INVALID, "needs n >= 1");
    CASE(tg_hvp(y, 1, &x, NULL, out, 0), TG_INVALID, "needs n >= 1");
    CASE(tg_hvp(y, 1, &x, &x, NULL, 0), TG_INVALID, "needs n >= 1");
    CASE(tg_hvp(y, 1, &none, &x, out, 0), TG_INVALID, "tg_hvp: input 0 is none");
    CASE(tg_hvp(y, 1, &x, &x, out, 8), TG_INVALID, "unknown flags");
    CASE(tg_jvp(wx, 1, &x, &v2, out, 0), TG_SHAPE, "tg_jvp: v[0] is f64[2]");
    CASE(tg_jvp(wx, 1, &x, (tg_tensor[]){tg_ones(tp, TG_F32, 1, (int64_t[]){3})}, out, 0), TG_DTYPE,
         "v[0] is f32[3]");
    CASE(tg_jvp(wx, 0, NULL, NULL, out, 0), TG_INVALID, "needs n >= 1");
    CASE(tg_jacobian(wx, none, &r, 0), TG_INVALID, "tg_jacobian: the input is none");
    CASE(tg_jacobian(wx, x, NULL, 0), TG_INVALID, "the result pointer is NULL");
    CASE(tg_hessian(wx, x, &r, 0), TG_NOT_SCALAR, "tg_hessian: f must have one element");
    CASE(tg_hessian(y, x, NULL, 0), TG_INVALID, "the result pointer is NULL");
#undef CASE
    /* A stale output (from before a reset) and handles without a tape. */
    tg_tensor stale = y;
    tg_tape_reset(tp);
    x = VEC64(tp, 1, 2, 3);
    assert_status(tg_hvp(stale, 1, &x, &x, out, 0), TG_STALE);
    assert_contains(tg_tape_error(tp), "stale");
    tg_tape_reset(tp);
    assert_status(tg_hvp(none, 1, &x, &x, out, 0), TG_INVALID);
    assert_status(tg_jvp(none, 1, &x, &x, out, 0), TG_INVALID);
    assert_status(tg_jacobian(none, x, &r, 0), TG_INVALID);
    assert_status(tg_hessian(none, x, &r, 0), TG_INVALID);
    /* A first-order op on the path: TG_FIRST_ORDER, results are error handles, and no
     * parameter gradient changed. */
    const tg_op *dbl;
    tg_op_def def = {.name = "double_k",
                     .ninputs = 1,
                     .check = double_check,
                     .forward = double_forward,
                     .backward_kernel = double_backward};
    assert_status(tg_op_register(f->ctx, &def, &dbl), TG_OK);
    tg_tape_reset(tp);
    x = VEC64(tp, 1, 2, 3);
    tg_tensor p = tg_param_tensor(tp, w);
    tg_tensor in = tg_mul(p, x);
    y = tg_sum_all(tg_square(tg_op_apply(dbl, 1, &in, NULL)));
    tg_tensor ins[2] = {p, x}, vs[2] = {x, x};
    out[0] = out[1] = x;
    assert_status(tg_hvp(y, 2, ins, vs, out, 0), TG_FIRST_ORDER);
    assert_contains(tg_tape_error(tp), "double_k");
    assert_false(tg_ok(out[0]));
    assert_false(tg_ok(out[1]));
    for (int i = 0; i < 3; i++)
        assert_close(((const double *)tg_param_grad(w))[i], 0, 0);
    tg_tape_reset(tp);
    x = VEC64(tp, 1, 2, 3);
    in = tg_mul(tg_param_tensor(tp, w), x);
    y = tg_sum_all(tg_square(tg_op_apply(dbl, 1, &in, NULL)));
    assert_status(tg_hessian(y, x, &r, 0), TG_FIRST_ORDER);
    /* The first-order Jacobian itself is fine through it. */
    tg_tape_reset(tp);
    x = VEC64(tp, 1, 2, 3);
    assert_status(tg_jacobian(tg_op_apply(dbl, 1, &x, NULL), x, &r, 0), TG_OK);
    assert_close(((const double *)tg_data(r))[4], 2, 0);
    assert_close(((const double *)tg_data(r))[1], 0, 0);
    /* And the parameter gradient is untouched by every call above. */
    for (int i = 0; i < 3; i++)
        assert_close(((const double *)tg_param_grad(w))[i], 0, 0);
}

/* TG_CREATE_GRAPH through scalar entries (tg_s_from / tg_s_tensor): y = x sin(x)^2 with the
 * sine on the scalar tape, differentiated twice; the f32 case converts at the boundary. */
static void create_graph_through_scalars(void **state)
{
    fixture *f = *state;
    double xv = 0.7, sn = sin(xv), cs = cos(xv);
    double d1 = sn * sn + 2 * xv * sn * cs, d2 = 4 * sn * cs + 2 * xv * (cs * cs - sn * sn);
    static const tg_dtype dts[2] = {TG_F64, TG_F32};
    for (int d = 0; d < 2; d++) {
        tg_tape_reset(f->tp);
        tg_tensor x = tg_full(f->tp, dts[d], 1, (int64_t[]){1}, xv), y, g, h;
        tg_scalar s = tg_s_from(x);
        tg_scalar t = tg_s_mul(tg_s_sin(s), tg_s_sin(s));
        if (dts[d] == TG_F64) /* tensor x times a tensor made from the scalar t */
            y = tg_sum_all(tg_mul(x, tg_s_tensor(t)));
        else /* all on scalars: an f64 0-d output of an f32 input */
            y = tg_s_tensor(tg_s_mul(s, t));
        assert_status(tg_grad(1, &y, NULL, 1, &x, &g, TG_CREATE_GRAPH), TG_OK);
        assert_int_equal(tg_tensor_dtype(g), dts[d]);
        assert_int_equal(tg_ndim(g), 1);
        double tol = dts[d] == TG_F64 ? 1e-14 : 1e-6;
        assert_close(tg_item(g), d1, tol);
        tg_tensor sg = tg_sum_all(g);
        assert_status(tg_grad(1, &sg, NULL, 1, &x, &h, 0), TG_OK);
        assert_close(tg_item(h), d2, tol);
    }
    /* tg_backward_ex with TG_CREATE_GRAPH through scalars: the leaf gradient is differentiable
     * and tg_s_grad reads the scalar adjoints' values. */
    tg_tape_reset(f->tp);
    tg_tensor x = tg_requires_grad(tg_full(f->tp, TG_F64, 0, NULL, xv)), h;
    tg_scalar s = tg_s_from(x), t = tg_s_mul(tg_s_sin(s), tg_s_sin(s));
    tg_tensor y = tg_mul(x, tg_s_tensor(t));
    assert_status(tg_backward_ex(y, (tg_tensor){0}, TG_CREATE_GRAPH), TG_OK);
    tg_tensor g = tg_tensor_grad(x);
    assert_close(tg_item(g), d1, 1e-14);
    assert_close(tg_s_grad(t), xv, 1e-15);
    assert_close(tg_s_grad(s), xv * 2 * sn * cs, 1e-15);
    assert_status(tg_grad(1, &g, NULL, 1, &x, &h, 0), TG_OK);
    assert_close(tg_item(h), d2, 1e-14);
}

/* A tensor made from a scalar (tg_s_tensor) as the input of a functional gradient: the gradient
 * stops at the input. It used to go on into the scalar entry below the swept range: through a
 * NULL entry array under TG_CREATE_GRAPH, and into the adjoints tg_s_grad reads otherwise. */
static void gradient_stops_at_a_tensor_made_from_a_scalar(void **state)
{
    fixture *f = *state;
    static const unsigned flags[2] = {TG_CREATE_GRAPH, 0};
    for (int k = 0; k < 2; k++) {
        tg_tape_reset(f->tp);
        tg_scalar s = tg_s_var(f->tp, 3.0);
        tg_tensor x = tg_s_tensor(tg_s_mul(s, s)), g, h;
        tg_tensor y = tg_sum_all(tg_mul(x, x));
        assert_status(tg_grad(1, &y, NULL, 1, &x, &g, flags[k]), TG_OK);
        assert_close(tg_item(g), 2 * 9.0, 1e-15);
        assert_close(tg_s_grad(s), 0.0, 0.0);
        if (flags[k] & TG_CREATE_GRAPH) {
            assert_status(tg_grad(1, &g, NULL, 1, &x, &h, 0), TG_OK);
            assert_close(tg_item(h), 2.0, 1e-15);
        }
    }
    /* Through tg_hvp, as the fuzzer found it: a Hessian of sum(x^2) is 2. */
    tg_tape_reset(f->tp);
    tg_tensor x = tg_s_tensor(tg_s_var(f->tp, 0.5)), hv;
    tg_tensor v = tg_full(f->tp, TG_F64, 0, NULL, 1.0);
    tg_tensor y = tg_sum_all(tg_mul(x, x));
    assert_status(tg_hvp(y, 1, &x, &v, &hv, 0), TG_OK);
    assert_close(tg_item(hv), 2.0, 1e-15);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(second_derivative_of_tanh),
        FIXTURE_TEST(second_derivative_of_cube),
        FIXTURE_TEST(third_derivative),
        FIXTURE_TEST(rosenbrock_hessian_vector_product),
        FIXTURE_TEST(gradient_of_gradient_norm),
        FIXTURE_TEST(hvp_rosenbrock),
        FIXTURE_TEST(hvp_two_inputs),
        FIXTURE_TEST(jacobian_analytic),
        FIXTURE_TEST(jvp_against_jacobian_and_differences),
        FIXTURE_TEST(hessian_analytic),
        FIXTURE_TEST(third_derivative_through_hessian),
        FIXTURE_TEST(helper_errors),
        FIXTURE_TEST(create_graph_through_scalars),
        FIXTURE_TEST(gradient_stops_at_a_tensor_made_from_a_scalar),
    };
    return cmocka_run_group_tests_name("higher_order", tests, NULL, NULL);
}
