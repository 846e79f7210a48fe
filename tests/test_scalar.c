/* test_scalar.c — the scalar API: micrograd's two engine tests (its published values), every
 * scalar op's value and derivative, conversions to and from tensors, release semantics, and
 * second order (tg_s_gradient, tg_s_hessian) against analytic values and finite differences. */
#include "common.h"

/* micrograd test_engine.py::test_sanity_check, in C. */
static void micrograd_sanity_check(void **state)
{
    fixture *f = *state;
    tg_scalar x = tg_s_var(f->tp, -4.0);
    tg_scalar z =
        tg_s_add(tg_s_add(tg_s_mul(tg_s_const(f->tp, 2.0), x), tg_s_const(f->tp, 2.0)), x);
    tg_scalar q = tg_s_add(tg_s_relu(z), tg_s_mul(z, x));
    tg_scalar h = tg_s_relu(tg_s_mul(z, z));
    tg_scalar y = tg_s_add(tg_s_add(h, q), tg_s_mul(q, x));
    assert_status(tg_s_backward(y, 0), TG_OK);
    /* PyTorch gives y = -20, dy/dx = 46. */
    assert_close(tg_s_value(y), -20.0, 1e-15);
    assert_close(tg_s_grad(x), 46.0, 1e-15);
}

/* micrograd test_engine.py::test_more_ops, in C; its README prints 24.7041, 138.8338, 645.5773. */
static void micrograd_more_ops(void **state)
{
    fixture *f = *state;
    tg_tape *tp = f->tp;
    tg_scalar a = tg_s_var(tp, -4.0), b = tg_s_var(tp, 2.0);
    tg_scalar c = tg_s_add(a, b);
    tg_scalar d = tg_s_add(tg_s_mul(a, b), tg_s_pow(b, 3));
    c = tg_s_add(c, tg_s_addc(c, 1));                        /* c += c + 1 */
    c = tg_s_add(c, tg_s_add(tg_s_addc(c, 1), tg_s_neg(a))); /* c += 1 + c + (-a) */
    d = tg_s_add(d, tg_s_add(tg_s_mulc(d, 2), tg_s_relu(tg_s_add(b, a))));
    d = tg_s_add(d, tg_s_add(tg_s_mulc(d, 3), tg_s_relu(tg_s_sub(b, a))));
    tg_scalar e = tg_s_sub(c, d);
    tg_scalar ff = tg_s_pow(e, 2);
    tg_scalar g = tg_s_div(ff, tg_s_const(tp, 2.0));
    g = tg_s_add(g, tg_s_div(tg_s_const(tp, 10.0), ff));
    assert_status(tg_s_backward(g, 0), TG_OK);
    assert_close(tg_s_value(g), 24.70408163265306, 1e-14);
    assert_close(tg_s_grad(a), 138.83381924198252, 1e-14);
    assert_close(tg_s_grad(b), 645.5772594752186, 1e-14);
    char buf[64];
    snprintf(buf, sizeof buf, "%.4f %.4f %.4f", tg_s_value(g), tg_s_grad(a), tg_s_grad(b));
    assert_string_equal(buf, "24.7041 138.8338 645.5773");
}

typedef tg_scalar (*unary_fn)(tg_scalar);

