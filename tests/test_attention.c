/* test_attention.c — scaled_dot_product_attention, tril, triu and masked_fill against PyTorch:
 * outputs, gradients and Hessian-vector products agree with
 * tests/reference/attention_reference.txt (written by tests/reference/generate_attention.py) to
 * 1e-12 in f64 and 1e-5 in f32 (|a - b| / (1 + |b|); one f32 case of cancelling terms to 1e-4);
 * every mask layout agrees with the composition of tapegrad's own ops; rows that see no key give
 * exact zeros; threads change no bit; empty sizes work; bad inputs get their status and a message
 * naming the shapes. */
#include "common.h"
#include "reference.h"

#include <limits.h>

#define REF_PATH TG_SOURCE_DIR "/tests/reference/attention_reference.txt"
#define TOL64 1e-12
#define TOL32 1e-5

static int load_refs(void **state)
{
    (void)state;
    return ref_load(REF_PATH, "tests/reference/generate_attention.py");
}

/* A reference tensor as a leaf of dtype dt on tp (f32 values are the f64 ones rounded; the
 * generator rounds its float inputs to f32 values already). */
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

/* t agrees with reference graph.name in shape and in every value to tol. */
static void expect(tg_tensor t, const char *graph, const char *name, double tol)
{
    const ref_tensor *r = ref(graph, name);
    if (!tg_ok(t))
        fail_msg("%s.%s: no tensor (%s)", graph, name, tg_tape_error(tg_tensor_tape(t)));
    assert_int_equal(tg_ndim(t), r->ndim);
    for (int d = 0; d < r->ndim; d++)
        assert_int_equal(tg_dim(t, d), r->shape[d]);
    double *got = malloc((size_t)(r->numel ? r->numel : 1) * sizeof *got);
    assert_non_null(got);
    assert_status(tg_read(t, TG_F64, got, r->numel), TG_OK);
    for (int64_t i = 0; i < r->numel; i++) {
        double err = fabs(got[i] - r->v[i]) / (1 + fabs(r->v[i]));
        if (!(err <= tol)) {
            double g = got[i];
            free(got);
            fail_msg("%s.%s[%lld] = %.17g, PyTorch %.17g (error %.3g > %g)", graph, name,
                     (long long)i, g, r->v[i], err, tol);
        }
        worst = err > worst ? err : worst;
    }
    free(got);
}

static int setup(void **state)
{
    worst = 0;
    return fixture_setup(state);
}
#define TEST(fn) cmocka_unit_test_setup_teardown(fn, setup, fixture_teardown)

/* ---- attention against the reference ------------------------------------------------------ */

static const char *const graphs[] = {
    "plain",       "additive",     "boolean",       "causal", "causal_wide",
    "causal_tall", "broadcast",    "tq1",           "tk1",    "big_mask",
    "big_dot",     "dead_boolean", "dead_additive", "long",   "long_causal",
};
#define NGRAPHS (sizeof graphs / sizeof graphs[0])

/* One reference graph on tp: its inputs (q, k, v and, for an additive mask, the mask: n of them)
 * in dtype dt, the mask (i64 for a boolean one), and the output of the call it describes. */
typedef struct attention_graph {
    tg_tensor in[4], mask, out, loss;
    int n;
} attention_graph;

static attention_graph build(tg_tape *tp, const char *graph, tg_dtype dt)
{
    attention_graph a;
    memset(&a, 0, sizeof a);
    const ref_tensor *config = ref(graph, "config");
    bool causal = config->v[0] != 0;
    double scale = config->v[1];
    int kind = (int)config->v[2]; /* 0 none, 1 additive, 2 boolean */
    a.in[0] = input(tp, graph, "q", dt);
    a.in[1] = input(tp, graph, "k", dt);
    a.in[2] = input(tp, graph, "v", dt);
    a.n = 3;
    if (kind == 1)
        a.mask = a.in[a.n++] = input(tp, graph, "mask", dt);
    else if (kind == 2)
        a.mask = input(tp, graph, "mask", TG_I64);
    a.out = tg_scaled_dot_product_attention(a.in[0], a.in[1], a.in[2], a.mask, causal, scale);
    a.loss = tg_sum_all(tg_mul(a.out, input(tp, graph, "r", dt)));
    assert_tape_ok(tp);
    return a;
}

