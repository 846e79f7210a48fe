/* test_normact.c — batch_norm (with its running statistics), rms_norm, silu, gelu_erf, cumsum and
 * cast against PyTorch: values and gradients agree with tests/reference/normact_reference.txt
 * (written by tests/reference/generate_normact.py, format described in generate.py) to 1e-12
 * relative in f64 and 1e-5 in f32 (relative to 1 + |PyTorch's value|); the running statistics
 * after four training steps with momentum 0.1 and 0.3 likewise, then evaluation with them. One
 * batch_norm case (channels at 1e4, spread 1e-2) is held to exact values instead, PyTorch's own
 * being less accurate there (see batch_norm_large_offset). A Hessian-vector product through
 * training-mode batch_norm agrees with finite differences of its gradients; bad inputs give their
 * status and message and leave the running statistics untouched. */
#include "common.h"
#include "reference.h"

#define REF_PATH TG_SOURCE_DIR "/tests/reference/normact_reference.txt"
#define TOL64 1e-12
#define TOL32 1e-5

static int load_refs(void **state)
{
    (void)state;
    return ref_load(REF_PATH, "tests/reference/generate_normact.py");
}

/* A reference tensor as a leaf of dtype dt on tp (f32 values are the f64 ones rounded; i64 ones
 * the integers the file holds). */
static tg_tensor input(tg_tape *tp, const char *graph, const char *name, tg_dtype dt)
{
    const ref_tensor *r = ref(graph, name);
    tg_tensor t64 = tg_tensor_from(tp, TG_F64, r->ndim, r->shape, r->v);
    if (dt == TG_F64)
        return t64;
    void *buf = malloc((size_t)(r->numel ? r->numel : 1) * tg_dtype_size(dt));
    assert_non_null(buf);
    assert_status(tg_read(t64, dt, buf, r->numel), TG_OK);
    tg_tensor t = tg_tensor_from(tp, dt, r->ndim, r->shape, buf);
    free(buf);
    return t;
}

/* The worst |a - b| / (1 + |b|) seen against the reference since the last report. */
static double worst;

/* n values (of dtype dt at data) agree with reference graph.name to tol, relative to 1 + |b|. */
static void expect_values(const char *graph, const char *name, tg_dtype dt, const void *data,
                          int64_t n, double tol)
{
    const ref_tensor *r = ref(graph, name);
    assert_int_equal(n, r->numel);
    for (int64_t i = 0; i < n; i++) {
        double got = dt == TG_F32   ? ((const float *)data)[i]
                     : dt == TG_F64 ? ((const double *)data)[i]
                                    : (double)((const int64_t *)data)[i];
        double err = fabs(got - r->v[i]) / (1 + fabs(r->v[i]));
        if (!(err <= tol))
            fail_msg("%s.%s[%lld] = %.17g, PyTorch %.17g (relative error %.3g > %g)", graph, name,
                     (long long)i, got, r->v[i], err, tol);
        worst = err > worst ? err : worst;
    }
}

/* t agrees with reference graph.name in shape and values. */
static void expect(tg_tensor t, const char *graph, const char *name, double tol)
{
    const ref_tensor *r = ref(graph, name);
    if (!tg_ok(t))
        fail_msg("%s.%s: no tensor (%s)", graph, name, tg_tape_error(tg_tensor_tape(t)));
    assert_int_equal(tg_ndim(t), r->ndim);
    for (int d = 0; d < r->ndim; d++)
        assert_int_equal(tg_dim(t, d), r->shape[d]);
    expect_values(graph, name, tg_tensor_dtype(t), tg_data(t), tg_numel(t), tol);
}

static int setup(void **state)
{
    worst = 0;
    return fixture_setup(state);
}
#define TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, fixture_teardown)

static void report(const char *what, tg_dtype dt)
{
    print_message("%s (%s): worst error vs the reference %.3g\n", what, tg_dtype_name(dt), worst);
    worst = 0;
}

static double tolerance(tg_dtype dt) { return dt == TG_F64 ? TOL64 : TOL32; }

/* ---- the seeded graphs: y = f(inputs), loss = sum(r * y), gradients against the file ------ */

typedef tg_tensor (*graph_fn)(const tg_tensor *in);