/* Each unary op's value against libm and its derivative against a central difference. */
static void unary_ops(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *name;
        unary_fn fn;
        double (*ref)(double);
        double x;
    } ops[] = {
        {"exp", tg_s_exp, exp, 0.7},   {"log", tg_s_log, log, 1.7}, {"sqrt", tg_s_sqrt, sqrt, 2.3},
        {"sin", tg_s_sin, sin, 0.4},   {"cos", tg_s_cos, cos, 0.4}, {"tanh", tg_s_tanh, tanh, -0.8},
        {"abs", tg_s_abs, fabs, -1.3},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        tg_tape_reset(f->tp);
        tg_scalar x = tg_s_var(f->tp, ops[i].x);
        tg_scalar y = ops[i].fn(x);
        assert_status(tg_s_backward(y, 0), TG_OK);
        assert_close(tg_s_value(y), ops[i].ref(ops[i].x), 1e-15);
        double h = 1e-6;
        double num = (ops[i].ref(ops[i].x + h) - ops[i].ref(ops[i].x - h)) / (2 * h);
        if (fabs(tg_s_grad(x) - num) > 1e-8)
            fail_msg("%s: derivative %.12g, numeric %.12g", ops[i].name, tg_s_grad(x), num);
    }
    /* sigmoid is stable at large magnitudes; relu's derivative is 0 at 0 (micrograd's rule). */
    tg_tape_reset(f->tp);
    tg_scalar big = tg_s_var(f->tp, -800.0), zero = tg_s_var(f->tp, 0.0);
    tg_scalar s = tg_s_add(tg_s_sigmoid(big), tg_s_relu(zero));
    assert_status(tg_s_backward(s, 0), TG_OK);
    assert_close(tg_s_value(s), 0.0, 0);
    assert_close(tg_s_grad(big), 0.0, 0);
    assert_close(tg_s_grad(zero), 0.0, 0);
    /* pow with a fractional exponent and division. */
    tg_tape_reset(f->tp);
    tg_scalar p = tg_s_var(f->tp, 2.0), q = tg_s_var(f->tp, 5.0);
    tg_scalar r = tg_s_div(tg_s_pow(p, 1.5), q);
    assert_status(tg_s_backward(r, 0), TG_OK);
    assert_close(tg_s_grad(p), 1.5 * sqrt(2.0) / 5.0, 1e-15);
    assert_close(tg_s_grad(q), -pow(2.0, 1.5) / 25.0, 1e-15);
}

static void leaves_accumulate_and_graph_releases(void **state)
{
    fixture *f = *state;
    tg_scalar x = tg_s_var(f->tp, 3.0);
    tg_scalar y = tg_s_mul(x, x);
    assert_status(tg_s_backward(y, TG_RETAIN_GRAPH), TG_OK);
    assert_status(tg_s_backward(y, 0), TG_OK);
    assert_close(tg_s_grad(x), 12.0, 0); /* 6 + 6 */
    assert_status(tg_s_backward(y, 0), TG_RELEASED);
    assert_contains(tg_tape_error(f->tp), "released");
}

static void constants_and_no_grad_get_no_gradient(void **state)
{
    fixture *f = *state;
    tg_scalar x = tg_s_var(f->tp, 2.0), c = tg_s_const(f->tp, 5.0);
    tg_tape_set_grad(f->tp, false);
    tg_scalar frozen = tg_s_mul(x, x);
    tg_tape_set_grad(f->tp, true);
    tg_scalar y = tg_s_add(tg_s_mul(x, c), frozen);
    assert_status(tg_s_backward(y, 0), TG_OK);
    assert_close(tg_s_value(y), 14.0, 0);
    assert_close(tg_s_grad(x), 5.0, 0);
    assert_close(tg_s_grad(c), 2.0, 0); /* d/dc is still reported, c just does not accumulate */
}

/* Scalars and tensors on one tape, gradients flowing both ways. */
static void conversions(void **state)
{
    fixture *f = *state;
    tg_tensor v = tg_requires_grad(VEC64(f->tp, 1, 2, 3));
    tg_scalar s = tg_s_from(tg_sum_all(tg_mul(v, v))); /* 14 */
    tg_scalar w = tg_s_var(f->tp, 0.5);
    tg_scalar t = tg_s_mul(tg_s_tanh(w), s);
    tg_tensor back = tg_s_tensor(t);             /* 0-d f64 */
    tg_tensor out = tg_sum_all(tg_mul(back, v)); /* tanh(w) * 14 * sum(v) */
    assert_tape_ok(f->tp);
    assert_close(tg_item(out), tanh(0.5) * 14 * 6, 1e-14);
    assert_status(tg_backward(out), TG_OK);
    double g[3];
    tg_read(tg_tensor_grad(v), TG_F64, g, 3);
    /* d/dv_i = tanh(w) * (2 v_i * 6 + 14) */
    assert_close(g[0], tanh(0.5) * (2 * 1 * 6 + 14), 1e-14);
    assert_close(g[2], tanh(0.5) * (2 * 3 * 6 + 14), 1e-14);
    assert_close(tg_s_grad(w), (1 - tanh(0.5) * tanh(0.5)) * 14 * 6, 1e-14);

    /* tg_s_from needs one element. */
    assert_false(tg_s_ok(tg_s_from(v)));
    assert_status(tg_tape_status(f->tp), TG_SHAPE);
}