static const char *const grad_names[] = {"grad_q", "grad_k", "grad_v", "grad_mask"};

/* The f32 tolerance of a graph. big_dot's gradients cancel: their exact value is 0 or small
 * while their terms are |dP| |k| scale ~ 3e2 (k ~ 1e2), and f32 leaves ~1e-7 of that (delta =
 * rowsum(g * y) is rounded apart from dP = g v^T, as in PyTorch's fused kernels). */
static double tol32(const char *graph) { return strcmp(graph, "big_dot") ? TOL32 : 1e-4; }

static void check_graph(tg_tape *tp, const char *graph, tg_dtype dt)
{
    double tol = dt == TG_F64 ? TOL64 : tol32(graph);
    tg_tape_reset(tp);
    attention_graph a = build(tp, graph, dt);
    tg_tensor g[4];
    assert_status(tg_grad(1, &a.loss, NULL, a.n, a.in, g, 0), TG_OK);
    expect(a.out, graph, "out", tol);
    for (int i = 0; i < a.n; i++)
        expect(g[i], graph, grad_names[i], tol);
}

static void reference_values_and_gradients(void **state)
{
    fixture *f = *state;
    for (int p = 0; p < 2; p++) {
        tg_dtype dt = p ? TG_F32 : TG_F64;
        for (size_t i = 0; i < NGRAPHS; i++) {
            check_graph(f->tp, graphs[i], dt);
            print_message("attention %-14s (%s): worst error vs PyTorch %.3g\n", graphs[i],
                          tg_dtype_name(dt), worst);
            worst = 0;
        }
    }
}

/* Second order: d/d inputs of <grad, u> (the fused backward op's composite rule) against
 * PyTorch's double backward. */
static void reference_hessian_vector_products(void **state)
{
    fixture *f = *state;
    static const char *const names[] = {"q", "k", "v", "mask"};
    static const char *const with_hvp[] = {"additive", "causal", "broadcast", "dead_additive"};
    for (int p = 0; p < 2; p++) {
        tg_dtype dt = p ? TG_F32 : TG_F64;
        for (size_t i = 0; i < sizeof with_hvp / sizeof with_hvp[0]; i++) {
            const char *graph = with_hvp[i];
            tg_tape_reset(f->tp);
            attention_graph a = build(f->tp, graph, dt);
            tg_tensor u[4], hv[4];
            for (int j = 0; j < a.n; j++) {
                char name[16];
                snprintf(name, sizeof name, "u_%s", names[j]);
                u[j] = input(f->tp, graph, name, dt);
            }
            assert_status(tg_hvp(a.loss, a.n, a.in, u, hv, 0), TG_OK);
            for (int j = 0; j < a.n; j++) {
                char name[16];
                snprintf(name, sizeof name, "hvp_%s", names[j]);
                expect(hv[j], graph, name, dt == TG_F64 ? TOL64 : 2 * TOL32);
            }
            print_message("attention %-14s (%s): Hessian-vector product, worst error %.3g\n", graph,
                          tg_dtype_name(dt), worst);
            worst = 0;
        }
    }
}

