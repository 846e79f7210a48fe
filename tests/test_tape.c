/* test_tape.c — tensors, parameters, the tape's lifecycle and the backward driver's semantics:
 * accumulation, broadcasting, seeds, retain/release, functional gradients, no-grad, detach,
 * deep chains without recursion. */
#include "common.h"

static void creation_and_reading(void **state)
{
    fixture *f = *state;
    int64_t shape[] = {2, 3};
    tg_tensor a = tg_tensor_from(f->tp, TG_F32, 2, shape, (float[]){1, 2, 3, 4, 5, 6});
    assert_true(tg_ok(a));
    assert_int_equal(tg_ndim(a), 2);
    assert_int_equal(tg_numel(a), 6);
    assert_int_equal(tg_dim(a, -1), 3);
    assert_int_equal(tg_dim(a, 0), 2);
    assert_int_equal(tg_dim(a, 2), -1);
    assert_int_equal(tg_tensor_dtype(a), TG_F32);
    double d[6];
    assert_status(tg_read(a, TG_F64, d, 6), TG_OK);
    assert_close(d[5], 6.0, 0);
    assert_status(tg_read(a, TG_F64, d, 5), TG_RANGE);

    tg_tensor z = tg_zeros(f->tp, TG_F64, 2, shape), o = tg_ones(f->tp, TG_F64, 0, NULL);
    tg_tensor fl = tg_full(f->tp, TG_F32, 1, (int64_t[]){4}, 2.5);
    assert_close(tg_item(tg_sum_all(z)), 0.0, 0);
    assert_close(tg_item(o), 1.0, 0);
    assert_close(tg_item(tg_sum_all(fl)), 10.0, 0);
    assert_true(isnan(tg_item(a))); /* not one element */

    /* Up to TG_MAX_DIMS dims; more is a clear error. */
    int64_t s8[8] = {1, 2, 1, 2, 1, 2, 1, 2};
    assert_int_equal(tg_numel(tg_ones(f->tp, TG_F32, 8, s8)), 16);
    assert_tape_ok(f->tp);
    int64_t s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    assert_false(tg_ok(tg_ones(f->tp, TG_F32, 9, s9)));
    assert_status(tg_tape_status(f->tp), TG_SHAPE);
}

static void random_is_seeded(void **state)
{
    fixture *f = *state;
    int64_t n = 10000;
    tg_tensor u1 = tg_uniform(f->tp, TG_F64, 1, &n, -1, 3, 42);
    tg_tensor u2 = tg_uniform(f->tp, TG_F64, 1, &n, -1, 3, 42);
    tg_tensor u3 = tg_uniform(f->tp, TG_F64, 1, &n, -1, 3, 43);
    assert_close(tg_item(tg_max_all(tg_sub(u1, u2))), 0.0, 0);
    assert_true(tg_item(tg_max_all(tg_sub(u1, u3))) > 0.5);
    assert_true(tg_item(tg_min_all(u1)) >= -1.0);
    assert_true(tg_item(tg_max_all(u1)) < 3.0);
    assert_close(tg_item(tg_mean_all(u1)), 1.0, 0.03);
    tg_tensor g = tg_normal(f->tp, TG_F64, 1, &n, 2.0, 0.5, 7);
    double mean = tg_item(tg_mean_all(g));
    double var = tg_item(tg_mean_all(tg_square(tg_add_scalar(g, -mean))));
    assert_close(mean, 2.0, 0.01);
    assert_close(sqrt(var), 0.5, 0.02);
    assert_tape_ok(f->tp);
}

/* d/dx sum(x * x * w) over a broadcast w, with x used twice (fan-in accumulation). */
static void backward_accumulates_and_reduces_broadcast(void **state)
{
    fixture *f = *state;
    tg_param *w;
    assert_status(tg_param_new(f->ctx, "w", TG_F64, 1, (int64_t[]){3}, &w), TG_OK);
    assert_status(tg_param_set(w, (double[]){1, 2, 3}), TG_OK);
    tg_tensor x = tg_requires_grad(
        tg_tensor_from(f->tp, TG_F64, 2, (int64_t[]){2, 3}, (double[]){1, 2, 3, 4, 5, 6}));
    tg_tensor y = tg_sum_all(tg_mul(tg_mul(x, x), tg_param_tensor(f->tp, w)));
    assert_close(tg_item(y), 1 * 1 + 4 * 2 + 9 * 3 + 16 * 1 + 25 * 2 + 36 * 3, 0);
    assert_status(tg_backward(y), TG_OK);
    const double *gw = tg_param_grad(w);
    assert_close(gw[0], 1 + 16, 1e-15); /* dy/dw_j = sum_i x_ij^2 */
    assert_close(gw[1], 4 + 25, 1e-15);
    assert_close(gw[2], 9 + 36, 1e-15);
    double gx[6];
    assert_status(tg_read(tg_tensor_grad(x), TG_F64, gx, 6), TG_OK);
    assert_close(gx[4], 2 * 5 * 2, 1e-15); /* dy/dx = 2 x w */

    /* Parameter gradients accumulate across backward calls until zeroed. */
    tg_tape_reset(f->tp);
    tg_tensor y2 = tg_sum_all(tg_param_tensor(f->tp, w));
    assert_status(tg_backward(y2), TG_OK);
    assert_close(gw[0], 18, 1e-15);
    tg_zero_grad(f->ctx);
    assert_close(gw[0], 0, 0);
}