static void scalar_errors(void **state)
{
    fixture *f = *state;
    tg_scalar none = {0};
    tg_scalar x = tg_s_var(f->tp, 1.0);
    assert_false(tg_s_ok(tg_s_add(x, none)));
    assert_status(tg_tape_status(f->tp), TG_INVALID);
    assert_contains(tg_tape_error(f->tp), "tg_s_add: operand 1 is none");
    /* Errored tape: everything returns error handles, nothing crashes. */
    assert_false(tg_s_ok(tg_s_mul(x, x)));
    assert_true(isnan(tg_s_value(tg_s_exp(x))));
    assert_status(tg_tape_status(f->tp), TG_INVALID); /* the first error stays */
    assert_status(tg_s_backward(x, 0), TG_INVALID);
    tg_tape_reset(f->tp);
    assert_false(tg_s_ok(x)); /* stale */
    tg_scalar y = tg_s_var(f->tp, 2.0);
    assert_status(tg_s_backward(y, TG_CREATE_GRAPH), TG_INVALID);
    /* The handle-carrying ops tolerate a handle with no tape at all. */
    assert_false(tg_s_ok(tg_s_neg(none)));
    assert_true(isnan(tg_s_grad(none)));
}

/* ---- second order: tg_s_gradient and tg_s_hessian ------------------------------------------ */

/* Values without TG_CREATE_GRAPH; the adjoints tg_s_grad reads are left alone. */
static void gradient_values(void **state)
{
    fixture *f = *state;
    tg_scalar a = tg_s_var(f->tp, 1.5), b = tg_s_var(f->tp, -0.5);
    tg_scalar ab = tg_s_mul(a, b);
    tg_scalar y = tg_s_add(tg_s_exp(ab), tg_s_div(a, b)); /* e^(ab) + a/b */
    assert_status(tg_s_backward(y, TG_RETAIN_GRAPH), TG_OK);
    double ga = tg_s_grad(a), gb = tg_s_grad(b), gab = tg_s_grad(ab);
    tg_scalar in[3] = {b, a, ab}, g[3];
    assert_status(tg_s_gradient(y, 3, in, g, TG_RETAIN_GRAPH), TG_OK);
    double e = exp(1.5 * -0.5);
    assert_close(tg_s_value(g[1]), -0.5 * e + 1 / -0.5, 1e-15);
    assert_close(tg_s_value(g[0]), 1.5 * e - 1.5 / 0.25, 1e-15);
    assert_close(tg_s_value(g[2]), e, 1e-15); /* an intermediate as input */
    assert_close(tg_s_value(g[1]), ga, 1e-15);
    /* tg_s_grad still reads what tg_s_backward left. */
    assert_close(tg_s_grad(a), ga, 0);
    assert_close(tg_s_grad(b), gb, 0);
    assert_close(tg_s_grad(ab), gab, 0);
    /* An input the output does not depend on (recorded later) gets 0. */
    tg_scalar late = tg_s_var(f->tp, 3.0), gl;
    assert_status(tg_s_gradient(y, 1, &late, &gl, TG_RETAIN_GRAPH), TG_OK);
    assert_close(tg_s_value(gl), 0, 0);
    /* Without TG_RETAIN_GRAPH the graph is released, like tg_s_backward's. */
    assert_status(tg_s_gradient(y, 1, &a, g, 0), TG_OK);
    assert_status(tg_s_backward(y, 0), TG_RELEASED);
}