/* Rows that see no key: exactly 0 in the output and in q's gradient (PyTorch: NaN). */
static void rows_that_see_no_key_are_zero(void **state)
{
    fixture *f = *state;
    /* dead_boolean hides query 2 of batch entry 0 and query 4 of entry 1 ([2, 5, 6] mask). */
    static const int64_t dead[2][2] = {{0, 2}, {1, 4}};
    for (int p = 0; p < 2; p++) {
        tg_dtype dt = p ? TG_F32 : TG_F64;
        tg_tape_reset(f->tp);
        attention_graph a = build(f->tp, "dead_boolean", dt);
        tg_tensor g[3];
        assert_status(tg_grad(1, &a.loss, NULL, 3, a.in, g, 0), TG_OK);
        double out[2 * 5 * 3], gq[2 * 5 * 4];
        assert_status(tg_read(a.out, TG_F64, out, 30), TG_OK);
        assert_status(tg_read(g[0], TG_F64, gq, 40), TG_OK);
        for (int r = 0; r < 2; r++) {
            int64_t row = dead[r][0] * 5 + dead[r][1];
            for (int c = 0; c < 3; c++)
                assert_true(out[row * 3 + c] == 0);
            for (int c = 0; c < 4; c++)
                assert_true(gq[row * 4 + c] == 0);
        }
        /* A row of live queries is not zero. */
        assert_true(out[0] != 0 || out[1] != 0 || out[2] != 0);
    }
}

/* The kernels split blocks of rows (forward) and batch entries (backward) over threads: the same
 * bits with one thread and with two, with P kept ([4, 48, 16], causal) and with row statistics
 * ([4, 100, 4] with an additive mask), in sizes above the threading threshold. */
static void threads_give_the_same_bits(void **state)
{
    fixture *f = *state;
    static const int64_t shapes[2][3] = {{4, 48, 16}, {4, 100, 4}};
    for (int c = 0; c < 2; c++) {
        double *runs[2] = {NULL, NULL};
        int64_t count = 0;
        for (int t = 0; t < 2; t++) {
            assert_status(tg_ctx_set_threads(f->ctx, t + 1), TG_OK);
            tg_tape_reset(f->tp);
            const int64_t *s = shapes[c];
            tg_tensor in[4] = {tg_uniform(f->tp, TG_F32, 3, s, -2, 2, 1),
                               tg_uniform(f->tp, TG_F32, 3, s, -2, 2, 2),
                               tg_uniform(f->tp, TG_F32, 3, s, -2, 2, 3),
                               c ? tg_uniform(f->tp, TG_F32, 2, (int64_t[]){s[1], s[1]}, -1, 1, 4)
                                 : (tg_tensor){0}};
            int n = c ? 4 : 3;
            tg_tensor y = tg_scaled_dot_product_attention(in[0], in[1], in[2], in[3], c == 0, 0);
            tg_tensor loss = tg_sum_all(tg_mul(y, tg_uniform(f->tp, TG_F32, 3, s, -1, 1, 5)));
            tg_tensor g[4], flat[5] = {tg_reshape(y, 1, (int64_t[]){-1})};
            assert_status(tg_grad(1, &loss, NULL, n, in, g, 0), TG_OK);
            for (int j = 0; j < n; j++)
                flat[1 + j] = tg_reshape(g[j], 1, (int64_t[]){-1});
            tg_tensor all = tg_concat(1 + n, flat, 0);
            assert_tape_ok(f->tp);
            count = tg_numel(all);
            runs[t] = malloc((size_t)count * sizeof(double));
            assert_non_null(runs[t]);
            assert_status(tg_read(all, TG_F64, runs[t], count), TG_OK);
        }
        assert_memory_equal(runs[0], runs[1], (size_t)count * sizeof(double));
        free(runs[0]);
        free(runs[1]);
    }
}

/* Empty sizes: no queries, no keys (every row sees nothing: zeros), d = 0 (scores are the mask
 * alone: a plain mean of v without one). */
