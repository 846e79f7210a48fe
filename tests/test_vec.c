/* test_vec.c — the public vector math (tg_vec_map, tg_vec_reduce) gives bit for bit what the
 * built-in ops give, in f32 and f64, at lengths around the vector widths and in place, with and
 * without threads; bad arguments are TG_INVALID with nothing written. */
#include "common.h"

/* Each public map beside the built-in op that runs the same kernel (NULL: a fused backward
 * map, checked against the composition of ops that define it, within a few ulps). */
typedef struct map_case {
    tg_vec_op op;
    const char *name;
    int kind; /* 1: y = f(a), 2: y = f(a, b), 3: y = f(a; c) */
    tg_tensor (*unary)(tg_tensor);
    tg_tensor (*binary)(tg_tensor, tg_tensor);
    tg_tensor (*scalar)(tg_tensor, double);
} map_case;

static tg_tensor max_op(tg_tensor a, tg_tensor b) { return tg_where(tg_gt(b, a), b, a); }
static tg_tensor min_op(tg_tensor a, tg_tensor b) { return tg_where(tg_lt(b, a), b, a); }
static tg_tensor log1p_op(tg_tensor a) { return tg_log(tg_add_scalar(a, 1.0)); }

static const map_case cases[] = {
    {TG_VEC_EXP, "exp", 1, tg_exp, NULL, NULL},
    {TG_VEC_LOG, "log", 1, tg_log, NULL, NULL},
    {TG_VEC_LOG1P, "log1p", 1, log1p_op, NULL, NULL},
    {TG_VEC_SQRT, "sqrt", 1, tg_sqrt, NULL, NULL},
    {TG_VEC_SIN, "sin", 1, tg_sin, NULL, NULL},
    {TG_VEC_COS, "cos", 1, tg_cos, NULL, NULL},
    {TG_VEC_TANH, "tanh", 1, tg_tanh, NULL, NULL},
    {TG_VEC_SIGMOID, "sigmoid", 1, tg_sigmoid, NULL, NULL},
    {TG_VEC_GELU, "gelu", 1, tg_gelu, NULL, NULL},
    {TG_VEC_SOFTPLUS, "softplus", 1, tg_softplus, NULL, NULL},
    {TG_VEC_ADD, "add", 2, NULL, tg_add, NULL},
    {TG_VEC_SUB, "sub", 2, NULL, tg_sub, NULL},
    {TG_VEC_MUL, "mul", 2, NULL, tg_mul, NULL},
    {TG_VEC_DIV, "div", 2, NULL, tg_div, NULL},
    {TG_VEC_MAX, "max", 2, NULL, max_op, NULL},
    {TG_VEC_MIN, "min", 2, NULL, min_op, NULL},
    {TG_VEC_TANH_BACKWARD, "tanh_backward", 2, NULL, NULL, NULL},
    {TG_VEC_SIGMOID_BACKWARD, "sigmoid_backward", 2, NULL, NULL, NULL},
    {TG_VEC_RELU_BACKWARD, "relu_backward", 2, NULL, NULL, NULL},
    {TG_VEC_GELU_BACKWARD, "gelu_backward", 2, NULL, NULL, NULL},
    {TG_VEC_ADD_SCALAR, "add_scalar", 3, NULL, NULL, tg_add_scalar},
    {TG_VEC_MUL_SCALAR, "mul_scalar", 3, NULL, NULL, tg_mul_scalar},
};

/* The fused backward maps as the built-ins compute them: the gradient of
 * <g, f(x)> by x through the op's own backward rule, with b = f(x) (or x for gelu). */
static tg_tensor fused_reference(tg_tape *tp, tg_vec_op op, tg_tensor g, tg_tensor x, tg_tensor *b)
{
    tg_tensor y = op == TG_VEC_TANH_BACKWARD      ? tg_tanh(x)
                  : op == TG_VEC_SIGMOID_BACKWARD ? tg_sigmoid(x)
                  : op == TG_VEC_RELU_BACKWARD    ? tg_relu(x)
                                                  : tg_gelu(x);
    *b = op == TG_VEC_GELU_BACKWARD ? x : y;
    tg_tensor dx;
    assert_status(tg_grad(1, &y, &g, 1, &x, &dx, 0), TG_OK);
    assert_tape_ok(tp);
    return dx;
}