typedef struct second_case {
    const char *name;
    unary_fn fn;
    double x;
    double d1, d2; /* analytic first and second derivatives at x */
} second_case;

static tg_scalar pow3(tg_scalar a) { return tg_s_pow(a, 3); }
static tg_scalar pow_half(tg_scalar a) { return tg_s_pow(a, 0.5); }
static tg_scalar pow1(tg_scalar a) { return tg_s_pow(a, 1); }
static tg_scalar pow0(tg_scalar a) { return tg_s_pow(a, 0); }
static tg_scalar pow2(tg_scalar a) { return tg_s_pow(a, 2); }
static tg_scalar pow_m1(tg_scalar a) { return tg_s_pow(a, -1); }
static tg_scalar pow_m2(tg_scalar a) { return tg_s_pow(a, -2); }
static tg_scalar pow_mhalf(tg_scalar a) { return tg_s_pow(a, -0.5); }
static tg_scalar pow_2_5(tg_scalar a) { return tg_s_pow(a, 2.5); }
static tg_scalar addc(tg_scalar a) { return tg_s_addc(a, 2.5); }
static tg_scalar mulc(tg_scalar a) { return tg_s_mulc(a, -3); }

/* d/dx and d2/dx2 of every unary op through two tg_s_gradient calls, against analytic values;
 * and the recorded gradient's value equals the first-order sweep's. */
static void unary_second_derivatives(void **state)
{
    fixture *f = *state;
    double t = tanh(-0.8), sg = 1 / (1 + exp(-0.3));
    const second_case cases[] = {
        {"exp", tg_s_exp, 0.7, exp(0.7), exp(0.7)},
        {"log", tg_s_log, 1.7, 1 / 1.7, -1 / (1.7 * 1.7)},
        {"sqrt", tg_s_sqrt, 2.3, 0.5 / sqrt(2.3), -0.25 * pow(2.3, -1.5)},
        {"sin", tg_s_sin, 0.4, cos(0.4), -sin(0.4)},
        {"cos", tg_s_cos, 0.4, -sin(0.4), -cos(0.4)},
        {"tanh", tg_s_tanh, -0.8, 1 - t * t, -2 * t * (1 - t * t)},
        {"sigmoid", tg_s_sigmoid, 0.3, sg * (1 - sg), sg * (1 - sg) * (1 - 2 * sg)},
        {"relu+", tg_s_relu, 1.2, 1, 0},
        {"relu-", tg_s_relu, -1.2, 0, 0},
        {"abs+", tg_s_abs, 1.3, 1, 0},
        {"abs-", tg_s_abs, -1.3, -1, 0},
        {"neg", tg_s_neg, 0.9, -1, 0},
        {"addc", addc, 0.9, 1, 0},
        {"mulc", mulc, 0.9, -3, 0},
        {"pow3", pow3, -1.1, 3 * 1.21, 6 * -1.1},
        {"pow0.5", pow_half, 2.0, 0.5 / sqrt(2.0), -0.25 * pow(2.0, -1.5)},
        {"pow1", pow1, 2.0, 1, 0},
        {"pow0", pow0, 2.0, 0, 0},
        {"pow2", pow2, -1.3, 2 * -1.3, 2},
        {"pow-1", pow_m1, 1.7, -1 / (1.7 * 1.7), 2 / (1.7 * 1.7 * 1.7)},
        {"pow-2", pow_m2, 1.7, -2 / pow(1.7, 3), 6 / pow(1.7, 4)},
        {"pow-0.5", pow_mhalf, 2.0, -0.5 * pow(2.0, -1.5), 0.75 * pow(2.0, -2.5)},
        {"pow2.5", pow_2_5, 1.9, 2.5 * pow(1.9, 1.5), 3.75 * pow(1.9, 0.5)},
    };
    double worst = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_tape_reset(f->tp);
        tg_scalar x = tg_s_var(f->tp, cases[i].x), g = {0}, h = {0};
        tg_scalar y = cases[i].fn(x);
        if (tg_s_gradient(y, 1, &x, &g, TG_CREATE_GRAPH) != TG_OK
            || tg_s_gradient(g, 1, &x, &h, TG_RETAIN_GRAPH) != TG_OK)
            fail_msg("%s: %s", cases[i].name, tg_tape_error(f->tp));
        assert_status(tg_s_backward(y, 0), TG_OK);
        if (fabs(tg_s_value(g) - cases[i].d1) > 1e-14 * (1 + fabs(cases[i].d1))
            || tg_s_value(g) != tg_s_grad(x))
            fail_msg("%s: first derivative %.17g (sweep %.17g), expected %.17g", cases[i].name,
                     tg_s_value(g), tg_s_grad(x), cases[i].d1);
        double err = fabs(tg_s_value(h) - cases[i].d2) / (1 + fabs(cases[i].d2));
        worst = fmax(worst, err);
        if (err > 1e-14)
            fail_msg("%s: second derivative %.17g, expected %.17g", cases[i].name, tg_s_value(h),
                     cases[i].d2);
    }
    printf("unary second derivatives: worst relative error %.3g\n", worst);
}