static void empty_sizes(void **state)
{
    fixture *f = *state;
    tg_tape *tp = f->tp;
    tg_tensor none = {0};
    tg_tensor q0 = tg_requires_grad(tg_ones(tp, TG_F64, 3, (int64_t[]){2, 0, 4}));
    tg_tensor k = tg_requires_grad(tg_ones(tp, TG_F64, 3, (int64_t[]){2, 5, 4}));
    tg_tensor v = tg_requires_grad(tg_arange(tp, TG_F64, 10));
    v = tg_reshape(v, 3, (int64_t[]){2, 5, 1});
    tg_tensor y = tg_scaled_dot_product_attention(q0, k, v, none, true, 0);
    assert_tape_ok(tp);
    assert_int_equal(tg_dim(y, 1), 0);
    assert_status(tg_backward(tg_sum_all(y)), TG_OK);

    tg_tape_reset(tp);
    tg_tensor q = tg_requires_grad(tg_ones(tp, TG_F64, 3, (int64_t[]){2, 3, 4}));
    tg_tensor k0 = tg_requires_grad(tg_ones(tp, TG_F64, 3, (int64_t[]){2, 0, 4}));
    tg_tensor v0 = tg_requires_grad(tg_ones(tp, TG_F64, 3, (int64_t[]){2, 0, 2}));
    y = tg_scaled_dot_product_attention(q, k0, v0, none, false, 0);
    assert_tape_ok(tp);
    assert_int_equal(tg_numel(y), 12);
    assert_close(tg_item(tg_sum_all(tg_abs(y))), 0, 0);
    assert_status(tg_backward(tg_sum_all(y)), TG_OK);
    assert_close(tg_item(tg_sum_all(tg_abs(tg_tensor_grad(q)))), 0, 0);

    tg_tape_reset(tp);
    tg_tensor qd = tg_ones(tp, TG_F64, 2, (int64_t[]){3, 0});
    tg_tensor kd = tg_ones(tp, TG_F64, 2, (int64_t[]){4, 0});
    tg_tensor vd = tg_reshape(tg_arange(tp, TG_F64, 4), 2, (int64_t[]){4, 1});
    y = tg_scaled_dot_product_attention(qd, kd, vd, none, false, 0);
    assert_tape_ok(tp);
    const double *yd = tg_data(y);
    for (int i = 0; i < 3; i++)
        assert_close(yd[i], 1.5, 1e-15);
}

/* ---- against the composition, for every mask layout ------------------------------------------ */

/* softmax(scale q k^T + bias) v with tapegrad's separate ops (each checked against PyTorch
 * elsewhere); bias from the mask (added, or -inf where an i64 mask is 0) and causal. */
static tg_tensor composed(tg_tensor q, tg_tensor k, tg_tensor v, tg_tensor mask, bool causal,
                          double scale)
{
    tg_tape *tp = tg_tensor_tape(q);
    tg_dtype dt = tg_tensor_dtype(q);
    tg_tensor s = tg_mul_scalar(tg_matmul_t(q, k, false, true), scale);
    if (tg_tensor_tape(mask) && tg_tensor_dtype(mask) == TG_I64)
        s = tg_add(s, tg_masked_fill(tg_full(tp, dt, tg_ndim(mask), tg_shape(mask), -INFINITY),
                                     mask, 0.0));
    else if (tg_tensor_tape(mask))
        s = tg_add(s, mask);
    if (causal) {
        int64_t square[2] = {tg_dim(q, -2), tg_dim(k, -2)};
        s = tg_add(s, tg_triu(tg_full(tp, dt, 2, square, -INFINITY), 1));
    }
    return tg_matmul(tg_softmax(s, -1), v);
}

/* a and b have one shape and agree to tol (relative to 1 + |b|). */
static void expect_same(tg_tensor a, tg_tensor b, double tol, const char *what, int config)
{
    assert_int_equal(tg_ndim(a), tg_ndim(b));
    int64_t n = tg_numel(b);
    assert_int_equal(tg_numel(a), n);
    double *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    assert_status(tg_read(a, TG_F64, x, n), TG_OK);
    assert_status(tg_read(b, TG_F64, y, n), TG_OK);
    for (int64_t i = 0; i < n; i++) {
        double err = fabs(x[i] - y[i]) / (1 + fabs(y[i]));
        if (!(err <= tol)) {
            double xi = x[i], yi = y[i];
            free(x);
            free(y);
            fail_msg("config %d: %s[%lld] = %.17g, composed %.17g", config, what, (long long)i, xi,
                     yi);
        }
        worst = err > worst ? err : worst;
    }
    free(x);
    free(y);
}