/* Reads graph's inputs (names[0..n)), runs f, checks y and every grad_<input>. */
static void check_graph(tg_tape *tp, const char *graph, int n, const char *const *names, graph_fn f,
                        tg_dtype dt)
{
    tg_tape_reset(tp);
    tg_tensor in[4], grads[4];
    for (int i = 0; i < n; i++)
        in[i] = input(tp, graph, names[i], dt);
    tg_tensor y = f(in);
    tg_tensor loss = tg_sum_all(tg_mul(y, input(tp, graph, "r", dt)));
    assert_tape_ok(tp);
    assert_status(tg_grad(1, &loss, NULL, n, in, grads, 0), TG_OK);
    expect(y, graph, "y", tolerance(dt));
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "grad_%s", names[i]);
        expect(grads[i], graph, name, tolerance(dt));
    }
}

static const tg_tensor none;

static tg_tensor bn_affine(const tg_tensor *in)
{
    return tg_batch_norm(in[0], NULL, NULL, in[1], in[2], true, 0.1, 1e-5);
}
static tg_tensor bn_plain(const tg_tensor *in)
{
    return tg_batch_norm(in[0], NULL, NULL, none, none, true, 0.1, 1e-5);
}
static tg_tensor bn_weight(const tg_tensor *in)
{
    return tg_batch_norm(in[0], NULL, NULL, in[1], none, true, 0.1, 1e-5);
}

static void batch_norm_training(void **state)
{
    fixture *f = *state;
    static const char *const affine[] = {"x", "weight", "bias"};
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F32 : TG_F64;
        check_graph(f->tp, "bn2d", 3, affine, bn_affine, dt);
        check_graph(f->tp, "bn2d_plain", 1, affine, bn_plain, dt);
        check_graph(f->tp, "bn4d", 3, affine, bn_affine, dt);
        check_graph(f->tp, "bn3d_weight", 2, affine, bn_weight, dt);
        report("batch_norm training", dt);
    }
}

/* Channels of 1e4 + 1e-2 noise against exact values, to 1e-12 (PyTorch's own are off by 2.2e-10
 * in y and 1.1e-9 in the gradient here): the statistics and x - mean are taken around a shift,
 * and the mean passes to the backward with its rounding remainder. In f32 the check is of the
 * f32 kernels against the f64 ones on the same (rounded) input. */
static void batch_norm_large_offset(void **state)
{
    fixture *f = *state;
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F32 : TG_F64;
        tg_tape_reset(f->tp);
        tg_tensor x = input(f->tp, "bn_offset", "x", TG_F64), g;
        tg_tensor y = tg_batch_norm(x, NULL, NULL, none, none, true, 0.1, 1e-5);
        tg_tensor loss = tg_sum_all(tg_mul(y, input(f->tp, "bn_offset", "r", TG_F64)));
        assert_status(tg_grad(1, &loss, NULL, 1, &x, &g, 0), TG_OK);
        if (dt == TG_F64) {
            expect(y, "bn_offset", "y_exact", TOL64);
            expect(g, "bn_offset", "grad_x_exact", TOL64);
            report("batch_norm at offset 1e4, against exact values", dt);
            continue;
        }
        /* f32 rounds the inputs to 1e-3 (an ulp of 1e4), a tenth of their spread: the f32 run is
         * held to the f64 run on the same rounded inputs. */
        tg_tensor x32 = tg_cast(x, TG_F32);
        tg_tensor y32 = tg_batch_norm(x32, NULL, NULL, none, none, true, 0.1, 1e-5);
        tg_tensor y64 =
            tg_batch_norm(tg_cast(x32, TG_F64), NULL, NULL, none, none, true, 0.1, 1e-5);
        assert_tape_ok(f->tp);
        const float *a = tg_data(y32);
        const double *b = tg_data(y64);
        for (int64_t i = 0; i < tg_numel(y32); i++)
            assert_close(a[i], b[i], TOL32);
    }
}

/* Four training steps per momentum update the running statistics as PyTorch's did; then
 * evaluation with them. The running statistics' versions move with each training step only, and
 * no gradient reaches them. */
