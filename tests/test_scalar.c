/* test_scalar.c — the scalar API: micrograd's two engine tests (its published values), every
 * scalar op's value and derivative, conversions to and from tensors, release semantics. */
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
    };
    return cmocka_run_group_tests_name("scalar", tests, NULL, NULL);
}