/* Every mask layout (broadcast along each dim, 0-d, per head, boolean by row or by key), with
 * and without causal, in both dtypes: outputs and gradients equal those of the composition. The
 * masks leave every row a key, where the composition is defined. */
static void matches_the_composition(void **state)
{
    fixture *f = *state;
    static const struct {
        int nd;
        int64_t shape[4];
        bool boolean;
    } masks[] = {
        {-1, {0}, false},   {0, {0}, false},         {2, {5, 1}, false},
        {2, {1, 6}, false}, {3, {3, 5, 6}, false},   {4, {2, 1, 5, 6}, false},
        {2, {5, 1}, true},  {4, {2, 1, 1, 6}, true},
    };
    static const int64_t sq[] = {2, 3, 5, 4}, sk[] = {2, 1, 6, 4}, sv[] = {1, 3, 6, 3};
    for (int p = 0; p < 2; p++) {
        tg_dtype dt = p ? TG_F32 : TG_F64;
        for (int m = 0; m < (int)(sizeof masks / sizeof masks[0]); m++)
            for (int causal = 0; causal < 2; causal++) {
                int config = (p * 8 + m) * 2 + causal;
                tg_tape_reset(f->tp);
                tg_tensor in[4] = {tg_uniform(f->tp, dt, 4, sq, -2, 2, 1),
                                   tg_uniform(f->tp, dt, 4, sk, -2, 2, 2),
                                   tg_uniform(f->tp, dt, 4, sv, -2, 2, 3),
                                   {0}};
                int n = 3;
                if (masks[m].nd >= 0 && masks[m].boolean) {
                    /* 1 where a uniform draw is above -0.6, and at key 0: every row sees a key
                     * (a [5, 1] mask is all 1: a 0 there would hide a whole row) */
                    tg_tensor u = tg_uniform(f->tp, TG_F64, masks[m].nd, masks[m].shape, -1, 1, 4);
                    int64_t bits[64], count = tg_numel(u), last = masks[m].shape[masks[m].nd - 1];
                    const double *ud = tg_data(u);
                    for (int64_t i = 0; i < count; i++)
                        bits[i] = ud[i] > -0.6 || i % last == 0;
                    in[3] = tg_tensor_from(f->tp, TG_I64, masks[m].nd, masks[m].shape, bits);
                } else if (masks[m].nd >= 0) {
                    in[3] = tg_uniform(f->tp, dt, masks[m].nd, masks[m].shape, -1, 1, 4);
                    n = 4;
                }
                tg_tensor r = tg_uniform(f->tp, dt, 4, (int64_t[]){2, 3, 5, 3}, -1, 1, 5);
                tg_tensor y =
                    tg_scaled_dot_product_attention(in[0], in[1], in[2], in[3], causal, 0.6);
                tg_tensor z = composed(in[0], in[1], in[2], in[3], causal, 0.6);
                tg_tensor ly = tg_sum_all(tg_mul(y, r)), lz = tg_sum_all(tg_mul(z, r));
                tg_tensor gy[4], gz[4];
                assert_status(tg_grad(1, &ly, NULL, n, in, gy, 0), TG_OK);
                assert_status(tg_grad(1, &lz, NULL, n, in, gz, 0), TG_OK);
                double tol = dt == TG_F64 ? TOL64 : TOL32;
                expect_same(y, z, tol, "output", config);
                for (int i = 0; i < n; i++)
                    expect_same(gy[i], gz[i], tol, grad_names[i], config);
            }
        print_message("attention against the composition, 8 mask layouts (%s): worst error %.3g\n",
                      tg_dtype_name(dt), worst);
        worst = 0;
    }
}

/* ---- errors ------------------------------------------------------------------------------- */

/* The call fails with `status` and a message naming the op and containing each needle. */
static void expect_error(tg_tape *tp, tg_tensor y, tg_status status, const char *const *needles)
{
    assert_false(tg_ok(y));
    assert_status(tg_tape_status(tp), status);
    for (; *needles; needles++)
        assert_contains(tg_tape_error(tp), *needles);
    tg_tape_reset(tp);
}
#define NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})