static void batch_norm_running_statistics(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *tag;
        double momentum;
    } runs[] = {{"m01", 0.1}, {"m03", 0.3}};
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F32 : TG_F64;
        for (int k = 0; k < 2; k++) {
            tg_param *mean, *var;
            assert_status(tg_param_new(f->ctx, NULL, dt, 1, (int64_t[]){3}, &mean), TG_OK);
            assert_status(tg_param_new(f->ctx, NULL, dt, 1, (int64_t[]){3}, &var), TG_OK);
            tg_param_fill(var, 1); /* PyTorch's initial running_var */
            for (int step = 0; step < 4; step++) {
                char name[32];
                tg_tape_reset(f->tp);
                snprintf(name, sizeof name, "x%d", step);
                tg_tensor x = tg_requires_grad(input(f->tp, "running", name, dt));
                tg_tensor w = input(f->tp, "running", "weight", dt);
                tg_tensor b = input(f->tp, "running", "bias", dt);
                uint64_t version = tg_param_version(mean);
                tg_tensor y = tg_batch_norm(x, mean, var, w, b, true, runs[k].momentum, 1e-5);
                assert_tape_ok(f->tp);
                assert_true(tg_param_version(mean) > version);
                /* The step's backward goes through (the running statistics are on no path). */
                assert_status(tg_backward(tg_sum_all(tg_square(y))), TG_OK);
                snprintf(name, sizeof name, "%s_mean%d", runs[k].tag, step);
                expect_values("running", name, dt, tg_param_data(mean), 3, tolerance(dt));
                snprintf(name, sizeof name, "%s_var%d", runs[k].tag, step);
                expect_values("running", name, dt, tg_param_data(var), 3, tolerance(dt));
            }
            /* Evaluation: values and gradients; the running statistics are constants. */
            char graph[32];
            snprintf(graph, sizeof graph, "eval_%s", runs[k].tag);
            tg_tape_reset(f->tp);
            uint64_t version = tg_param_version(mean);
            tg_tensor in[3] = {tg_requires_grad(input(f->tp, graph, "x", dt)),
                               input(f->tp, graph, "weight", dt), input(f->tp, graph, "bias", dt)};
            tg_tensor y = tg_batch_norm(in[0], mean, var, in[1], in[2], false, 0.1, 1e-5), g[3];
            tg_tensor loss = tg_sum_all(tg_mul(y, input(f->tp, graph, "r", dt)));
            assert_status(tg_grad(1, &loss, NULL, 3, in, g, TG_RETAIN_GRAPH), TG_OK);
            assert_status(tg_backward(loss), TG_OK);
            expect(y, graph, "y", tolerance(dt));
            expect(g[0], graph, "grad_x", tolerance(dt));
            expect(g[1], graph, "grad_weight", tolerance(dt));
            expect(g[2], graph, "grad_bias", tolerance(dt));
            assert_int_equal(tg_param_version(mean), version);
            for (int c = 0; c < 3; c++) {
                double gm = dt == TG_F32 ? ((float *)tg_param_grad(mean))[c]
                                         : ((double *)tg_param_grad(mean))[c];
                double gv = dt == TG_F32 ? ((float *)tg_param_grad(var))[c]
                                         : ((double *)tg_param_grad(var))[c];
                assert_true(gm == 0 && gv == 0);
            }
            tg_param_free(mean);
            tg_param_free(var);
        }
        report("batch_norm running statistics and evaluation", dt);
    }
}

/* ---- rms_norm, activations, cumsum -------------------------------------------------------- */

static tg_tensor rms_weight(const tg_tensor *in) { return tg_rms_norm(in[0], in[1], 1e-5); }
static tg_tensor rms_plain(const tg_tensor *in) { return tg_rms_norm(in[0], none, 1e-5); }
static tg_tensor silu(const tg_tensor *in) { return tg_silu(in[0]); }
static tg_tensor gelu_erf(const tg_tensor *in) { return tg_gelu_erf(in[0]); }
static tg_tensor cumsum0(const tg_tensor *in) { return tg_cumsum(in[0], 0); }
static tg_tensor cumsum1(const tg_tensor *in) { return tg_cumsum(in[0], 1); }
static tg_tensor cumsum_last(const tg_tensor *in) { return tg_cumsum(in[0], -1); }

