/* test_gradcheck.c — every op in the registry passes a finite-difference gradient check on each
 * of its example cases (f64), first and second order (the recorded backward differentiated
 * again), and its f32 kernels agree with the f64 ones, forward and backward (index outputs
 * exactly). The list of ops comes from the registry itself: a new op without a passing example
 * fails. An op that narrows its f64 inputs to an f32 output (cast) is checked through a cast back
 * to f64, with a step that f32 represents exactly (see check_op). */
#include "common.h"

static tg_ctx *ctx;
/* The worst second-order check over the registry, reported at the end. */
static tg_gradcheck_result worst2;
static const char *worst2_op = "none";
static int ops2;

typedef struct call {
    const tg_op *op;
    const void *attr;
} call;

/* The op on the gradient check's f64 inputs; an output the op narrows to f32 (cast) is cast
 * back, since tg_gradcheck compares in f64. */
static tg_tensor apply(void *user, int n, const tg_tensor *in)
{
    const call *c = user;
    tg_tensor y = tg_op_apply(c->op, n, in, c->attr);
    return tg_tensor_dtype(y) == TG_F32 ? tg_cast(y, TG_F64) : y;
}

/* The op on f32 copies of the inputs agrees with the op on the f64 inputs. */
static void check_f32(tg_tape *tp, const tg_op *op, const void *attr, int n, tg_tensor *in64)
{
    tg_tensor in32[8];
    int nfloat = 0;
    for (int i = 0; i < n; i++) {
        if (tg_tensor_dtype(in64[i]) != TG_F64) {
            in32[i] = in64[i];
            continue;
        }
        nfloat++;
        int64_t count = tg_numel(in64[i]);
        float *buf = malloc((size_t)(count ? count : 1) * sizeof *buf);
        assert_non_null(buf);
        assert_status(tg_read(in64[i], TG_F32, buf, count), TG_OK);
        in32[i] = tg_tensor_from(tp, TG_F32, tg_ndim(in64[i]), tg_shape(in64[i]), buf);
        free(buf);
    }
    tg_tensor y64 = tg_op_apply(op, n, in64, attr), y32 = tg_op_apply(op, n, in32, attr);
    assert_tape_ok(tp);
    /* An op whose output follows its inputs gives f32 here; one that sets its output's dtype
     * (cast) gives the same dtype in both runs. An index output (argmax, topk, ...) is i64 in
     * both runs and must match exactly. */
    tg_dtype out64 = tg_tensor_dtype(y64);
    bool index = out64 == TG_I64;
    assert_int_equal(tg_tensor_dtype(y32), out64 == TG_F64 ? TG_F32 : out64);
    int64_t count = tg_numel(y64);
    assert_int_equal(tg_numel(y32), count);
    double *a = malloc((size_t)(count ? count : 1) * sizeof *a);
    double *b = malloc((size_t)(count ? count : 1) * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    tg_read(y64, TG_F64, a, count);
    tg_read(y32, TG_F64, b, count);
    for (int64_t i = 0; i < count; i++)
        if (index ? a[i] != b[i] : !(fabs(a[i] - b[i]) <= 1e-4 * (1 + fabs(a[i]))))
            fail_msg("%s: f32 output[%lld] = %.9g, f64 gives %.9g", tg_op_def_of(op)->name,
                     (long long)i, b[i], a[i]);
    free(a);
    free(b);
    if (!nfloat || (tg_op_def_of(op)->flags & TG_OP_NONDIFF))
        return;

    /* Gradients of <r, y> in both precisions. */
    tg_tensor r64 = tg_normal(tp, out64, tg_ndim(y64), tg_shape(y64), 0, 1, 99);
    tg_tensor r32 = tg_normal(tp, tg_tensor_dtype(y32), tg_ndim(y32), tg_shape(y32), 0, 1, 99);
    tg_tensor g64[8], g32[8];
    assert_status(tg_grad(1, &y64, &r64, n, in64, g64, 0), TG_OK);
    assert_status(tg_grad(1, &y32, &r32, n, in32, g32, 0), TG_OK);
    for (int i = 0; i < n; i++) {
        if (tg_tensor_dtype(in64[i]) != TG_F64)
            continue;
        int64_t m = tg_numel(g64[i]);
        double *p = malloc((size_t)(m ? m : 1) * sizeof *p),
               *q = malloc((size_t)(m ? m : 1) * sizeof *q);
        assert_non_null(p);
        assert_non_null(q);
        tg_read(g64[i], TG_F64, p, m);
        tg_read(g32[i], TG_F64, q, m);
        for (int64_t e = 0; e < m; e++)
            if (!(fabs(p[e] - q[e]) <= 1e-3 * (1 + fabs(p[e]))))
                fail_msg("%s: f32 gradient of input %d [%lld] = %.9g, f64 gives %.9g",
                         tg_op_def_of(op)->name, i, (long long)e, q[e], p[e]);
        free(p);
        free(q);
    }
}

static void check_op(void **state)
{
    const tg_op *op = *state;
    const tg_op_def *d = tg_op_def_of(op);
    tg_tape *tp;
    assert_status(tg_tape_new(ctx, &tp), TG_OK);
    bool differentiable = !(d->flags & TG_OP_NONDIFF);
    if (differentiable && !d->backward && !d->backward_kernel)
        fail_msg("op %s has no backward rule", d->name);
    if (!d->example)
        fail_msg("op %s has no example cases for the gradient check", d->name);
    int cases = 0;
    for (int c = 0;; c++) {
        tg_tape_reset(tp);
        tg_tensor in[8];
        unsigned char attr[512];
        memset(attr, 0, sizeof attr);
        assert_true(d->attr_size <= sizeof attr);
        int n = d->example(tp, c, in, attr);
        if (n == 0)
            break;
        assert_tape_ok(tp);
        assert_true(n <= 8);
        cases++;
        if (differentiable) {
            call cl = {op, attr};
            tg_gradcheck_result r;
            /* An op that narrows f64 to f32 (cast) rounds away a step of 1e-6: its examples
             * hold values that f32 represents at a step of 2^-10 too, and that step is used. */
            tg_gradcheck_options o1 = {0};
            if (tg_tensor_dtype(tg_op_apply(op, n, in, attr)) == TG_F32)
                o1.eps = 0x1p-10;
            tg_status st = tg_gradcheck(ctx, apply, &cl, n, in, &o1, &r);
            if (st != TG_OK)
                fail_msg("%s case %d: gradcheck failed to run: %s", d->name, c, tg_ctx_error(ctx));
            if (!r.passed)
                fail_msg("%s case %d: input %d element %lld: analytic %.10g, numeric %.10g "
                         "(error %.3g)",
                         d->name, c, r.input, (long long)r.index, r.analytic, r.numeric, r.error);
            assert_true(r.checked > 0);
            /* Second order: differences of the first-order gradient through the recorded
             * backward. */
            tg_gradcheck_options o2 = {.eps = o1.eps, .order = 2};
            st = tg_gradcheck(ctx, apply, &cl, n, in, &o2, &r);
            if (!d->backward) { /* a kernel backward is first order only: a clear refusal */
                if (st != TG_FIRST_ORDER)
                    fail_msg("%s: second order through a kernel backward gave %s, not "
                             "TG_FIRST_ORDER",
                             d->name, tg_status_name(st));
            } else {
                if (st != TG_OK)
                    fail_msg("%s case %d: second-order gradcheck failed to run: %s", d->name, c,
                             tg_ctx_error(ctx));
                if (!r.passed)
                    fail_msg("%s case %d: second order: input %d element %lld: analytic %.10g, "
                             "numeric %.10g (error %.3g)",
                             d->name, c, r.input, (long long)r.index, r.analytic, r.numeric,
                             r.error);
                if (r.error > worst2.error) {
                    worst2 = r;
                    worst2_op = d->name;
                }
                ops2 += c == 0;
            }
        }
        check_f32(tp, op, attr, n, in);
    }
    if (cases == 0)
        fail_msg("op %s has no example cases", d->name);
    tg_tape_free(tp);
}

int main(void)
{
    if (tg_ctx_new(&ctx, NULL) != TG_OK)
        return 1;
    size_t n = tg_op_count(ctx);
    struct CMUnitTest *tests = calloc(n, sizeof *tests);
    if (!tests)
        return 1;
    for (size_t i = 0; i < n; i++) {
        tests[i].name = tg_op_def_of(tg_op_at(ctx, i))->name;
        tests[i].test_func = check_op;
        tests[i].initial_state = (void *)tg_op_at(ctx, i);
    }
    int failed = _cmocka_run_group_tests("gradcheck", tests, n, NULL, NULL);
    printf("second order: %d differentiable ops checked; worst %s (input %d [%lld]: analytic "
           "%.10g, numeric %.10g, error %.3g of the tolerance)\n",
           ops2, worst2_op, worst2.input, (long long)worst2.index, worst2.analytic, worst2.numeric,
           worst2.error);
    free(tests);
    tg_ctx_free(ctx);
    return failed;
}