static void attention_errors(void **state)
{
    fixture *f = *state;
    tg_tape *tp = f->tp;
    tg_tensor none = {0};
#define T32(...)                                                                                   \
    tg_zeros(tp, TG_F32, sizeof((int64_t[]){__VA_ARGS__}) / 8, (int64_t[]){__VA_ARGS__})
#define T64(...)                                                                                   \
    tg_zeros(tp, TG_F64, sizeof((int64_t[]){__VA_ARGS__}) / 8, (int64_t[]){__VA_ARGS__})
#define I64(...)                                                                                   \
    tg_zeros(tp, TG_I64, sizeof((int64_t[]){__VA_ARGS__}) / 8, (int64_t[]){__VA_ARGS__})
    /* d differs between q and k. */
    expect_error(
        tp,
        tg_scaled_dot_product_attention(T32(2, 3, 4), T32(2, 5, 6), T32(2, 5, 2), none, false, 0),
        TG_SHAPE,
        NEEDLES("scaled_dot_product_attention: q and k have different d", "4 and 6", "f32[2,3,4]",
                "f32[2,5,6]", "f32[2,5,2]"));
    /* Tk differs between k and v. */
    expect_error(tp,
                 tg_scaled_dot_product_attention(T32(3, 4), T32(5, 4), T32(6, 2), none, false, 0),
                 TG_SHAPE, NEEDLES("different numbers of keys: 5 and 6", "f32[5,4]", "f32[6,2]"));
    /* Batch dims that do not broadcast. */
    expect_error(
        tp,
        tg_scaled_dot_product_attention(T32(2, 3, 4), T32(3, 5, 4), T32(3, 5, 2), none, false, 0),
        TG_SHAPE, NEEDLES("batch dims of q, k and v do not broadcast", "f32[2,3,4]", "f32[3,5,4]"));
    expect_error(tp,
                 tg_scaled_dot_product_attention(T32(2, 1, 3, 4), T32(1, 2, 5, 4), T32(3, 1, 5, 2),
                                                 none, false, 0),
                 TG_SHAPE, NEEDLES("do not broadcast", "f32[3,1,5,2]"));
    /* A mask that does not broadcast to [batch..., tq, tk]: wrong keys, wrong queries, more
     * batch dims than the output. */
    expect_error(tp,
                 tg_scaled_dot_product_attention(T32(2, 3, 4), T32(2, 5, 4), T32(2, 5, 2),
                                                 T32(3, 4), false, 0),
                 TG_SHAPE,
                 NEEDLES("mask does not broadcast to the scores' shape [2,3,5]", "f32[3,4]"));
    expect_error(tp,
                 tg_scaled_dot_product_attention(T32(2, 3, 4), T32(2, 5, 4), T32(2, 5, 2),
                                                 I64(2, 2, 5), false, 0),
                 TG_SHAPE, NEEDLES("[2,3,5]", "i64[2,2,5]"));
    expect_error(tp,
                 tg_scaled_dot_product_attention(T32(2, 3, 4), T32(2, 5, 4), T32(2, 5, 2),
                                                 T32(1, 2, 3, 5), false, 0),
                 TG_SHAPE, NEEDLES("[2,3,5]", "f32[1,2,3,5]"));
    /* Wrong dtypes: mixed operands, integer operands, a mask of another float dtype. */
    expect_error(tp,
                 tg_scaled_dot_product_attention(T32(3, 4), T64(5, 4), T32(5, 2), none, false, 0),
                 TG_DTYPE, NEEDLES("one dtype: q is f32, k is f64"));
    expect_error(tp,
                 tg_scaled_dot_product_attention(I64(3, 4), I64(5, 4), I64(5, 2), none, false, 0),
                 TG_DTYPE, NEEDLES("must be f32 or f64, not i64"));
    expect_error(
        tp, tg_scaled_dot_product_attention(T32(3, 4), T32(5, 4), T32(5, 2), T64(3, 5), false, 0),
        TG_DTYPE, NEEDLES("mask must be f32 (added to the scores) or i64", "f64[3,5]"));
    /* Fewer than 2 dims. */
    expect_error(tp, tg_scaled_dot_product_attention(T32(4), T32(5, 4), T32(5, 2), none, false, 0),
                 TG_SHAPE, NEEDLES("q needs at least 2 dims", "f32[4]"));
    expect_error(tp, tg_scaled_dot_product_attention(T32(3, 4), T32(5, 4), T32(2), none, false, 0),
                 TG_SHAPE, NEEDLES("v needs at least 2 dims"));
    /* A scale that is not finite. */
    expect_error(tp,
                 tg_scaled_dot_product_attention(T32(3, 4), T32(5, 4), T32(5, 2), none, false, NAN),
                 TG_RANGE, NEEDLES("scale must be finite"));
    /* Batch dims whose product with the scores overflows a shape. */
    int64_t big = (int64_t)1 << 40;
    expect_error(tp,
                 tg_scaled_dot_product_attention(T32(big, 1, 0, 1), T32(1, big, 0, 1),
                                                 T32(1, 1, 0, 1), none, false, 0),
                 TG_SHAPE, NEEDLES("overflow a shape"));
    /* A mask that is an error handle, or stale, passes the tape's error on. */
    tg_tensor stale = T32(3, 5);
    tg_tape_reset(tp);
    expect_error(tp,
                 tg_scaled_dot_product_attention(T32(3, 4), T32(5, 4), T32(5, 2), stale, false, 0),
                 TG_STALE, NEEDLES("scaled_dot_product_attention"));
#undef T32
#undef T64
#undef I64
}