static void rms_norm_activations_cumsum(void **state)
{
    fixture *f = *state;
    static const char *const names[] = {"x", "weight"};
    static const struct {
        const char *graph, *what;
        int n;
        graph_fn fn;
    } cases[] = {
        {"rms", "rms_norm", 2, rms_weight},
        {"rms_plain", "rms_norm", 1, rms_plain},
        {"silu", "silu", 1, silu},
        {"gelu_erf", "gelu_erf", 1, gelu_erf},
        {"cumsum0", "cumsum", 1, cumsum0},
        {"cumsum1", "cumsum", 1, cumsum1},
        {"cumsumm1", "cumsum", 1, cumsum_last},
    };
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F32 : TG_F64;
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            check_graph(f->tp, cases[i].graph, cases[i].n, names, cases[i].fn, dt);
            bool last = i + 1 == sizeof cases / sizeof cases[0];
            if (last || strcmp(cases[i].what, cases[i + 1].what))
                report(cases[i].what, dt);
        }
    }
}

/* Columns past one kernel block (256): cumsum along axis 0 of [3, 600], against sums in C, and
 * its gradient (the sums from the end). */
static void cumsum_wide_columns(void **state)
{
    fixture *f = *state;
    enum { ROWS = 3, COLS = 600 };
    tg_tensor x = tg_uniform(f->tp, TG_F64, 2, (int64_t[]){ROWS, COLS}, -1, 1, 71), g;
    tg_tensor r = tg_uniform(f->tp, TG_F64, 2, (int64_t[]){ROWS, COLS}, -1, 1, 72);
    tg_tensor y = tg_cumsum(x, 0);
    assert_status(tg_grad(1, &y, &r, 1, &x, &g, 0), TG_OK);
    const double *xs = tg_data(x), *rs = tg_data(r), *ys = tg_data(y), *gs = tg_data(g);
    for (int j = 0; j < COLS; j++) {
        double sum = 0, back = 0;
        for (int i = 0; i < ROWS; i++) {
            sum += xs[i * COLS + j];
            assert_close(ys[i * COLS + j], sum, 1e-15);
            back += rs[(ROWS - 1 - i) * COLS + j];
            assert_close(gs[(ROWS - 1 - i) * COLS + j], back, 1e-15);
        }
    }
}

/* ---- cast --------------------------------------------------------------------------------- */

static tg_tensor round_trip(const tg_tensor *in) { return tg_cast(tg_cast(in[0], TG_F32), TG_F64); }

static void cast_values_and_gradients(void **state)
{
    fixture *f = *state;
    static const char *const names[] = {"x"};
    check_graph(f->tp, "cast32", 1, names, round_trip, TG_F64); /* held exactly: */
    assert_true(worst == 0);
    tg_tape_reset(f->tp);
    tg_tensor x = input(f->tp, "cast_i64", "x", TG_F64);
    tg_tensor xi = tg_cast(x, TG_I64), xi32 = tg_cast(tg_cast(x, TG_F32), TG_I64);
    expect(xi, "cast_i64", "y", 0);
    expect(xi32, "cast_i64", "y", 0); /* the values are far from integers at f32's precision */
    assert_int_equal(tg_tensor_dtype(xi), TG_I64);
    tg_tensor ints = input(f->tp, "cast_from_i64", "x", TG_I64);
    expect(tg_cast(ints, TG_F64), "cast_from_i64", "y", 0);
    assert_tape_ok(f->tp);
    /* The same dtype is the tensor itself; i64 -> f32 rounds to nearest (2^24 + 1 is even
     * between its neighbours, so it goes to 2^24). */
    size_t nodes = tg_tape_node_count(f->tp);
    tg_tensor same = tg_cast(x, TG_F64);
    assert_int_equal(tg_tape_node_count(f->tp), nodes);
    assert_ptr_equal(tg_data(same), tg_data(x));
    tg_tensor big =
        tg_tensor_from(f->tp, TG_I64, 1, (int64_t[]){2}, (int64_t[]){16777217, -16777219});
    const float *bf = tg_data(tg_cast(big, TG_F32));
    assert_true(bf[0] == 16777216.0f && bf[1] == -16777220.0f);
    /* The i64 result carries no gradient; the float path does, in the input's dtype. */
    tg_tensor v = tg_requires_grad(VEC64(f->tp, 1.5, -2.25)), gv;
    tg_tensor back = tg_cast(tg_cast(v, TG_I64), TG_F64);
    assert_status(tg_grad(1, (tg_tensor[]){tg_sum_all(back)}, NULL, 1, &v, &gv, 0), TG_OK);
    assert_true(((const double *)tg_data(gv))[0] == 0 && ((const double *)tg_data(gv))[1] == 0);
    tg_tensor v32 = tg_cast(v, TG_F32);
    assert_status(tg_grad(1, (tg_tensor[]){tg_sum_all(tg_square(v32))}, NULL, 1, &v, &gv, 0),
                  TG_OK);
    assert_int_equal(tg_tensor_dtype(gv), TG_F64);
    assert_close(((const double *)tg_data(gv))[1], -4.5, 0);
}