/* tg_s_pow's value as PyTorch's CPU kernel computes it: the exponents it special-cases by
 * products, reciprocals and square roots (so a^3 is (a * a) * a, not the correctly rounded cube
 * pow gives), the others by pow. */
static void pow_values(void **state)
{
    fixture *f = *state;
    const double x = 1.014000001; /* (x * x) * x differs from pow(x, 3) in the last bit */
    const struct {
        double c, want;
    } cases[] = {{2, x * x},         {3, x * x * x},      {-1, 1 / x}, {-2, 1 / (x * x)},
                 {0.5, sqrt(x)},     {-0.5, 1 / sqrt(x)}, {1, x},      {0, 1},
                 {2.5, pow(x, 2.5)}, {-3, pow(x, -3)}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_tape_reset(f->tp);
        double got = tg_s_value(tg_s_pow(tg_s_var(f->tp, x), cases[i].c));
        if (got != cases[i].want)
            fail_msg("pow(x, %g) = %.17g, expected %.17g", cases[i].c, got, cases[i].want);
    }
    assert_true(x * x * x != pow(x, 3)); /* the case tells the two apart */
}

typedef tg_scalar (*binary_fn)(tg_scalar, tg_scalar);

/* The 2x2 Hessian of each binary op through tg_s_hessian, against analytic values. */
static void binary_hessians(void **state)
{
    fixture *f = *state;
    double a = 1.7, b = -0.6;
    static const struct {
        const char *name;
        binary_fn fn;
    } ops[] = {{"add", tg_s_add}, {"sub", tg_s_sub}, {"mul", tg_s_mul}, {"div", tg_s_div}};
    const double want[4][4] = {
        {0, 0, 0, 0},
        {0, 0, 0, 0},
        {0, 1, 1, 0},
        {0, -1 / (b * b), -1 / (b * b), 2 * a / (b * b * b)},
    };
    for (int k = 0; k < 4; k++) {
        tg_tape_reset(f->tp);
        tg_scalar in[2] = {tg_s_var(f->tp, a), tg_s_var(f->tp, b)};
        double h[4];
        assert_status(tg_s_hessian(ops[k].fn(in[0], in[1]), 2, in, h), TG_OK);
        for (int i = 0; i < 4; i++)
            if (fabs(h[i] - want[k][i]) > 1e-14 * (1 + fabs(want[k][i])))
                fail_msg("%s: H[%d] = %.17g, expected %.17g", ops[k].name, i, h[i], want[k][i]);
    }
    /* The same operand twice: x * x and x / x. */
    tg_tape_reset(f->tp);
    tg_scalar x = tg_s_var(f->tp, a), g, h;
    assert_status(tg_s_gradient(tg_s_mul(x, x), 1, &x, &g, TG_CREATE_GRAPH), TG_OK);
    assert_status(tg_s_gradient(g, 1, &x, &h, 0), TG_OK);
    assert_close(tg_s_value(g), 2 * a, 1e-15);
    assert_close(tg_s_value(h), 2, 1e-15);
    assert_status(tg_s_gradient(tg_s_div(x, x), 1, &x, &g, TG_CREATE_GRAPH), TG_OK);
    assert_status(tg_s_gradient(g, 1, &x, &h, 0), TG_OK);
    assert_close(tg_s_value(g), 0, 1e-15);
    assert_close(tg_s_value(h), 0, 1e-15);
}