/* ---- tril, triu, masked_fill ---------------------------------------------------------------- */

static void triangles_reference(void **state)
{
    fixture *f = *state;
    static const int64_t diagonals[] = {-5, -1, 0, 2, 7};
    for (int p = 0; p < 2; p++) {
        tg_dtype dt = p ? TG_F32 : TG_F64;
        for (int i = 0; i < 5; i++)
            for (int upper = 0; upper < 2; upper++) {
                tg_tape_reset(f->tp);
                tg_tensor x = input(f->tp, "tri", "x", dt), g;
                tg_tensor y = upper ? tg_triu(x, diagonals[i]) : tg_tril(x, diagonals[i]);
                tg_tensor loss = tg_sum_all(tg_mul(y, input(f->tp, "tri", "r", dt)));
                assert_status(tg_grad(1, &loss, NULL, 1, &x, &g, 0), TG_OK);
                char name[32];
                snprintf(name, sizeof name, "%s_%s%lld", upper ? "triu" : "tril",
                         diagonals[i] < 0 ? "m" : "", (long long)llabs(diagonals[i]));
                expect(y, "tri", name, 0); /* a data move: exact */
                char gname[40];
                snprintf(gname, sizeof gname, "grad_%s", name);
                expect(g, "tri", gname, 0);
            }
    }
    /* i64 (a data move, for boolean masks) keeps every bit; extreme diagonals. */
    tg_tape_reset(f->tp);
    const int64_t vals[6] = {INT64_MIN, -1, INT64_MAX, 7, 0, 3};
    tg_tensor m = tg_tensor_from(f->tp, TG_I64, 2, (int64_t[]){2, 3}, vals);
    int64_t out[6];
    assert_status(tg_read(tg_tril(m, 0), TG_I64, out, 6), TG_OK);
    assert_true(out[0] == INT64_MIN && out[1] == 0 && out[2] == 0 && out[3] == 7 && out[4] == 0);
    assert_status(tg_read(tg_triu(m, 1), TG_I64, out, 6), TG_OK);
    assert_true(out[0] == 0 && out[1] == -1 && out[2] == INT64_MAX && out[5] == 3 && out[4] == 0);
    assert_status(tg_read(tg_triu(m, INT64_MIN), TG_I64, out, 6), TG_OK);
    assert_memory_equal(out, vals, sizeof vals);
    assert_status(tg_read(tg_tril(m, INT64_MIN), TG_I64, out, 6), TG_OK);
    for (int i = 0; i < 6; i++)
        assert_true(out[i] == 0);
    /* Errors: fewer than 2 dims, a dtype that is none of the three. */
    assert_false(tg_ok(tg_tril(VEC64(f->tp, 1, 2), 0)));
    assert_status(tg_tape_status(f->tp), TG_SHAPE);
    assert_contains(tg_tape_error(f->tp), "tril: input needs at least 2 dims, got 1");
    assert_contains(tg_tape_error(f->tp), "f64[2]");
}