/* ---- second order through batch_norm ------------------------------------------------------- */

/* f(x, w, b) = sum(r y) + sum(y^2) / 2 with y = batch_norm(x, w, b) in training mode. */
static tg_tensor bn_objective(tg_tape *tp, const tg_tensor *in)
{
    tg_tensor y = tg_batch_norm(in[0], NULL, NULL, in[1], in[2], true, 0.1, 1e-5);
    tg_tensor r = tg_uniform(tp, TG_F64, tg_ndim(y), tg_shape(y), -1, 1, 41);
    return tg_add(tg_sum_all(tg_mul(r, y)), tg_mul_scalar(tg_sum_all(tg_square(y)), 0.5));
}

/* The gradient of bn_objective at the inputs moved by t v, into out (one array per input). */
static void objective_gradient(tg_tape *tp, const double *const *at, const double *const *v,
                               double t, const int64_t (*shapes)[3], const int *nds, double **out)
{
    tg_tape_reset(tp);
    tg_tensor in[3], g[3];
    for (int i = 0; i < 3; i++) {
        int64_t n = 1;
        for (int d = 0; d < nds[i]; d++)
            n *= shapes[i][d];
        double *p = malloc((size_t)n * sizeof *p);
        assert_non_null(p);
        for (int64_t e = 0; e < n; e++)
            p[e] = at[i][e] + t * v[i][e];
        in[i] = tg_tensor_from(tp, TG_F64, nds[i], shapes[i], p);
        free(p);
    }
    tg_tensor fx = bn_objective(tp, in);
    assert_status(tg_grad(1, &fx, NULL, 3, in, g, 0), TG_OK);
    for (int i = 0; i < 3; i++)
        assert_status(tg_read(g[i], TG_F64, out[i], tg_numel(g[i])), TG_OK);
}

static void hvp_through_batch_norm(void **state)
{
    fixture *f = *state;
    static const int64_t shapes[3][3] = {{4, 3, 2}, {3}, {3}};
    static const int nds[3] = {3, 1, 1};
    static const int64_t sizes[3] = {24, 3, 3};
    double *at[3], *v[3], *gp[3], *gm[3];
    tg_tensor in[3], vt[3], hv[3];
    for (int i = 0; i < 3; i++) {
        at[i] = malloc(24 * sizeof(double)), v[i] = malloc(24 * sizeof(double));
        gp[i] = malloc(24 * sizeof(double)), gm[i] = malloc(24 * sizeof(double));
        assert_true(at[i] && v[i] && gp[i] && gm[i]);
        in[i] = tg_uniform(f->tp, TG_F64, nds[i], shapes[i], i == 1 ? 0.5 : -2, 2, 51 + i);
        vt[i] = tg_uniform(f->tp, TG_F64, nds[i], shapes[i], -1, 1, 61 + i);
        tg_read(in[i], TG_F64, at[i], sizes[i]);
        tg_read(vt[i], TG_F64, v[i], sizes[i]);
    }
    tg_tensor fx = bn_objective(f->tp, in);
    assert_status(tg_hvp(fx, 3, in, vt, hv, 0), TG_OK);
    double *h[3];
    for (int i = 0; i < 3; i++) {
        h[i] = malloc(24 * sizeof(double));
        assert_non_null(h[i]);
        assert_status(tg_read(hv[i], TG_F64, h[i], sizes[i]), TG_OK);
    }
    /* Central differences of the (first-order) gradient along v. */
    const double eps = 1e-5;
    objective_gradient(f->tp, (const double *const *)at, (const double *const *)v, eps, shapes, nds,
                       gp);
    objective_gradient(f->tp, (const double *const *)at, (const double *const *)v, -eps, shapes,
                       nds, gm);
    double worst_hvp = 0;
    for (int i = 0; i < 3; i++)
        for (int64_t e = 0; e < sizes[i]; e++) {
            double numeric = (gp[i][e] - gm[i][e]) / (2 * eps);
            assert_close(h[i][e], numeric, 1e-7);
            worst_hvp = fmax(worst_hvp, fabs(h[i][e] - numeric) / (1 + fabs(numeric)));
        }
    print_message("hvp through batch_norm: worst relative difference %.3g from finite "
                  "differences\n",
                  worst_hvp);
    for (int i = 0; i < 3; i++)
        free(at[i]), free(v[i]), free(gp[i]), free(gm[i]), free(h[i]);
}