/* Rosenbrock on n = 6 scalars, as the scalar benchmark records it. */
static tg_scalar rosenbrock_s(tg_tape *tp, const tg_scalar *x, int n)
{
    tg_scalar acc = tg_s_const(tp, 0.0);
    for (int i = 0; i + 1 < n; i++) {
        tg_scalar d = tg_s_sub(x[i + 1], tg_s_mul(x[i], x[i]));
        tg_scalar e = tg_s_addc(tg_s_neg(x[i]), 1.0);
        acc = tg_s_add(acc, tg_s_add(tg_s_mulc(tg_s_mul(d, d), 100.0), tg_s_mul(e, e)));
    }
    return acc;
}

static void hessian_rosenbrock(void **state)
{
    fixture *f = *state;
    enum { N = 6 };
    double xs[N], want[N * N] = {0}, h[N * N], worst = 0;
    tg_scalar x[N];
    for (int i = 0; i < N; i++) {
        xs[i] = 0.3 * sin(1.0 + i) + 0.5;
        x[i] = tg_s_var(f->tp, xs[i]);
    }
    for (int i = 0; i < N - 1; i++) {
        want[i * N + i] += 1200 * xs[i] * xs[i] - 400 * xs[i + 1] + 2;
        want[(i + 1) * N + i + 1] += 200;
        want[i * N + i + 1] += -400 * xs[i];
        want[(i + 1) * N + i] += -400 * xs[i];
    }
    assert_status(tg_s_hessian(rosenbrock_s(f->tp, x, N), N, x, h), TG_OK);
    for (int i = 0; i < N * N; i++) {
        assert_close(h[i], want[i], 1e-13);
        worst = fmax(worst, fabs(h[i] - want[i]) / (1 + fabs(want[i])));
    }
    printf("rosenbrock n=6 Hessian: worst relative error %.3g\n", worst);
}

/* Every scalar op in one function of three variables. */
static tg_scalar everything(tg_tape *tp, const tg_scalar *x)
{
    tg_scalar a = x[0], b = x[1], c = x[2];
    tg_scalar t1 = tg_s_mul(tg_s_sin(a), tg_s_cos(b));                       /* mul sin cos */
    tg_scalar t2 = tg_s_div(tg_s_exp(tg_s_mulc(c, 0.5)), tg_s_addc(b, 3.0)); /* div exp mulc addc */
    tg_scalar t3 =
        tg_s_log(tg_s_add(tg_s_pow(a, 2.5), tg_s_sqrt(tg_s_abs(c)))); /* log pow sqrt abs */
    tg_scalar t4 = tg_s_tanh(tg_s_sub(tg_s_mul(a, b), c));            /* tanh sub */
    tg_scalar t5 = tg_s_sigmoid(tg_s_neg(tg_s_mul(b, c)));            /* sigmoid neg */
    tg_scalar t6 = tg_s_relu(tg_s_mul(a, tg_s_mul(b, c)));            /* relu */
    tg_scalar t7 = tg_s_mul(tg_s_const(tp, 0.25), tg_s_mul(t1, t4));
    return tg_s_add(tg_s_add(tg_s_add(t1, t2), tg_s_add(t3, t4)),
                    tg_s_add(tg_s_add(t5, tg_s_mul(t6, t6)), t7));
}