static void maps_match_the_ops(void **state)
{
    fixture *f = *state;
    const int64_t lengths[] = {1, 7, 8, 15, 16, 17, 33, 1000, 70001};
    const tg_dtype dtypes[] = {TG_F32, TG_F64};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int d = 0; d < 2; d++)
            for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
                const map_case *mc = &cases[c];
                tg_dtype dt = dtypes[d];
                int64_t n = lengths[l];
                tg_tape_reset(f->tp);
                bool positive =
                    mc->op == TG_VEC_LOG || mc->op == TG_VEC_SQRT || mc->op == TG_VEC_LOG1P;
                tg_tensor a = tg_uniform(f->tp, dt, 1, &n, positive ? 0.01 : -4, 4, 11 + l);
                tg_tensor b = tg_uniform(f->tp, dt, 1, &n, 0.5, 3, 17 + l);
                tg_tensor want;
                if (mc->unary)
                    want = mc->unary(a);
                else if (mc->binary)
                    want = mc->binary(a, b);
                else if (mc->scalar)
                    want = mc->scalar(a, 0.3);
                else
                    want = fused_reference(f->tp, mc->op, b, a, &a); /* a := f(x) or x */
                assert_tape_ok(f->tp);
                size_t bytes = (size_t)n * tg_dtype_size(dt);
                void *y = malloc(bytes), *inplace = malloc(bytes);
                assert_non_null(y);
                assert_non_null(inplace);
                /* The map's operands: a and b, or for a fused map g (b) and f(x) or x (a). */
                bool fused = !mc->unary && !mc->binary && !mc->scalar;
                tg_tensor ga = fused ? b : a, gb = fused ? a : b;
                const void *in_b = mc->kind == 2 ? tg_data(gb) : NULL;
                int threads = l % 2 ? 2 : 1;
                assert_status(tg_vec_map(mc->op, threads, dt, n, tg_data(ga), in_b, 0.3, y), TG_OK);
                memcpy(inplace, tg_data(ga), bytes);
                assert_status(tg_vec_map(mc->op, threads, dt, n, inplace, in_b, 0.3, inplace),
                              TG_OK);
                bool exact = mc->unary != log1p_op; /* log1p has its own kernel, no op */
                const void *w = tg_data(want);
                for (int64_t i = 0; i < n; i++) {
                    double got = dt == TG_F32 ? ((float *)y)[i] : ((double *)y)[i];
                    double in = dt == TG_F32 ? ((float *)inplace)[i] : ((double *)inplace)[i];
                    double ref = dt == TG_F32 ? ((const float *)w)[i] : ((const double *)w)[i];
                    if (exact ? got != ref : fabs(got - ref) > 1e-6 * (1 + fabs(ref)))
                        fail_msg("%s %s n=%lld [%lld]: %.17g, op %.17g", mc->name,
                                 tg_dtype_name(dt), (long long)n, (long long)i, got, ref);
                    if (in != got)
                        fail_msg("%s in place differs at %lld", mc->name, (long long)i);
                }
                free(y);
                free(inplace);
            }
}

static void reductions_match(void **state)
{
    fixture *f = *state;
    int64_t n = 1001;
    tg_tensor x = tg_uniform(f->tp, TG_F64, 1, &n, -3, 3, 5);
    const double *v = tg_data(x);
    double r, want = 0, mx = -INFINITY, mn = INFINITY, es = 0;
    for (int64_t i = 0; i < n; i++) {
        want += v[i];
        mx = fmax(mx, v[i]);
        mn = fmin(mn, v[i]);
        es += exp(v[i] - 1.5);
    }
    assert_status(tg_vec_reduce(TG_VEC_SUM, TG_F64, n, v, 0, NULL, &r), TG_OK);
    assert_close(r, tg_item(tg_sum_all(x)), 1e-15);
    assert_close(r, want, 1e-13);
    assert_status(tg_vec_reduce(TG_VEC_MAXALL, TG_F64, n, v, 0, NULL, &r), TG_OK);
    assert_true(r == mx);
    assert_status(tg_vec_reduce(TG_VEC_MINALL, TG_F64, n, v, 0, NULL, &r), TG_OK);
    assert_true(r == mn);
    double *y = malloc((size_t)n * sizeof *y);
    assert_status(tg_vec_reduce(TG_VEC_EXP_SUM, TG_F64, n, v, 1.5, y, &r), TG_OK);
    assert_close(r, es, 1e-13);
    assert_close(y[7], exp(v[7] - 1.5), 1e-15);
    free(y);
    assert_status(tg_vec_reduce(TG_VEC_MAXALL, TG_F32, 0, NULL, 0, NULL, &r), TG_OK);
    assert_true(r == -INFINITY);
}

static void bad_arguments(void **state)
{
    (void)state;
    float a[4] = {1, 2, 3, 4}, y[4] = {9, 9, 9, 9};
    double r = 0;
    assert_status(tg_vec_map((tg_vec_op)99, 1, TG_F32, 4, a, a, 0, y), TG_INVALID);
    assert_status(tg_vec_map((tg_vec_op)-1, 1, TG_F32, 4, a, a, 0, y), TG_INVALID);
    assert_status(tg_vec_map(TG_VEC_EXP, 1, TG_I64, 4, a, NULL, 0, y), TG_INVALID);
    assert_status(tg_vec_map(TG_VEC_EXP, 1, TG_F32, -1, a, NULL, 0, y), TG_INVALID);
    assert_status(tg_vec_map(TG_VEC_EXP, 1, TG_F32, 4, NULL, NULL, 0, y), TG_INVALID);
    assert_status(tg_vec_map(TG_VEC_ADD, 1, TG_F32, 4, a, NULL, 0, y), TG_INVALID);
    assert_status(tg_vec_map(TG_VEC_EXP, 1, TG_F32, 4, a, NULL, 0, NULL), TG_INVALID);
    for (int i = 0; i < 4; i++)
        assert_true(y[i] == 9);
    assert_status(tg_vec_map(TG_VEC_EXP, 0, TG_F32, 0, NULL, NULL, 0, NULL), TG_OK);
    assert_status(tg_vec_reduce((tg_vec_reduction)7, TG_F32, 4, a, 0, NULL, &r), TG_INVALID);
    assert_true(isnan(r));
    assert_status(tg_vec_reduce(TG_VEC_SUM, TG_F32, 4, NULL, 0, NULL, &r), TG_INVALID);
    assert_status(tg_vec_reduce(TG_VEC_SUM, TG_F32, 4, a, 0, NULL, NULL), TG_INVALID);
    assert_status(tg_vec_reduce(TG_VEC_SUM, TG_F32, 4, a, 0, NULL, &r), TG_OK);
    assert_true(r == 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST(maps_match_the_ops),
        FIXTURE_TEST(reductions_match),
        FIXTURE_TEST(bad_arguments),
    };
    return cmocka_run_group_tests_name("vec", tests, NULL, NULL);
}