/* ---- errors ------------------------------------------------------------------------------- */

/* The running statistics hold 0.5 and 2, at a version: unchanged by what failed. */
typedef struct running {
    tg_param *mean, *var;
    uint64_t mean_version, var_version;
} running;

static void running_new(tg_ctx *ctx, running *r, tg_dtype dt, int64_t channels)
{
    assert_status(tg_param_new(ctx, NULL, dt, 1, &channels, &r->mean), TG_OK);
    assert_status(tg_param_new(ctx, NULL, dt, 1, &channels, &r->var), TG_OK);
    tg_param_fill(r->mean, 0.5);
    tg_param_fill(r->var, 2);
    r->mean_version = tg_param_version(r->mean);
    r->var_version = tg_param_version(r->var);
}

static void assert_untouched(const running *r)
{
    assert_int_equal(tg_param_version(r->mean), r->mean_version);
    assert_int_equal(tg_param_version(r->var), r->var_version);
    const double *m = tg_param_data(r->mean), *v = tg_param_data(r->var);
    for (int64_t c = 0; c < tg_param_numel(r->mean); c++)
        assert_true(m[c] == 0.5 && v[c] == 2);
}

/* A failing call: the status, a message naming `what` and batch_norm, and nothing written. */
static void expect_failure(fixture *f, const running *r, tg_tensor y, tg_status status,
                           const char *what)
{
    assert_false(tg_ok(y));
    assert_status(tg_tape_status(f->tp), status);
    assert_contains(tg_tape_error(f->tp), what);
    assert_contains(tg_tape_error(f->tp), "batch_norm");
    assert_contains(tg_tape_error(f->tp), "node");
    assert_untouched(r);
    tg_tape_reset(f->tp);
}