static void seeds_and_non_scalar_outputs(void **state)
{
    fixture *f = *state;
    tg_tensor x = tg_requires_grad(VEC64(f->tp, 1, 2, 3));
    tg_tensor y = tg_mul(x, x);
    assert_status(tg_backward(y), TG_NOT_SCALAR);
    assert_contains(tg_tape_error(f->tp), "not a scalar");
    tg_tape_reset(f->tp);
    x = tg_requires_grad(VEC64(f->tp, 1, 2, 3));
    y = tg_mul(x, x);
    assert_status(tg_backward_ex(y, VEC64(f->tp, 1, 10, 100), 0), TG_OK);
    double g[3];
    tg_read(tg_tensor_grad(x), TG_F64, g, 3);
    assert_close(g[0], 2, 0);
    assert_close(g[1], 40, 0);
    assert_close(g[2], 600, 0);
    /* A seed of the wrong shape is an error. */
    tg_tape_reset(f->tp);
    x = tg_requires_grad(VEC64(f->tp, 1, 2, 3));
    assert_status(tg_backward_ex(tg_mul(x, x), VEC64(f->tp, 1, 2), 0), TG_SHAPE);
}

static void retain_and_release(void **state)
{
    fixture *f = *state;
    tg_tensor x = tg_requires_grad(VEC64(f->tp, 3));
    tg_tensor y = tg_sum_all(tg_mul(x, tg_mul(x, x)));
    assert_status(tg_backward_ex(y, (tg_tensor){0}, TG_RETAIN_GRAPH), TG_OK);
    assert_status(tg_backward(y), TG_OK); /* the graph was retained */
    assert_close(tg_item(tg_tensor_grad(x)), 2 * 27, 1e-15);
    assert_status(tg_backward(y), TG_RELEASED);
    assert_contains(tg_tape_error(f->tp), "released");
    /* After a reset the tape works again. */
    tg_tape_reset(f->tp);
    x = tg_requires_grad(VEC64(f->tp, 3));
    assert_status(tg_backward(tg_sum_all(tg_mul(x, x))), TG_OK);
    assert_close(tg_item(tg_tensor_grad(x)), 6, 0);
}

static void functional_grad_touches_no_parameter(void **state)
{
    fixture *f = *state;
    tg_param *w;
    tg_param_new(f->ctx, "w", TG_F64, 0, NULL, &w);
    tg_param_fill(w, 2.0);
    tg_tensor x = VEC64(f->tp, 1, 2);
    tg_tensor wt = tg_param_tensor(f->tp, w);
    tg_tensor h = tg_mul(x, wt); /* an intermediate can be an input too */
    tg_tensor y = tg_sum_all(tg_mul(h, h));
    tg_tensor ins[3] = {x, wt, h}, grads[3];
    assert_status(tg_grad(1, &y, NULL, 3, ins, grads, 0), TG_OK);
    double gx[2], gh[2];
    tg_read(grads[0], TG_F64, gx, 2);
    tg_read(grads[2], TG_F64, gh, 2);
    assert_close(gx[1], 2 * 2 * 2 * 2, 0); /* d/dx (w x)^2 = 2 w^2 x */
    assert_close(tg_item(grads[1]), 2 * 2 * (1 + 4), 0);
    assert_close(gh[0], 2 * 2, 0);
    assert_close(((const double *)tg_param_grad(w))[0], 0, 0);

    /* An input the outputs do not depend on gets zeros of its shape. */
    tg_tensor unused = VEC64(f->tp, 5, 6, 7), g2;
    tg_tensor y2 = tg_sum_all(tg_square(VEC64(f->tp, 1.0)));
    assert_status(tg_grad(1, &y2, NULL, 1, &unused, &g2, 0), TG_OK);
    assert_int_equal(tg_numel(g2), 3);
    assert_close(tg_item(tg_sum_all(g2)), 0, 0);
}

/* Several outputs, one recorded before every input: it cannot depend on them, so it adds
 * nothing (it used to be seeded outside the gradient-slot array). */