static void masked_fill_reference(void **state)
{
    fixture *f = *state;
    for (int p = 0; p < 2; p++) {
        tg_dtype dt = p ? TG_F32 : TG_F64;
        tg_tape_reset(f->tp);
        tg_tensor a = input(f->tp, "fill", "a", dt), g;
        tg_tensor mask = input(f->tp, "fill", "mask", TG_I64);
        tg_tensor y = tg_masked_fill(a, mask, -2.5);
        tg_tensor loss = tg_sum_all(tg_mul(y, input(f->tp, "fill", "r", dt)));
        assert_status(tg_grad(1, &loss, NULL, 1, &a, &g, 0), TG_OK);
        /* out is a data move (exact); grad_a sums the gradient over a's broadcast dim. */
        double tol = dt == TG_F64 ? TOL64 : TOL32;
        expect(y, "fill", "out", 0);
        expect(g, "fill", "grad_a", tol);
        /* The same with the mask as a float 0/1 tensor. */
        tg_tensor fmask = input(f->tp, "fill", "mask", dt);
        y = tg_masked_fill(a, fmask, -2.5);
        loss = tg_sum_all(tg_mul(y, input(f->tp, "fill", "r", dt)));
        assert_status(tg_grad(1, &loss, NULL, 1, &a, &g, 0), TG_OK);
        expect(y, "fill", "out", 0);
        expect(g, "fill", "grad_a", tol);
    }
    /* -inf fills; errors name the shapes. */
    tg_tape_reset(f->tp);
    tg_tensor a = VEC64(f->tp, 1, 2, 3);
    const double *y = tg_data(tg_masked_fill(a, VEC64(f->tp, 0, 1, 0), -INFINITY));
    assert_true(y[0] == 1 && y[1] == -INFINITY && y[2] == 3);
    assert_false(tg_ok(tg_masked_fill(a, VEC64(f->tp, 0, 1), 0)));
    assert_status(tg_tape_status(f->tp), TG_SHAPE);
    assert_contains(tg_tape_error(f->tp), "masked_fill: a and mask do not broadcast");
    assert_contains(tg_tape_error(f->tp), "f64[3], f64[2]");
    tg_tape_reset(f->tp);
    tg_tensor m32 = tg_zeros(f->tp, TG_F32, 1, (int64_t[]){3});
    assert_false(tg_ok(tg_masked_fill(VEC64(f->tp, 1, 2, 3), m32, 0)));
    assert_status(tg_tape_status(f->tp), TG_DTYPE);
    assert_contains(tg_tape_error(f->tp), "mask must be f64 (like a) or i64, not f32");
    tg_tape_reset(f->tp);
    tg_tensor idx = tg_zeros(f->tp, TG_I64, 1, (int64_t[]){3});
    assert_false(tg_ok(tg_masked_fill(idx, idx, 0)));
    assert_status(tg_tape_status(f->tp), TG_DTYPE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(reference_values_and_gradients),
        TEST(reference_hessian_vector_products),
        TEST(rows_that_see_no_key_are_zero),
        TEST(threads_give_the_same_bits),
        TEST(empty_sizes),
        TEST(matches_the_composition),
        TEST(attention_errors),
        TEST(triangles_reference),
        TEST(masked_fill_reference),
    };
    return cmocka_run_group_tests_name("attention", tests, load_refs, ref_free);
}