/* Its Hessian against central differences of its tg_s_gradient. */
static void hessian_of_every_op(void **state)
{
    fixture *f = *state;
    const double x0[3] = {0.8, -0.7, -1.1};
    tg_scalar x[3];
    for (int i = 0; i < 3; i++)
        x[i] = tg_s_var(f->tp, x0[i]);
    double h[9], worst = 0, eps = 1e-5;
    assert_status(tg_s_hessian(everything(f->tp, x), 3, x, h), TG_OK);
    for (int j = 0; j < 3; j++) {
        double gp[3], gm[3];
        for (int s = 0; s < 2; s++) {
            tg_tape_reset(f->tp);
            for (int i = 0; i < 3; i++)
                x[i] = tg_s_var(f->tp, x0[i] + (i == j ? (s ? -eps : eps) : 0));
            tg_scalar g[3];
            assert_status(tg_s_gradient(everything(f->tp, x), 3, x, g, 0), TG_OK);
            for (int i = 0; i < 3; i++)
                (s ? gm : gp)[i] = tg_s_value(g[i]);
        }
        for (int i = 0; i < 3; i++) {
            double fd = (gp[i] - gm[i]) / (2 * eps);
            assert_close(h[i * 3 + j], fd, 1e-7);
            worst = fmax(worst, fabs(h[i * 3 + j] - fd) / (1 + fabs(fd)));
        }
    }
    for (int i = 0; i < 3; i++) /* symmetric, as a Hessian must be */
        for (int j = 0; j < i; j++)
            assert_close(h[i * 3 + j], h[j * 3 + i], 1e-12);
    printf("every-op Hessian: worst relative difference from central differences %.3g\n", worst);
}

/* Third derivatives by nesting: d3/dx3 of x^2 sin(x). */
static void third_derivative_scalar(void **state)
{
    fixture *f = *state;
    double xv = 0.9;
    tg_scalar x = tg_s_var(f->tp, xv), g1, g2, g3;
    tg_scalar y = tg_s_mul(tg_s_mul(x, x), tg_s_sin(x));
    assert_status(tg_s_gradient(y, 1, &x, &g1, TG_CREATE_GRAPH), TG_OK);
    assert_status(tg_s_gradient(g1, 1, &x, &g2, TG_CREATE_GRAPH), TG_OK);
    assert_status(tg_s_gradient(g2, 1, &x, &g3, 0), TG_OK);
    double s = sin(xv), c = cos(xv);
    assert_close(tg_s_value(g1), 2 * xv * s + xv * xv * c, 1e-15);
    assert_close(tg_s_value(g2), 2 * s + 4 * xv * c - xv * xv * s, 1e-14);
    assert_close(tg_s_value(g3), 6 * c - 6 * xv * s - xv * xv * c, 1e-14);
}

/* tg_s_gradient through tensor ops: scalar -> tensor -> scalar, twice differentiated. */
static void gradient_through_tensors(void **state)
{
    fixture *f = *state;
    double xv = 0.6;
    tg_scalar x = tg_s_var(f->tp, xv), g, h;
    tg_tensor v = tg_mul(VEC64(f->tp, 1, 2, 3), tg_s_tensor(x));  /* [x, 2x, 3x] */
    tg_scalar y = tg_s_mul(tg_s_from(tg_sum_all(tg_tanh(v))), x); /* x sum tanh(k x) */
    assert_status(tg_s_gradient(y, 1, &x, &g, TG_CREATE_GRAPH), TG_OK);
    assert_status(tg_s_gradient(g, 1, &x, &h, TG_RETAIN_GRAPH), TG_OK);
    double d1 = 0, d2 = 0;
    for (int k = 1; k <= 3; k++) {
        double t = tanh(k * xv), dt = k * (1 - t * t), ddt = -2 * k * t * dt;
        d1 += t + xv * dt;
        d2 += 2 * dt + xv * ddt;
    }
    assert_close(tg_s_value(g), d1, 1e-14);
    assert_close(tg_s_value(h), d2, 1e-14);
    double hess;
    assert_status(tg_s_hessian(y, 1, &x, &hess), TG_OK);
    assert_close(hess, d2, 1e-14);
}