static void functional_grad_output_before_inputs(void **state)
{
    fixture *f = *state;
    int64_t three[] = {3};
    tg_tensor a = tg_sum_all(tg_ones(f->tp, TG_F64, 1, three));
    tg_tensor x = tg_tensor_from(f->tp, TG_F64, 1, three, (double[]){1, 2, 3});
    tg_tensor b = tg_sum_all(tg_mul(x, x));
    tg_tensor outs[2] = {a, b}, g;
    assert_status(tg_grad(2, outs, NULL, 1, &x, &g, 0), TG_OK);
    double gx[3];
    assert_status(tg_read(g, TG_F64, gx, 3), TG_OK);
    for (int i = 0; i < 3; i++)
        assert_close(gx[i], 2.0 * (i + 1), 0);
    /* Its seed is still checked. */
    tg_tensor seeds[2] = {VEC64(f->tp, 1, 2), tg_ones(f->tp, TG_F64, 0, NULL)};
    assert_status(tg_grad(2, outs, seeds, 1, &x, &g, 0), TG_SHAPE);
    /* Every output before every input: zeros, also with the outputs' seeds checked. */
    tg_tape_reset(f->tp);
    a = tg_sum_all(tg_ones(f->tp, TG_F64, 1, three));
    x = VEC64(f->tp, 1, 2);
    assert_status(tg_grad(1, &a, NULL, 1, &x, &g, 0), TG_OK);
    assert_close(tg_item(tg_sum_all(g)), 0, 0);
    tg_tensor wide = tg_ones(f->tp, TG_F64, 1, three);
    assert_status(tg_grad(1, &wide, NULL, 1, &x, &g, 0), TG_NOT_SCALAR);
}

static void no_grad_and_detach(void **state)
{
    fixture *f = *state;
    tg_tensor x = tg_requires_grad(VEC64(f->tp, 2));
    bool was = tg_tape_set_grad(f->tp, false);
    assert_true(was);
    tg_tensor y = tg_mul(x, x); /* recorded without a link to x */
    tg_tape_set_grad(f->tp, true);
    tg_tensor z = tg_add(tg_mul(x, tg_detach(x)), y);
    assert_close(tg_item(z), 8, 0);
    assert_status(tg_backward(tg_sum_all(z)), TG_OK);
    assert_close(tg_item(tg_tensor_grad(x)), 2, 0); /* only the undetached factor */
}

static void reset_makes_handles_stale(void **state)
{
    fixture *f = *state;
    tg_tensor x = VEC64(f->tp, 1, 2);
    tg_scalar s = tg_s_var(f->tp, 1.0);
    tg_tape_reset(f->tp);
    assert_false(tg_ok(x));
    assert_false(tg_s_ok(s));
    assert_null(tg_data(x));
    tg_tensor y = tg_add(x, x);
    assert_false(tg_ok(y));
    assert_status(tg_tape_status(f->tp), TG_STALE);
    assert_contains(tg_tape_error(f->tp), "stale");
    tg_tape_reset(f->tp);
    /* A handle from another tape is refused too. */
    tg_tape *other;
    tg_tape_new(f->ctx, &other);
    tg_tensor o = VEC64(other, 1);
    tg_tensor mine = VEC64(f->tp, 1);
    assert_false(tg_ok(tg_add(mine, o)));
    assert_status(tg_tape_status(f->tp), TG_STALE);
    assert_contains(tg_tape_error(f->tp), "another tape");
    tg_tape_free(other);
}

static void reset_reuses_memory(void **state)
{
    fixture *f = *state;
    int64_t shape[] = {64, 64};
    for (int step = 0; step < 5; step++) {
        uint64_t before = tg_ctx_alloc_calls(f->ctx);
        tg_tensor x = tg_requires_grad(tg_uniform(f->tp, TG_F32, 2, shape, -1, 1, 1));
        tg_tensor y = tg_sum_all(tg_mul(tg_matmul(x, x), x));
        assert_status(tg_backward(y), TG_OK);
        uint64_t calls = tg_ctx_alloc_calls(f->ctx) - before;
        tg_tape_reset(f->tp);
        if (step >= 1 && calls != 0)
            fail_msg("step %d made %llu allocator calls", step, (unsigned long long)calls);
    }
}

/* A million-node chain: no recursion anywhere, memory kept sane. */
static void deep_tensor_chain(void **state)
{
    fixture *f = *state;
    tg_tensor x = tg_requires_grad(VEC64(f->tp, 0.5));
    tg_tensor y = x;
    for (int i = 0; i < 1000000; i++)
        y = tg_add_scalar(y, 1e-6);
    assert_tape_ok(f->tp);
    assert_close(tg_item(y), 1.5, 1e-9);
    assert_status(tg_backward(tg_sum_all(y)), TG_OK);
    assert_close(tg_item(tg_tensor_grad(x)), 1.0, 0);
}