static void batch_norm_errors(void **state)
{
    fixture *f = *state;
    running r, wrong_shape, wrong_dtype;
    running_new(f->ctx, &r, TG_F64, 3);
    running_new(f->ctx, &wrong_shape, TG_F64, 4);
    assert_status(tg_param_new(f->ctx, NULL, TG_F32, 1, (int64_t[]){3}, &wrong_dtype.mean), TG_OK);
    tg_tape *tp = f->tp;
    int64_t s43[] = {4, 3};
#define X tg_uniform(tp, TG_F64, 2, s43, -1, 1, 7)
    static const double bad_momentum[] = {-0.1, 1.5, NAN, INFINITY};
    for (int i = 0; i < 4; i++)
        expect_failure(f, &r,
                       tg_batch_norm(X, r.mean, r.var, none, none, true, bad_momentum[i], 1e-5),
                       TG_RANGE, "momentum must be in [0, 1]");
    static const double bad_eps[] = {-1e-5, NAN, INFINITY};
    for (int i = 0; i < 3; i++)
        for (int training = 0; training < 2; training++)
            expect_failure(f, &r,
                           tg_batch_norm(X, r.mean, r.var, none, none, training, 0.1, bad_eps[i]),
                           TG_INVALID, "eps must be finite and >= 0");
    expect_failure(f, &r,
                   tg_batch_norm(X, wrong_shape.mean, wrong_shape.var, none, none, true, 0.1, 1e-5),
                   TG_SHAPE, "running_mean is f64[4], not f64[3]");
    expect_failure(f, &r, tg_batch_norm(X, r.mean, wrong_dtype.mean, none, none, false, 0.1, 1e-5),
                   TG_DTYPE, "running_var is f32[3], not f64[3]");
    expect_failure(f, &r, tg_batch_norm(X, NULL, NULL, none, none, false, 0.1, 1e-5), TG_INVALID,
                   "evaluation needs the running statistics");
    expect_failure(f, &r, tg_batch_norm(X, r.mean, NULL, none, none, true, 0.1, 1e-5), TG_INVALID,
                   "both running statistics or neither");
    expect_failure(f, &r, tg_batch_norm(X, r.mean, r.mean, none, none, true, 0.1, 1e-5), TG_INVALID,
                   "one parameter");
    /* Weight or bias of the wrong shape: the op's check, after which nothing is written. */
    expect_failure(f, &r,
                   tg_batch_norm(X, r.mean, r.var, tg_ones(tp, TG_F64, 1, (int64_t[]){4}), none,
                                 true, 0.1, 1e-5),
                   TG_SHAPE, "the weight has shape [4], not [3]");
    /* One value per channel in training (not in evaluation), as PyTorch says. */
    int64_t one[] = {1, 3}, one_image[] = {1, 3, 1, 1};
    expect_failure(
        f, &r,
        tg_batch_norm(tg_ones(tp, TG_F64, 2, one), r.mean, r.var, none, none, true, 0.1, 1e-5),
        TG_INVALID, "more than 1 value per channel when training, got input size [1,3]");
    expect_failure(
        f, &r,
        tg_batch_norm(tg_ones(tp, TG_F64, 4, one_image), NULL, NULL, none, none, true, 0.1, 1e-5),
        TG_INVALID, "more than 1 value per channel");
    assert_true(tg_ok(
        tg_batch_norm(tg_ones(tp, TG_F64, 2, one), r.mean, r.var, none, none, false, 0.1, 1e-5)));
    tg_tape_reset(tp);
    /* A 1-d input; a tape already in error; a stale input. */
    expect_failure(f, &r,
                   tg_batch_norm(tg_ones(tp, TG_F64, 1, (int64_t[]){3}), r.mean, r.var, none, none,
                                 true, 0.1, 1e-5),
                   TG_SHAPE, "[N, C, ...]");
    tg_tensor x = X;
    tg_tape_fail(tp, TG_SHAPE, "an earlier batch_norm-free error (node 1)");
    assert_false(tg_ok(tg_batch_norm(x, r.mean, r.var, none, none, true, 0.1, 1e-5)));
    assert_contains(tg_tape_error(tp), "earlier");
    assert_untouched(&r);
    tg_tape_reset(tp);
    assert_false(tg_ok(tg_batch_norm(x, r.mean, r.var, none, none, true, 0.1, 1e-5)));
    assert_status(tg_tape_status(tp), TG_STALE);
    assert_untouched(&r);
    tg_tape_reset(tp);
    /* An empty batch normalises nothing and leaves the statistics alone (as PyTorch). */
    tg_tensor empty = tg_zeros(tp, TG_F64, 2, (int64_t[]){0, 3});
    tg_tensor ye = tg_batch_norm(empty, r.mean, r.var, none, none, true, 0.1, 1e-5);
    assert_tape_ok(tp);
    assert_int_equal(tg_numel(ye), 0);
    assert_untouched(&r);
    /* Its gradients: none for x (empty), zeros for weight and bias; no channels at all works. */
    tg_tensor w = tg_requires_grad(tg_full(tp, TG_F64, 1, (int64_t[]){3}, 2));
    tg_tensor gw;
    ye = tg_batch_norm(empty, NULL, NULL, w, none, true, 0.1, 1e-5);
    assert_status(tg_grad(1, (tg_tensor[]){tg_sum_all(ye)}, NULL, 1, &w, &gw, TG_CREATE_GRAPH),
                  TG_OK);
    for (int c = 0; c < 3; c++)
        assert_true(((const double *)tg_data(gw))[c] == 0);
    tg_tensor none_c = tg_requires_grad(tg_ones(tp, TG_F64, 3, (int64_t[]){4, 0, 2})), gx;
    tg_tensor y0 = tg_batch_norm(none_c, NULL, NULL, none, none, true, 0.1, 1e-5);
    assert_status(tg_grad(1, (tg_tensor[]){tg_sum_all(y0)}, NULL, 1, &none_c, &gx, 0), TG_OK);
    assert_int_equal(tg_numel(gx), 0);
    /* And a good call does write. */
    assert_true(tg_ok(tg_batch_norm(X, r.mean, r.var, none, none, true, 0.1, 1e-5)));
    assert_true(tg_param_version(r.mean) > r.mean_version);
#undef X
    tg_param_free(r.mean);
    tg_param_free(r.var);
    tg_param_free(wrong_shape.mean);
    tg_param_free(wrong_shape.var);
    tg_param_free(wrong_dtype.mean);
}