static void gradient_errors(void **state)
{
    fixture *f = *state;
    tg_tape *tp = f->tp;
    tg_scalar x = tg_s_var(tp, 1.0), y = tg_s_mul(x, x), none = {0}, g[2];
    double h[4] = {1, 2, 3, 4};
    assert_status(tg_s_gradient(y, 0, &x, g, 0), TG_INVALID);
    assert_contains(tg_tape_error(tp), "tg_s_gradient: needs n >= 1");
    tg_tape_reset(tp);
    x = tg_s_var(tp, 1.0);
    y = tg_s_mul(x, x);
    assert_status(tg_s_gradient(y, 1, NULL, g, 0), TG_INVALID);
    tg_tape_reset(tp);
    x = tg_s_var(tp, 1.0);
    y = tg_s_mul(x, x);
    assert_status(tg_s_gradient(y, 1, &x, NULL, 0), TG_INVALID);
    tg_tape_reset(tp);
    x = tg_s_var(tp, 1.0);
    y = tg_s_mul(x, x);
    assert_status(tg_s_gradient(y, 2, (tg_scalar[]){x, none}, g, 0), TG_INVALID);
    assert_contains(tg_tape_error(tp), "tg_s_gradient: input 1 is none");
    assert_false(tg_s_ok(g[0]));
    tg_scalar stale = x;
    tg_tape_reset(tp);
    x = tg_s_var(tp, 1.0);
    y = tg_s_mul(x, x);
    assert_status(tg_s_gradient(y, 1, &stale, g, 0), TG_STALE);
    assert_contains(tg_tape_error(tp), "stale");
    tg_tape_reset(tp);
    x = tg_s_var(tp, 1.0);
    y = tg_s_mul(x, x);
    assert_status(tg_s_gradient(y, 1, &x, g, 16), TG_INVALID);
    assert_contains(tg_tape_error(tp), "unknown flags");
    tg_tape_reset(tp);
    x = tg_s_var(tp, 1.0);
    y = tg_s_mul(x, x);
    assert_status(tg_s_hessian(y, 1, &x, NULL), TG_INVALID);
    tg_tape_reset(tp);
    assert_status(tg_s_gradient(none, 1, &x, g, 0), TG_INVALID); /* no tape: nothing recorded */
    assert_status(tg_s_hessian(none, 1, &x, h), TG_INVALID);
    /* A released graph: the recorded sweep reports it too; the Hessian is NaN-filled. */
    x = tg_s_var(tp, 1.0);
    y = tg_s_mul(x, x);
    assert_status(tg_s_backward(y, 0), TG_OK);
    assert_status(tg_s_hessian(y, 1, &x, h), TG_RELEASED);
    assert_true(isnan(h[0]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(micrograd_sanity_check),
        FIXTURE_TEST(micrograd_more_ops),
        FIXTURE_TEST(unary_ops),
        FIXTURE_TEST(leaves_accumulate_and_graph_releases),
        FIXTURE_TEST(constants_and_no_grad_get_no_gradient),
        FIXTURE_TEST(conversions),
        FIXTURE_TEST(scalar_errors),
        FIXTURE_TEST(gradient_values),
        FIXTURE_TEST(unary_second_derivatives),
        FIXTURE_TEST(pow_values),
        FIXTURE_TEST(binary_hessians),
        FIXTURE_TEST(hessian_rosenbrock),
        FIXTURE_TEST(hessian_of_every_op),
        FIXTURE_TEST(third_derivative_scalar),
        FIXTURE_TEST(gradient_through_tensors),
        FIXTURE_TEST(gradient_errors),
    };
    return cmocka_run_group_tests_name("scalar", tests, NULL, NULL);
}