static void deep_scalar_chain(void **state)
{
    fixture *f = *state;
    tg_scalar x = tg_s_var(f->tp, 0.3);
    tg_scalar y = x;
    for (int i = 0; i < 1000000; i++)
        y = tg_s_mulc(tg_s_addc(y, 1e-7), 1.0);
    assert_tape_ok(f->tp);
    assert_close(tg_s_value(y), 0.3 + 0.1, 1e-9);
    assert_status(tg_s_backward(y, 0), TG_OK);
    assert_close(tg_s_grad(x), 1.0, 0);
}

static void params_survive_reset(void **state)
{
    fixture *f = *state;
    tg_param *p;
    assert_status(tg_param_new(f->ctx, "bias", TG_F32, 1, (int64_t[]){4}, &p), TG_OK);
    assert_status(tg_param_uniform(p, -1, 1, 5), TG_OK);
    assert_ptr_equal(tg_param_find(f->ctx, "bias"), p);
    assert_int_equal(tg_param_count(f->ctx), 1);
    assert_string_equal(tg_param_name(p), "bias");
    float before[4];
    memcpy(before, tg_param_data(p), sizeof before);
    tg_tape_reset(f->tp);
    tg_tensor t = tg_param_tensor(f->tp, p);
    assert_memory_equal(tg_data(t), before, sizeof before);
    /* Assigning a tape tensor writes the value and bumps the version. */
    uint64_t v = tg_param_version(p);
    assert_status(tg_param_assign(p, tg_mul_scalar(t, 2.0)), TG_OK);
    assert_true(tg_param_version(p) > v);
    assert_close(((const float *)tg_param_data(p))[3], 2 * before[3], 1e-7);
    /* A tape that used the old value refuses to backpropagate. */
    assert_status(tg_backward(tg_sum_all(t)), TG_MODIFIED);
    assert_contains(tg_tape_error(f->tp), "bias");
    /* tg_param_write hands out the value buffer for an in-place write and counts as one. */
    tg_tape_reset(f->tp);
    t = tg_param_tensor(f->tp, p);
    v = tg_param_version(p);
    float *w = tg_param_write(p);
    assert_ptr_equal(w, tg_param_data(p));
    assert_true(tg_param_version(p) > v);
    w[0] = 7.0f;
    assert_close(tg_item(tg_sum_all(tg_slice(t, 0, 0, 1, 1))), 7.0, 0);
    assert_status(tg_backward(tg_sum_all(t)), TG_MODIFIED);
    assert_null(tg_param_write(NULL));
    tg_param_free(p);
    assert_int_equal(tg_param_count(f->ctx), 0);
}

static void shapes_format_and_cut_short(void **state)
{
    (void)state;
    char buf[64];
    int64_t shape[] = {3, 40, 5};
    assert_int_equal(tg_format_shape(buf, sizeof buf, TG_F32, 3, shape), 11);
    assert_string_equal(buf, "f32[3,40,5]");
    assert_int_equal(tg_format_shape(buf, sizeof buf, 0, 0, NULL), 2);
    assert_string_equal(buf, "[]");
    /* Cut short, always terminated, the needed length returned; no write past `size`. */
    memset(buf, 'x', sizeof buf);
    assert_int_equal(tg_format_shape(buf, 6, TG_I64, 3, shape), 11);
    assert_string_equal(buf, "i64[3");
    assert_int_equal(buf[6], 'x');
    assert_int_equal(tg_format_shape(buf, 1, TG_F64, 3, shape), 11);
    assert_string_equal(buf, "");
    assert_int_equal(tg_format_shape(NULL, 0, TG_F64, 1, shape), 6);
    int64_t wide[TG_MAX_DIMS];
    for (int d = 0; d < TG_MAX_DIMS; d++)
        wide[d] = INT64_MIN;
    char big[256];
    int n = tg_format_shape(big, sizeof big, TG_F64, TG_MAX_DIMS, wide);
    assert_int_equal(n, (int)strlen(big));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(creation_and_reading),
        FIXTURE_TEST(random_is_seeded),
        FIXTURE_TEST(backward_accumulates_and_reduces_broadcast),
        FIXTURE_TEST(seeds_and_non_scalar_outputs),
        FIXTURE_TEST(retain_and_release),
        FIXTURE_TEST(functional_grad_touches_no_parameter),
        FIXTURE_TEST(functional_grad_output_before_inputs),
        FIXTURE_TEST(no_grad_and_detach),
        FIXTURE_TEST(reset_makes_handles_stale),
        FIXTURE_TEST(reset_reuses_memory),
        FIXTURE_TEST(deep_tensor_chain),
        FIXTURE_TEST(deep_scalar_chain),
        FIXTURE_TEST(params_survive_reset),
        cmocka_unit_test(shapes_format_and_cut_short),
    };
    return cmocka_run_group_tests_name("tape", tests, NULL, NULL);
}