static void other_errors(void **state)
{
    fixture *f = *state;
    tg_tape *tp = f->tp;
    int64_t s34[] = {3, 4};
    tg_tensor m = tg_ones(tp, TG_F64, 2, s34);
    static const int bad_axes[] = {2, -3, 100};
    for (int i = 0; i < 3; i++) {
        assert_false(tg_ok(tg_cumsum(m, bad_axes[i])));
        assert_status(tg_tape_status(tp), TG_RANGE);
        assert_contains(tg_tape_error(tp), "cumsum: axis");
        assert_contains(tg_tape_error(tp), "f64[3,4]");
        tg_tape_reset(tp);
        m = tg_ones(tp, TG_F64, 2, s34);
    }
    assert_false(
        tg_ok(tg_cumsum(tg_tensor_from(tp, TG_I64, 1, (int64_t[]){1}, (int64_t[]){1}), 0)));
    assert_status(tg_tape_status(tp), TG_DTYPE);
    tg_tape_reset(tp);
    assert_false(tg_ok(tg_cast(tg_ones(tp, TG_F64, 2, s34), (tg_dtype)42)));
    assert_status(tg_tape_status(tp), TG_DTYPE);
    assert_contains(tg_tape_error(tp), "cast: cannot cast to unknown dtype 42");
    static const double bad[] = {NAN, INFINITY, -INFINITY, 0x1p63, -0x1p64};
    for (int i = 0; i < 5; i++) {
        tg_tape_reset(tp);
        assert_false(tg_ok(tg_cast(VEC64(tp, 1.5, bad[i]), TG_I64)));
        assert_status(tg_tape_status(tp), TG_RANGE);
        assert_contains(tg_tape_error(tp), "cast_to_i64: element 1");
        tg_tape_reset(tp);
        float b32 = (float)bad[i];
        assert_false(tg_ok(tg_cast(tg_tensor_from(tp, TG_F32, 1, (int64_t[]){1}, &b32), TG_I64)));
        assert_status(tg_tape_status(tp), TG_RANGE);
    }
    tg_tape_reset(tp); /* the edges of the range convert */
    tg_tensor edges = tg_cast(VEC64(tp, -0x1p63, 0x1p63 - 1024, -2.75), TG_I64);
    assert_tape_ok(tp);
    const int64_t *e = tg_data(edges);
    assert_true(e[0] == INT64_MIN && e[1] == INT64_MAX - 1023 && e[2] == -2);
    /* rms_norm: bad eps, a weight of the wrong shape, a 0-d input. */
    tg_tape_reset(tp);
    assert_false(tg_ok(tg_rms_norm(tg_ones(tp, TG_F64, 2, s34), none, -1)));
    assert_status(tg_tape_status(tp), TG_INVALID);
    assert_contains(tg_tape_error(tp), "rms_norm: eps");
    tg_tape_reset(tp);
    assert_false(
        tg_ok(tg_rms_norm(tg_ones(tp, TG_F64, 2, s34), tg_ones(tp, TG_F64, 1, (int64_t[]){3}), 0)));
    assert_status(tg_tape_status(tp), TG_SHAPE);
    assert_contains(tg_tape_error(tp), "weight must have shape [4]");
    tg_tape_reset(tp);
    assert_false(tg_ok(tg_rms_norm(tg_constant(tp, TG_F64, 1), none, 0)));
    assert_status(tg_tape_status(tp), TG_SHAPE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(batch_norm_training),
        TEST(batch_norm_large_offset),
        TEST(batch_norm_running_statistics),
        TEST(rms_norm_activations_cumsum),
        TEST(cumsum_wide_columns),
        TEST(cast_values_and_gradients),
        TEST(hvp_through_batch_norm),
        TEST(batch_norm_errors),
        TEST(other_errors),
    };
    return cmocka_run_group_tests_name("normact", tests, load_refs, ref_free);
}
