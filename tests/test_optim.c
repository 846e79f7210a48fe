/* test_optim.c — optimisers, gradient clipping and learning-rate schedules against PyTorch
 * (tests/reference/optim_reference.txt, written by tests/reference/generate_optim.py): 10 steps
 * of every configuration from the same parameters and gradients agree to 1e-6 in f32 and 1e-12
 * in f64, state buffers included. Also: graph steps give the step's numbers, a hypergradient
 * d(loss after 3 steps)/d(lr) agrees with finite differences, a failed step changes nothing,
 * bad options are clear errors, and the state accessors restore an optimiser exactly. */
#include "common.h"
#include "reference.h"

#include <pthread.h>

#define REF_PATH TG_SOURCE_DIR "/tests/reference/optim_reference.txt"
#define TOL_F32 1e-6
#define TOL_F64 1e-12
#define NPARAMS 3
#define NSTEPS 10

/* ---- the reference file (read by reference.h) ------------------------------------------------ */

static int load_refs(void **state)
{
    (void)state;
    return ref_load(REF_PATH, "tests/reference/generate_optim.py");
}

/* Reference tensors of `graph` whose name starts with `prefix` and has `dots` dots. */
static int count_refs(const char *graph, const char *prefix, int dots)
{
    int count = 0;
    for (size_t i = 0; i < refs.n; i++) {
        if (strcmp(refs.t[i].graph, graph) || strncmp(refs.t[i].name, prefix, strlen(prefix)))
            continue;
        int d = 0;
        for (const char *c = refs.t[i].name; *c; c++)
            d += *c == '.';
        count += d == dots;
    }
    return count;
}

/* ---- comparing ------------------------------------------------------------------------------- */

/* Worst errors seen by compare() since the last reset: |got - want| / (1 + |want|) (what the
 * tolerance bounds) and |got - want| / |want| (plain relative, for the report). */
static double worst_mixed, worst_rel;

/* `n` values of dtype dt against the reference tensor, within tol * (1 + |want|). */
static void compare(const char *graph, const char *name, tg_dtype dt, int64_t n, const void *got,
                    double tol)
{
    const ref_tensor *r = ref(graph, name);
    if (n != r->numel)
        fail_msg("%s.%s: %lld values, expected %lld", graph, name, (long long)n,
                 (long long)r->numel);
    for (int64_t i = 0; i < n; i++) {
        double g = dt == TG_F32 ? ((const float *)got)[i] : ((const double *)got)[i];
        double want = r->v[i], diff = fabs(g - want);
        if (!(diff <= tol * (1 + fabs(want))))
            fail_msg("%s.%s: element %lld is %.17g, PyTorch gives %.17g (tolerance %g)", graph,
                     name, (long long)i, g, want, tol);
        if (diff / (1 + fabs(want)) > worst_mixed)
            worst_mixed = diff / (1 + fabs(want));
        if (want != 0 && diff / fabs(want) > worst_rel)
            worst_rel = diff / fabs(want);
    }
}

/* Fills `dst` (numel of dtype dt) from the reference tensor. */
static void load(const char *graph, const char *name, tg_dtype dt, int64_t n, void *dst)
{
    const ref_tensor *r = ref(graph, name);
    assert_int_equal(r->numel, n);
    for (int64_t i = 0; i < n; i++) {
        if (dt == TG_F32)
            ((float *)dst)[i] = (float)r->v[i];
        else
            ((double *)dst)[i] = r->v[i];
    }
}

/* ---- the configurations (generate_optim.py's OPTIMISERS, same order) ---------------------------
 */

typedef enum kind { SGD, ADAM, ADAMW, RMSPROP } kind;

typedef struct config {
    const char *name;
    kind kind;
    tg_sgd_options sgd;
    tg_adam_options adam;
    tg_rmsprop_options rms;
} config;

static const config configs[] = {
    {"sgd", SGD, .sgd = {.lr = 0.1}},
    {"sgd_momentum", SGD,
     .sgd = {.lr = 0.05, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01}},
    {"sgd_nesterov", SGD,
     .sgd = {.lr = 0.05, .momentum = 0.9, .nesterov = true, .weight_decay = 0.001}},
    {"adam", ADAM, .adam = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8}},
    {"adam_wd_amsgrad", ADAM,
     .adam = {.lr = 0.01,
              .beta1 = 0.8,
              .beta2 = 0.95,
              .eps = 1e-6,
              .weight_decay = 0.1,
              .amsgrad = true}},
    {"adamw", ADAMW,
     .adam = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1}},
    {"adamw_amsgrad", ADAMW,
     .adam = {.lr = 0.02,
              .beta1 = 0.9,
              .beta2 = 0.999,
              .eps = 1e-8,
              .weight_decay = 0.05,
              .amsgrad = true}},
    {"rmsprop", RMSPROP, .rms = {.lr = 0.01, .alpha = 0.99, .eps = 1e-8}},
    {"rmsprop_centered", RMSPROP,
     .rms = {.lr = 0.01,
             .alpha = 0.9,
             .eps = 1e-6,
             .weight_decay = 0.01,
             .momentum = 0.9,
             .centered = true}},
};
#define NCONFIGS (sizeof configs / sizeof configs[0])

static tg_status make_optim(tg_ctx *ctx, const config *c, size_t n, tg_param *const *ps,
                            tg_optim **out)
{
    switch (c->kind) {
    case SGD:
        return tg_sgd_new(ctx, n, ps, &c->sgd, out);
    case ADAM:
        return tg_adam_new(ctx, n, ps, &c->adam, out);
    case ADAMW:
        return tg_adamw_new(ctx, n, ps, &c->adam, out);
    default:
        return tg_rmsprop_new(ctx, n, ps, &c->rms, out);
    }
}

/* The reference parameters p0..p2 as parameters of ctx in dtype dt. */
static void make_params(tg_ctx *ctx, tg_dtype dt, tg_param **ps)
{
    for (int i = 0; i < NPARAMS; i++) {
        char name[8];
        snprintf(name, sizeof name, "p%d", i);
        const ref_tensor *r = ref("inputs", name);
        assert_status(tg_param_new(ctx, name, dt, r->ndim, r->shape, &ps[i]), TG_OK);
        double *v = r->v;
        if (dt == TG_F32) {
            float buf[64];
            assert_true(r->numel <= 64);
            for (int64_t j = 0; j < r->numel; j++)
                buf[j] = (float)v[j];
            assert_status(tg_param_set(ps[i], buf), TG_OK);
        } else {
            assert_status(tg_param_set(ps[i], v), TG_OK);
        }
    }
}

/* Gradient set `step` into the parameters' gradients. */
static void set_grads(tg_param **ps, int step)
{
    for (int i = 0; i < NPARAMS; i++) {
        char name[16];
        snprintf(name, sizeof name, "g%d.%d", step, i);
        load("inputs", name, tg_param_dtype(ps[i]), tg_param_numel(ps[i]), tg_param_grad(ps[i]));
    }
}

/* 10 steps of configuration c in dtype dt, compared with PyTorch's parameters and state. */
static void run_config(const config *c, tg_dtype dt)
{
    const char *tag = dt == TG_F32 ? "f32" : "f64";
    double tol = dt == TG_F32 ? TOL_F32 : TOL_F64;
    tg_ctx *ctx;
    tg_tape *tp;
    tg_param *ps[NPARAMS];
    tg_optim *opt;
    assert_status(tg_ctx_new(&ctx, NULL), TG_OK);
    assert_status(tg_tape_new(ctx, &tp), TG_OK);
    make_params(ctx, dt, ps);
    assert_status(make_optim(ctx, c, NPARAMS, ps, &opt), TG_OK);
    for (int k = 0; k < NSTEPS; k++) {
        set_grads(ps, k);
        if (tg_optim_step(opt, tp) != TG_OK)
            fail_msg("%s step %d: %s", c->name, k, tg_tape_error(tp));
        tg_optim_zero_grad(opt);
        tg_tape_reset(tp);
    }
    assert_int_equal(tg_optim_steps(opt), NSTEPS);
    char name[32];
    for (int i = 0; i < NPARAMS; i++) {
        snprintf(name, sizeof name, "%s.p%d", tag, i);
        compare(c->name, name, dt, tg_param_numel(ps[i]), tg_param_data(ps[i]), tol);
    }
    /* Every state buffer PyTorch keeps, under its name, and no other. */
    size_t count = tg_optim_state_count(opt);
    char prefix[8];
    snprintf(prefix, sizeof prefix, "%s.", tag);
    assert_int_equal(count, (size_t)count_refs(c->name, prefix, 2));
    for (size_t s = 0; s < count; s++) {
        const char *sname;
        tg_param *p;
        void *data;
        assert_status(tg_optim_state_info(opt, s, &sname, &p, &data), TG_OK);
        snprintf(name, sizeof name, "%s.%s.%s", tag, tg_param_name(p), sname);
        compare(c->name, name, dt, tg_param_numel(p), data, tol);
    }
    tg_optim_free(opt);
    tg_tape_free(tp);
    tg_ctx_free(ctx);
}

static void optimisers_match_pytorch(void **state)
{
    (void)state;
    for (size_t c = 0; c < NCONFIGS; c++) {
        for (int d = 0; d < 2; d++) {
            worst_mixed = worst_rel = 0;
            run_config(&configs[c], d ? TG_F64 : TG_F32);
            print_message("%-17s %s: worst error %.2g (|d|/(1+|ref|)), %.2g (|d|/|ref|)\n",
                          configs[c].name, d ? "f64" : "f32", worst_mixed, worst_rel);
        }
    }
}

/* ---- clipping and schedules ------------------------------------------------------------------ */

static void clipping_matches_pytorch(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        double limit, norm_type; /* norm_type 0: clip by value */
    } cases[] = {
        {"clip_norm2", 1.0, 2.0},         {"clip_norm2_noclip", 100.0, 2.0},
        {"clip_norm_inf", 0.5, INFINITY}, {"clip_norm3", 0.7, 3.0},
        {"clip_value", 0.3, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int d = 0; d < 2; d++) {
            tg_dtype dt = d ? TG_F64 : TG_F32;
            const char *tag = d ? "f64" : "f32";
            double tol = d ? TOL_F64 : TOL_F32;
            tg_ctx *ctx;
            tg_param *ps[NPARAMS];
            char name[32];
            assert_status(tg_ctx_new(&ctx, NULL), TG_OK);
            make_params(ctx, dt, ps);
            set_grads(ps, 0);
            worst_mixed = worst_rel = 0;
            if (cases[c].norm_type == 0) {
                tg_clip_grad_value(NPARAMS, ps, cases[c].limit);
            } else {
                double total = tg_clip_grad_norm(NPARAMS, ps, cases[c].limit, cases[c].norm_type);
                snprintf(name, sizeof name, "%s.total_norm", tag);
                compare(cases[c].name, name, TG_F64, 1, &total, tol);
            }
            for (int i = 0; i < NPARAMS; i++) {
                snprintf(name, sizeof name, "%s.g%d", tag, i);
                compare(cases[c].name, name, dt, tg_param_numel(ps[i]), tg_param_grad(ps[i]), tol);
            }
            print_message("%-17s %s: worst error %.2g (|d|/(1+|ref|)), %.2g (|d|/|ref|)\n",
                          cases[c].name, tag, worst_mixed, worst_rel);
            tg_ctx_free(ctx);
        }
    }
}

static void clipping_bad_arguments(void **state)
{
    fixture *f = *state;
    tg_param *p;
    assert_status(tg_param_new(f->ctx, "p", TG_F64, 1, (int64_t[]){2}, &p), TG_OK);
    double *g = tg_param_grad(p);
    g[0] = 3;
    g[1] = -4;
    assert_true(isnan(tg_clip_grad_norm(1, &p, -1.0, 2.0)));
    assert_contains(tg_ctx_error(f->ctx), "max_norm");
    assert_true(isnan(tg_clip_grad_norm(1, &p, 1.0, 0.0)));
    assert_true(isnan(tg_clip_grad_norm(1, &p, 1.0, NAN)));
    tg_param *with_null[2] = {p, NULL};
    assert_true(isnan(tg_clip_grad_norm(2, with_null, 1.0, 2.0)));
    assert_contains(tg_ctx_error(f->ctx), "parameter 1 is NULL");
    tg_clip_grad_value(1, &p, -1.0);
    assert_contains(tg_ctx_error(f->ctx), "clip value");
    assert_close(g[0], 3, 0);
    assert_close(g[1], -4, 0);
    assert_close(tg_clip_grad_norm(0, NULL, 1.0, 2.0), 0, 0);
    /* Norm 1 and a norm below the limit: nothing changes, the norm is returned. */
    assert_close(tg_clip_grad_norm(1, &p, 10.0, 1.0), 7.0, 1e-15);
    assert_close(tg_clip_grad_norm(1, &p, 10.0, 2.0), 5.0, 1e-15);
    assert_close(g[0], 3, 0);
    assert_close(g[1], -4, 0);
}

static void schedules_match_pytorch(void **state)
{
    (void)state;
    static const char *names[] = {"sched_step", "sched_exponential", "sched_cosine",
                                  "sched_warmup"};
    for (int s = 0; s < 4; s++) {
        const ref_tensor *closed = ref(names[s], "closed");
        double got[64];
        assert_true(closed->numel <= 64);
        for (int64_t t = 0; t < closed->numel; t++) {
            switch (s) {
            case 0:
                got[t] = tg_lr_step(0.1, t, 3, 0.5);
                break;
            case 1:
                got[t] = tg_lr_exponential(0.1, t, 0.9);
                break;
            case 2:
                got[t] = tg_lr_cosine(0.1, t, 10, 0.001);
                break;
            default:
                got[t] = tg_lr_warmup(0.1, t, 4, 0.25);
                break;
            }
        }
        /* The closed form exactly (same formula), PyTorch's chained updates to rounding. */
        compare(names[s], "closed", TG_F64, closed->numel, got, 1e-15);
        compare(names[s], "chained", TG_F64, closed->numel, got, 1e-14);
    }
    assert_true(isnan(tg_lr_step(0.1, 1, 0, 0.5)));
    assert_true(isnan(tg_lr_cosine(0.1, 1, 0, 0.0)));
    assert_true(isnan(tg_lr_warmup(0.1, -1, 4, 0.5)));
    assert_true(isnan(tg_lr_warmup(0.1, 1, 4, 0.0)));
    assert_close(tg_lr_warmup(0.1, 7, 0, 0.5), 0.1, 0);
}

/* ---- graph steps ------------------------------------------------------------------------------
 */

/* For every configuration: 4 tg_optim_step calls and 4 graph steps from the same values agree
 * exactly with lr none (the same rule on the same numbers), and to rounding with lr a tensor. */
static void graph_step_matches_step(void **state)
{
    (void)state;
    for (size_t c = 0; c < NCONFIGS; c++) {
        for (int d = 0; d < 2; d++) {
            tg_dtype dt = d ? TG_F64 : TG_F32;
            tg_ctx *ctx;
            tg_tape *tp, *gtp;
            tg_param *ps[NPARAMS];
            tg_optim *opt;
            assert_status(tg_ctx_new(&ctx, NULL), TG_OK);
            assert_status(tg_tape_new(ctx, &tp), TG_OK);
            assert_status(tg_tape_new(ctx, &gtp), TG_OK);
            make_params(ctx, dt, ps);
            assert_status(make_optim(ctx, &configs[c], NPARAMS, ps, &opt), TG_OK);
            size_t k = tg_optim_state_size(opt);
            tg_tensor cur[2][NPARAMS], st[2][NPARAMS * 4], grads[NPARAMS], next[NPARAMS];
            memset(st, 0, sizeof st);
            tg_tensor lr = tg_constant(gtp, dt, tg_optim_lr(opt));
            for (int i = 0; i < NPARAMS; i++) {
                cur[0][i] = tg_tensor_from(gtp, dt, tg_param_ndim(ps[i]), tg_param_shape(ps[i]),
                                           tg_param_data(ps[i]));
                cur[1][i] = cur[0][i];
            }
            for (int step = 0; step < 4; step++) {
                set_grads(ps, step);
                for (int i = 0; i < NPARAMS; i++)
                    grads[i] = tg_param_grad_tensor(gtp, ps[i]);
                assert_status(tg_optim_step(opt, tp), TG_OK);
                tg_tape_reset(tp);
                for (int v = 0; v < 2; v++) {
                    tg_tensor none = {0};
                    assert_status(tg_optim_step_graph(opt, v ? lr : none, NPARAMS, cur[v], grads,
                                                      st[v], next),
                                  TG_OK);
                    memcpy(cur[v], next, sizeof next);
                }
            }
            assert_tape_ok(gtp);
            assert_int_equal(tg_optim_steps(opt), 4);
            for (int i = 0; i < NPARAMS; i++) {
                size_t bytes = (size_t)tg_param_numel(ps[i]) * tg_dtype_size(dt);
                if (memcmp(tg_data(cur[0][i]), tg_param_data(ps[i]), bytes))
                    fail_msg("%s (%s): graph step differs from step for p%d", configs[c].name,
                             tg_dtype_name(dt), i);
                size_t nb = tg_optim_state_count(opt) / NPARAMS;
                for (size_t j = 0; j < nb; j++) {
                    void *data;
                    assert_status(tg_optim_state_info(opt, (size_t)i * nb + j, NULL, NULL, &data),
                                  TG_OK);
                    if (memcmp(tg_data(st[0][(size_t)i * k + j]), data, bytes))
                        fail_msg("%s: graph state %zu of p%d differs", configs[c].name, j, i);
                }
                /* With lr as a tensor: the same up to rounding. */
                double a[64], b[64];
                int64_t n = tg_param_numel(ps[i]);
                assert_status(tg_read(cur[1][i], TG_F64, a, 64), TG_OK);
                assert_status(tg_read(cur[0][i], TG_F64, b, 64), TG_OK);
                for (int64_t e = 0; e < n; e++)
                    assert_close(a[e], b[e], d ? 1e-13 : 1e-6);
            }
            if (configs[c].kind == ADAM || configs[c].kind == ADAMW) /* the step count */
                assert_close(tg_item(st[0][k - 1]), 4, 0);
            tg_optim_free(opt);
            tg_tape_free(gtp);
            tg_tape_free(tp);
            tg_ctx_free(ctx);
        }
    }
}

/* loss(w) = sum(tanh(w * a + b)^2) + 0.1 * sum(w^2), f64. */
static tg_tensor toy_loss(tg_tensor w)
{
    tg_tape *tp = tg_tensor_tape(w);
    tg_tensor a = VEC64(tp, 0.7, -1.3, 0.4, 2.0), b = VEC64(tp, 0.1, 0.5, -0.3, 0.2);
    return tg_add(tg_sum_all(tg_square(tg_tanh(tg_add(tg_mul(w, a), b)))),
                  tg_mul_scalar(tg_sum_all(tg_square(w)), 0.1));
}

/* The loss after `steps` graph steps from w0 with lr (a 0-d tensor); gradients by tg_grad with
 * TG_CREATE_GRAPH so that the whole unrolled run is differentiable. */
static tg_tensor unrolled(tg_optim *opt, tg_tensor lr, int steps)
{
    tg_tape *tp = tg_tensor_tape(lr);
    tg_tensor w = VEC64(tp, 0.5, -0.2, 0.9, -1.1), st[4] = {{0}}, g, next;
    for (int s = 0; s < steps; s++) {
        tg_tensor loss = toy_loss(w);
        if (tg_grad(1, &loss, NULL, 1, &w, &g, TG_CREATE_GRAPH) != TG_OK)
            fail_msg("tg_grad: %s", tg_tape_error(tp));
        if (tg_optim_step_graph(opt, lr, 1, &w, &g, st, &next) != TG_OK)
            fail_msg("tg_optim_step_graph: %s", tg_tape_error(tp));
        w = next;
    }
    return toy_loss(w);
}

static void hypergradient_matches_finite_differences(void **state)
{
    fixture *f = *state;
    tg_param *dummy;
    assert_status(tg_param_new(f->ctx, "dummy", TG_F64, 1, (int64_t[]){4}, &dummy), TG_OK);
    static const config hyper[] = {
        {"sgd", SGD, .sgd = {.lr = 0.3}},
        {"sgd_momentum", SGD,
         .sgd = {.lr = 0.2, .momentum = 0.9, .dampening = 0.2, .weight_decay = 0.05}},
        {"sgd_nesterov", SGD, .sgd = {.lr = 0.2, .momentum = 0.8, .nesterov = true}},
        {"adam", ADAM,
         .adam = {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01}},
        {"adamw", ADAMW,
         .adam = {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1}},
        {"rmsprop", RMSPROP,
         .rms = {.lr = 0.05, .alpha = 0.9, .eps = 1e-8, .momentum = 0.5, .centered = true}},
    };
    for (size_t c = 0; c < sizeof hyper / sizeof hyper[0]; c++) {
        tg_optim *opt;
        assert_status(make_optim(f->ctx, &hyper[c], 1, &dummy, &opt), TG_OK);
        double lr0 = tg_optim_lr(opt), h = 1e-5;
        tg_tape_reset(f->tp);
        tg_tensor lr = tg_constant(f->tp, TG_F64, lr0), dlr;
        tg_tensor loss = unrolled(opt, lr, 3);
        assert_status(tg_grad(1, &loss, NULL, 1, &lr, &dlr, 0), TG_OK);
        double analytic = tg_item(dlr);
        double up = tg_item(unrolled(opt, tg_constant(f->tp, TG_F64, lr0 + h), 3));
        double down = tg_item(unrolled(opt, tg_constant(f->tp, TG_F64, lr0 - h), 3));
        double numeric = (up - down) / (2 * h);
        assert_tape_ok(f->tp);
        print_message("%-12s d(loss after 3 steps)/d(lr) = %.10g, finite differences %.10g\n",
                      hyper[c].name, analytic, numeric);
        assert_true(fabs(analytic) > 1e-3); /* a real dependence */
        assert_close(analytic, numeric, 1e-6);
        /* lr none: the optimiser's lr as a constant gives the same loss. */
        tg_tensor none = {0};
        tg_tape *tp = f->tp;
        tg_tensor w = VEC64(tp, 0.5, -0.2, 0.9, -1.1), st[4] = {{0}}, g, next;
        for (int s = 0; s < 3; s++) {
            tg_tensor l = toy_loss(w);
            assert_status(tg_grad(1, &l, NULL, 1, &w, &g, 0), TG_OK);
            assert_status(tg_optim_step_graph(opt, none, 1, &w, &g, st, &next), TG_OK);
            w = next;
        }
        assert_close(tg_item(toy_loss(w)), tg_item(loss), 1e-14);
        tg_optim_free(opt);
    }
}

/* Step counts in a graph step's state: whole numbers in [0, 2^53 - 2] (the new count must be
 * exact too); anything else (NaN was converted to an integer anyway) is TG_RANGE, state untouched.
 */
static void graph_step_counts(tg_tape *tp, tg_optim *opt)
{
    const double bad[] = {NAN, INFINITY, -0.5, 2.5, 9007199254740991.0, 1e300};
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        tg_tensor w = tg_ones(tp, TG_F32, 1, (int64_t[]){3}), next;
        tg_tensor g = tg_ones(tp, TG_F32, 1, (int64_t[]){3});
        tg_tensor count = tg_constant(tp, TG_F64, bad[b]), st[3] = {{0}, {0}, count};
        assert_status(tg_optim_step_graph(opt, (tg_tensor){0}, 1, &w, &g, st, &next), TG_RANGE);
        assert_contains(tg_tape_error(tp), "need a whole number in [0, 2^53 - 2]");
        assert_true(st[2].id_ == count.id_ && tg_tensor_tape(st[0]) == NULL);
        tg_tape_reset(tp);
    }
    tg_tensor w = tg_ones(tp, TG_F32, 1, (int64_t[]){3}), next;
    tg_tensor g = tg_ones(tp, TG_F32, 1, (int64_t[]){3});
    tg_tensor st[3] = {{0}, {0}, tg_constant(tp, TG_F64, 9007199254740990.0)};
    assert_status(tg_optim_step_graph(opt, (tg_tensor){0}, 1, &w, &g, st, &next), TG_OK);
    assert_true(tg_item(st[2]) == 9007199254740991.0);
    tg_tape_reset(tp);
}

static void graph_step_errors(void **state)
{
    fixture *f = *state;
    tg_param *p;
    tg_optim *opt;
    assert_status(tg_param_new(f->ctx, "p", TG_F32, 1, (int64_t[]){3}, &p), TG_OK);
    tg_adam_options ao = TG_ADAM_DEFAULTS;
    assert_status(tg_adam_new(f->ctx, 1, &p, &ao, &opt), TG_OK);
    assert_int_equal(tg_optim_state_size(opt), 3);
    tg_tensor w = tg_ones(f->tp, TG_F32, 1, (int64_t[]){3});
    tg_tensor g = tg_ones(f->tp, TG_F32, 1, (int64_t[]){3});
    tg_tensor st[3] = {{0}}, next, none = {0};

    /* A gradient of another shape (it would broadcast): TG_SHAPE, state untouched. */
    tg_tensor g2 = tg_ones(f->tp, TG_F32, 2, (int64_t[]){2, 3});
    assert_status(tg_optim_step_graph(opt, none, 1, &w, &g2, st, &next), TG_SHAPE);
    assert_contains(tg_tape_error(f->tp), "gradient 0 is f32[2,3], parameter 0 is f32[3]");
    assert_false(tg_ok(next));
    assert_null(tg_tensor_tape(st[0]));
    tg_tape_reset(f->tp);

    /* lr of another dtype, and not 0-d. */
    w = tg_ones(f->tp, TG_F32, 1, (int64_t[]){3});
    g = tg_ones(f->tp, TG_F32, 1, (int64_t[]){3});
    assert_status(tg_optim_step_graph(opt, tg_constant(f->tp, TG_F64, 0.1), 1, &w, &g, st, &next),
                  TG_DTYPE);
    assert_contains(tg_tape_error(f->tp), "lr is f64[]");
    tg_tape_reset(f->tp);
    w = tg_ones(f->tp, TG_F32, 1, (int64_t[]){3});
    g = tg_ones(f->tp, TG_F32, 1, (int64_t[]){3});
    assert_status(
        tg_optim_step_graph(opt, tg_ones(f->tp, TG_F32, 1, (int64_t[]){1}), 1, &w, &g, st, &next),
        TG_SHAPE);
    tg_tape_reset(f->tp);

    /* A state buffer of the wrong shape, and a bad step count. */
    w = tg_ones(f->tp, TG_F32, 1, (int64_t[]){3});
    g = tg_ones(f->tp, TG_F32, 1, (int64_t[]){3});
    st[0] = tg_ones(f->tp, TG_F32, 1, (int64_t[]){4});
    assert_status(tg_optim_step_graph(opt, none, 1, &w, &g, st, &next), TG_SHAPE);
    assert_contains(tg_tape_error(f->tp), "exp_avg 0");
    tg_tape_reset(f->tp);
    w = tg_ones(f->tp, TG_F32, 1, (int64_t[]){3});
    g = tg_ones(f->tp, TG_F32, 1, (int64_t[]){3});
    st[0] = none;
    st[2] = tg_constant(f->tp, TG_F64, -1);
    assert_status(tg_optim_step_graph(opt, none, 1, &w, &g, st, &next), TG_RANGE);
    tg_tape_reset(f->tp);
    graph_step_counts(f->tp, opt);

    /* Tensors of two tapes. */
    tg_tape *tp2;
    assert_status(tg_tape_new(f->ctx, &tp2), TG_OK);
    w = tg_ones(f->tp, TG_F32, 1, (int64_t[]){3});
    g = tg_ones(tp2, TG_F32, 1, (int64_t[]){3});
    memset(st, 0, sizeof st);
    assert_status(tg_optim_step_graph(opt, none, 1, &w, &g, st, &next), TG_INVALID);
    assert_contains(tg_tape_error(f->tp), "another tape");
    tg_tape_free(tp2);
    tg_tape_reset(f->tp);

    /* NULL arrays: a context error. */
    assert_status(tg_optim_step_graph(opt, none, 1, NULL, &g, st, &next), TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "NULL");
    tg_optim_free(opt);
}

/* ---- failures change nothing ----------------------------------------------------------------- */

/* An allocator that refuses every request after `budget` of them (when armed) and counts the
 * bytes outstanding. */
typedef struct budget {
    bool armed;
    long budget;
    size_t bytes;
} budget;

static void *budget_alloc(void *user, void *ptr, size_t old_size, size_t new_size)
{
    budget *b = user;
    if (new_size == 0) {
        if (ptr)
            b->bytes -= old_size;
        free(ptr);
        return NULL;
    }
    if (b->armed && b->budget-- <= 0)
        return NULL;
    void *p = realloc(ptr, new_size);
    if (p)
        b->bytes += new_size - (ptr ? old_size : 0);
    return p;
}

/* Copies of every parameter value, gradient and state buffer of an optimiser, to compare. */
typedef struct snapshot {
    size_t size;
    unsigned char *data;
} snapshot;

static snapshot take(tg_optim *opt)
{
    snapshot s = {0, NULL};
    size_t n = tg_optim_param_count(opt), m = tg_optim_state_count(opt);
    for (int pass = 0; pass < 2; pass++) {
        size_t at = 0;
        for (size_t i = 0; i < n + m; i++) {
            tg_param *p;
            void *state = NULL;
            if (i < n)
                p = tg_optim_param(opt, i);
            else
                assert_status(tg_optim_state_info(opt, i - n, NULL, &p, &state), TG_OK);
            size_t bytes = (size_t)tg_param_numel(p) * tg_dtype_size(tg_param_dtype(p));
            if (pass) {
                memcpy(s.data + at, state ? state : tg_param_data(p), bytes);
                if (!state)
                    memcpy(s.data + at + bytes, tg_param_grad(p), bytes);
            }
            at += state ? bytes : 2 * bytes;
        }
        if (!pass) {
            s.size = at;
            s.data = malloc(at);
            assert_non_null(s.data);
        }
    }
    return s;
}

static void same_as(tg_optim *opt, snapshot before, int64_t steps)
{
    snapshot now = take(opt);
    assert_int_equal(now.size, before.size);
    assert_memory_equal(now.data, before.data, now.size);
    assert_int_equal(tg_optim_steps(opt), steps);
    free(now.data);
}

static void failed_step_changes_nothing(void **state)
{
    (void)state;
    for (size_t c = 0; c < NCONFIGS; c++) {
        budget b = {false, 0, 0};
        tg_ctx_options o = {.alloc = budget_alloc, .alloc_user = &b};
        tg_ctx *ctx, *other;
        tg_tape *tp, *foreign;
        tg_param *ps[3];
        tg_optim *opt;
        assert_status(tg_ctx_new(&ctx, &o), TG_OK);
        assert_status(tg_ctx_new(&other, NULL), TG_OK);
        assert_status(tg_tape_new(other, &foreign), TG_OK);
        static const int64_t sizes[3] = {3000, 5000, 8000};
        for (int i = 0; i < 3; i++) {
            assert_status(tg_param_new(ctx, NULL, TG_F64, 1, &sizes[i], &ps[i]), TG_OK);
            tg_param_uniform(ps[i], -1, 1, (uint64_t)i + 1);
        }
        assert_status(make_optim(ctx, &configs[c], 3, ps, &opt), TG_OK);
        /* One good step so that the state is live. */
        assert_status(tg_tape_new(ctx, &tp), TG_OK);
        for (int i = 0; i < 3; i++) {
            double *g = tg_param_grad(ps[i]);
            for (int64_t j = 0; j < sizes[i]; j++)
                g[j] = sin((double)(j + 7 * i));
        }
        assert_status(tg_optim_step(opt, tp), TG_OK);
        tg_tape_free(tp);
        snapshot before = take(opt);

        /* A tape already in error. */
        assert_status(tg_tape_new(ctx, &tp), TG_OK);
        tg_tape_fail(tp, TG_RANGE, "an earlier failure");
        assert_status(tg_optim_step(opt, tp), TG_RANGE);
        assert_string_equal(tg_tape_error(tp), "an earlier failure");
        same_as(opt, before, 1);
        tg_tape_free(tp);

        /* A tape of another context: the parameters are of this one. */
        assert_status(tg_optim_step(opt, foreign), TG_INVALID);
        assert_contains(tg_tape_error(foreign), "another context");
        same_as(opt, before, 1);

        /* A step allocates nothing, so it cannot run out of memory: with every request refused
         * it succeeds, and the allocator was not even asked. */
        assert_status(tg_tape_new(ctx, &tp), TG_OK);
        b.budget = 0;
        b.armed = true;
        assert_status(tg_optim_step(opt, tp), TG_OK);
        b.armed = false;
        assert_int_equal(b.budget, 0);
        tg_tape_free(tp);
        assert_int_equal(tg_optim_steps(opt), 2);

        /* Construction failing at every allocation leaks nothing. */
        size_t base = b.bytes;
        for (long limit = 0;; limit++) {
            tg_optim *o2 = NULL;
            b.budget = limit;
            b.armed = true;
            tg_status st = make_optim(ctx, &configs[c], 3, ps, &o2);
            b.armed = false;
            if (st == TG_OK) {
                tg_optim_free(o2);
                break;
            }
            assert_int_equal(st, TG_NOMEM);
            assert_null(o2);
            assert_contains(tg_ctx_error(ctx), "out of memory");
            assert_int_equal(b.bytes, base);
        }
        assert_int_equal(b.bytes, base);

        free(before.data);
        tg_optim_free(opt);
        tg_tape_free(foreign);
        tg_ctx_free(other);
        tg_ctx_free(ctx);
        assert_int_equal(b.bytes, 0);
    }
}

/* ---- options, accessors ---------------------------------------------------------------------- */

static void bad_options_are_clear_errors(void **state)
{
    fixture *f = *state;
    tg_param *p, *q, *foreign_p;
    tg_ctx *other;
    tg_optim *opt = (tg_optim *)1;
    assert_status(tg_param_new(f->ctx, "p", TG_F32, 1, (int64_t[]){3}, &p), TG_OK);
    assert_status(tg_param_new(f->ctx, "q", TG_F32, 1, (int64_t[]){3}, &q), TG_OK);
    assert_status(tg_ctx_new(&other, NULL), TG_OK);
    assert_status(tg_param_new(other, "x", TG_F32, 1, (int64_t[]){3}, &foreign_p), TG_OK);

    tg_sgd_options so = TG_SGD_DEFAULTS;
    so.lr = -0.1;
    assert_status(tg_sgd_new(f->ctx, 1, &p, &so, &opt), TG_RANGE);
    assert_null(opt);
    assert_contains(tg_ctx_error(f->ctx), "tg_sgd_new: invalid learning rate -0.1");
    so = (tg_sgd_options){.lr = 0.1, .nesterov = true};
    assert_status(tg_sgd_new(f->ctx, 1, &p, &so, &opt), TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "nesterov momentum requires a momentum");
    so = (tg_sgd_options){.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true};
    assert_status(tg_sgd_new(f->ctx, 1, &p, &so, &opt), TG_INVALID);
    so = (tg_sgd_options){.lr = 0.1, .momentum = -0.5};
    assert_status(tg_sgd_new(f->ctx, 1, &p, &so, &opt), TG_RANGE);
    assert_contains(tg_ctx_error(f->ctx), "momentum");
    so = (tg_sgd_options){.lr = 0.1, .weight_decay = -1};
    assert_status(tg_sgd_new(f->ctx, 1, &p, &so, &opt), TG_RANGE);
    so = (tg_sgd_options){.lr = NAN};
    assert_status(tg_sgd_new(f->ctx, 1, &p, &so, &opt), TG_RANGE);

    tg_adam_options ao = TG_ADAM_DEFAULTS;
    ao.beta1 = 1.0;
    assert_status(tg_adam_new(f->ctx, 1, &p, &ao, &opt), TG_RANGE);
    assert_contains(tg_ctx_error(f->ctx), "invalid beta1 1 (need 0 <= beta1 < 1)");
    ao = (tg_adam_options)TG_ADAM_DEFAULTS;
    ao.beta2 = -0.1;
    assert_status(tg_adamw_new(f->ctx, 1, &p, &ao, &opt), TG_RANGE);
    assert_contains(tg_ctx_error(f->ctx), "tg_adamw_new: invalid beta2");
    ao = (tg_adam_options)TG_ADAM_DEFAULTS;
    ao.lr = -1e-3;
    assert_status(tg_adam_new(f->ctx, 1, &p, &ao, &opt), TG_RANGE);
    ao = (tg_adam_options)TG_ADAM_DEFAULTS;
    ao.eps = -1;
    assert_status(tg_adam_new(f->ctx, 1, &p, &ao, &opt), TG_RANGE);
    assert_contains(tg_ctx_error(f->ctx), "eps");

    tg_rmsprop_options ro = TG_RMSPROP_DEFAULTS;
    ro.alpha = -0.9;
    assert_status(tg_rmsprop_new(f->ctx, 1, &p, &ro, &opt), TG_RANGE);
    assert_contains(tg_ctx_error(f->ctx), "alpha");
    ro = (tg_rmsprop_options)TG_RMSPROP_DEFAULTS;
    ro.lr = -1;
    assert_status(tg_rmsprop_new(f->ctx, 1, &p, &ro, &opt), TG_RANGE);

    /* Parameter lists. */
    assert_status(tg_sgd_new(f->ctx, 0, &p, NULL, &opt), TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "empty parameter list");
    tg_param *dup[2] = {p, p}, *mixed[2] = {p, foreign_p}, *null[2] = {p, NULL};
    assert_status(tg_sgd_new(f->ctx, 2, dup, NULL, &opt), TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "appears twice");
    assert_status(tg_adam_new(f->ctx, 2, mixed, NULL, &opt), TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "parameter 1 (x) is of another context");
    assert_status(tg_rmsprop_new(f->ctx, 2, null, NULL, &opt), TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "parameter 1 is NULL");
    assert_status(tg_sgd_new(f->ctx, 1, &p, NULL, NULL), TG_INVALID);
    assert_status(tg_sgd_new(NULL, 1, &p, NULL, &opt), TG_INVALID);

    /* NULL options: the defaults. */
    assert_status(tg_adamw_new(f->ctx, 1, &p, NULL, &opt), TG_OK);
    assert_close(tg_optim_lr(opt), 1e-3, 0);
    tg_optim_set_lr(opt, -1);
    assert_contains(tg_ctx_error(f->ctx), "tg_optim_set_lr");
    assert_close(tg_optim_lr(opt), 1e-3, 0);
    tg_optim_set_lr(opt, tg_lr_cosine(1e-3, 5, 10, 0));
    assert_close(tg_optim_lr(opt), 5e-4, 1e-15);
    tg_optim_free(opt);
    tg_optim_free(NULL);
    tg_ctx_free(other);
}

/* ---- zero means default ---------------------------------------------------------------------- */

enum { OPT_SGD, OPT_ADAM, OPT_ADAMW, OPT_RMSPROP };

/* A fresh 5-element f64 parameter (the same values every time) with an optimiser of kind `k` and
 * options `o` (NULL: the defaults), after three steps of fixed gradients. */
static tg_optim *after_three_steps(fixture *f, int k, const void *o, tg_param **p)
{
    tg_optim *opt = NULL;
    assert_status(tg_param_new(f->ctx, "p", TG_F64, 1, (int64_t[]){5}, p), TG_OK);
    double *v = tg_param_write(*p);
    for (int i = 0; i < 5; i++)
        v[i] = 0.5 * i - 1;
    tg_status st = k == OPT_SGD     ? tg_sgd_new(f->ctx, 1, p, o, &opt)
                   : k == OPT_ADAM  ? tg_adam_new(f->ctx, 1, p, o, &opt)
                   : k == OPT_ADAMW ? tg_adamw_new(f->ctx, 1, p, o, &opt)
                                    : tg_rmsprop_new(f->ctx, 1, p, o, &opt);
    assert_status(st, TG_OK);
    for (int step = 0; step < 3; step++) {
        double *g = tg_param_grad(*p);
        for (int i = 0; i < 5; i++)
            g[i] = sin(1.0 + i + 2.0 * step) * (i == 2 && step == 1 ? 0 : 1); /* one zero */
        assert_status(tg_optim_step(opt, f->tp), TG_OK);
    }
    return opt;
}

/* Optimiser ka with options a and kb with b give the same (finite) parameters, bit for bit. */
static void same_steps_as(fixture *f, int ka, const void *a, int kb, const void *b)
{
    tg_param *pa, *pb;
    tg_optim *oa = after_three_steps(f, ka, a, &pa), *ob = after_three_steps(f, kb, b, &pb);
    assert_memory_equal(tg_param_data(pa), tg_param_data(pb), 5 * sizeof(double));
    for (int i = 0; i < 5; i++)
        assert_true(isfinite(((const double *)tg_param_data(pa))[i]));
    assert_true(tg_optim_lr(oa) == tg_optim_lr(ob));
    tg_optim_free(oa);
    tg_optim_free(ob);
    tg_param_free(pa);
    tg_param_free(pb);
}

static void same_steps(fixture *f, int k, const void *a, const void *b)
{
    same_steps_as(f, k, a, k, b);
}

/* Fields left 0 take PyTorch's defaults ({.lr = 1e-3} gave Adam beta1 = beta2 = eps = 0 and NaN
 * weights); TG_OPTION_ZERO asks for a real 0. */
static void zero_means_default(void **state)
{
    fixture *f = *state;
    tg_sgd_options sgd = TG_SGD_DEFAULTS;
    tg_adam_options adam = TG_ADAM_DEFAULTS, adamw = TG_ADAMW_DEFAULTS;
    tg_rmsprop_options rms = TG_RMSPROP_DEFAULTS;
    same_steps(f, OPT_SGD, &(tg_sgd_options){.momentum = 0.5},
               &(tg_sgd_options){0.01, 0.5, 0, 0, false});
    same_steps(f, OPT_SGD, &(tg_sgd_options){0}, &sgd);
    same_steps(f, OPT_ADAM, &(tg_adam_options){.lr = 1e-3}, &adam);
    same_steps(f, OPT_ADAM, &(tg_adam_options){0}, NULL);
    same_steps(f, OPT_ADAMW, &(tg_adam_options){.amsgrad = false}, &adamw);
    same_steps(f, OPT_RMSPROP, &(tg_rmsprop_options){.lr = 1e-2}, &rms);
    same_steps(f, OPT_RMSPROP, &(tg_rmsprop_options){.centered = false}, NULL);

    /* AdamW without decay is Adam. */
    same_steps_as(f, OPT_ADAMW, &(tg_adam_options){.weight_decay = TG_OPTION_ZERO}, OPT_ADAM,
                  &adam);
    /* beta1 = 0: exp_avg is the last gradient itself. */
    tg_param *p;
    tg_optim *opt = after_three_steps(f, OPT_ADAM, &(tg_adam_options){.beta1 = TG_OPTION_ZERO}, &p);
    void *exp_avg;
    assert_status(tg_optim_state_info(opt, 0, NULL, NULL, &exp_avg), TG_OK);
    assert_memory_equal(exp_avg, tg_param_grad(p), 5 * sizeof(double));
    tg_optim_free(opt);
    tg_param_free(p);
    /* lr = 0: nothing moves. */
    opt = after_three_steps(f, OPT_RMSPROP, &(tg_rmsprop_options){.lr = TG_OPTION_ZERO}, &p);
    assert_true(tg_optim_lr(opt) == 0);
    assert_true(((const double *)tg_param_data(p))[4] == 1.0);
    tg_optim_free(opt);
    tg_param_free(p);
    /* Explicit zeros are checked like any value: nesterov needs a momentum. */
    tg_optim *bad = (tg_optim *)1;
    assert_status(tg_sgd_new(f->ctx, 1, &(tg_param *){NULL}, NULL, &bad), TG_INVALID);
    tg_param *q;
    assert_status(tg_param_new(f->ctx, "q", TG_F32, 0, NULL, &q), TG_OK);
    assert_status(tg_sgd_new(f->ctx, 1, &q,
                             &(tg_sgd_options){.momentum = TG_OPTION_ZERO, .nesterov = true}, &bad),
                  TG_INVALID);
    assert_contains(tg_ctx_error(f->ctx), "nesterov momentum requires a momentum");
    tg_param_free(q);
}

/* Step counts stay in [0, 2^53 - 1]: tg_optim_set_steps refuses others (INT64_MAX overflowed at
 * the next step) and a step at the limit is refused, changing nothing. */
static void step_count_limit(void **state)
{
    fixture *f = *state;
    tg_param *p;
    tg_optim *opt;
    assert_status(tg_param_new(f->ctx, "p", TG_F32, 1, (int64_t[]){3}, &p), TG_OK);
    assert_status(tg_adam_new(f->ctx, 1, &p, NULL, &opt), TG_OK);
    tg_optim_set_steps(opt, 7);
    const int64_t refused[] = {INT64_MAX, TG_OPTIM_MAX_STEPS + 1, -1, INT64_MIN};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        tg_optim_set_steps(opt, refused[i]);
        assert_contains(tg_ctx_error(f->ctx), "tg_optim_set_steps");
        assert_int_equal(tg_optim_steps(opt), 7);
    }
    tg_optim_set_steps(opt, TG_OPTIM_MAX_STEPS - 1);
    assert_int_equal(tg_optim_steps(opt), TG_OPTIM_MAX_STEPS - 1);
    float *g = tg_param_grad(p);
    g[0] = g[1] = g[2] = 1;
    assert_status(tg_optim_step(opt, f->tp), TG_OK);
    assert_int_equal(tg_optim_steps(opt), TG_OPTIM_MAX_STEPS);
    float before[3];
    memcpy(before, tg_param_data(p), sizeof before);
    assert_status(tg_optim_step(opt, f->tp), TG_RANGE);
    assert_contains(tg_tape_error(f->tp), "at its limit 2^53 - 1");
    assert_int_equal(tg_optim_steps(opt), TG_OPTIM_MAX_STEPS);
    assert_memory_equal(tg_param_data(p), before, sizeof before);
    tg_tape_reset(f->tp);
    tg_optim_free(opt);
    tg_param_free(p);
}

static void accessors_and_restoring_state(void **state)
{
    fixture *f = *state;
    tg_param *ps[NPARAMS], *qs[NPARAMS], *extra;
    make_params(f->ctx, TG_F32, ps);
    for (int i = 0; i < NPARAMS; i++) {
        assert_status(
            tg_param_new(f->ctx, NULL, TG_F32, tg_param_ndim(ps[i]), tg_param_shape(ps[i]), &qs[i]),
            TG_OK);
        assert_status(tg_param_set(qs[i], tg_param_data(ps[i])), TG_OK);
    }
    assert_status(tg_param_new(f->ctx, "extra", TG_F32, 0, NULL, &extra), TG_OK);
    const config *c = &configs[4]; /* Adam, weight decay, amsgrad: three buffers */
    tg_optim *a, *b;
    assert_status(make_optim(f->ctx, c, NPARAMS, ps, &a), TG_OK);
    assert_status(make_optim(f->ctx, c, NPARAMS, qs, &b), TG_OK);
    assert_int_equal(tg_optim_param_count(a), NPARAMS);
    assert_ptr_equal(tg_optim_param(a, 2), ps[2]);
    assert_null(tg_optim_param(a, 3));
    assert_int_equal(tg_optim_state_count(a), 3 * NPARAMS);
    const char *name;
    tg_param *p;
    void *data;
    assert_status(tg_optim_state_info(a, 4, &name, &p, &data), TG_OK);
    assert_string_equal(name, "exp_avg_sq");
    assert_ptr_equal(p, ps[1]);
    assert_status(tg_optim_state_info(a, 9, &name, &p, &data), TG_RANGE);

    /* Five steps on a; then b takes a's state through the accessors (what a checkpoint does)
     * and both take the same five more steps: identical results. */
    for (int k = 0; k < 5; k++) {
        set_grads(ps, k);
        assert_status(tg_optim_step(a, f->tp), TG_OK);
        tg_tape_reset(f->tp);
    }
    for (int i = 0; i < NPARAMS; i++)
        assert_status(tg_param_set(qs[i], tg_param_data(ps[i])), TG_OK);
    for (size_t s = 0; s < tg_optim_state_count(a); s++) {
        void *from, *to;
        assert_status(tg_optim_state_info(a, s, NULL, &p, &from), TG_OK);
        assert_status(tg_optim_state_info(b, s, NULL, NULL, &to), TG_OK);
        memcpy(to, from, (size_t)tg_param_numel(p) * sizeof(float));
    }
    tg_optim_set_steps(b, tg_optim_steps(a));
    tg_optim_set_steps(b, -3); /* refused */
    assert_contains(tg_ctx_error(f->ctx), "negative step count");
    assert_int_equal(tg_optim_steps(b), 5);
    for (int k = 5; k < NSTEPS; k++) {
        set_grads(ps, k);
        set_grads(qs, k);
        *(float *)tg_param_grad(extra) = 1;
        assert_status(tg_optim_step(a, f->tp), TG_OK);
        assert_status(tg_optim_step(b, f->tp), TG_OK);
        tg_tape_reset(f->tp);
        /* zero_grad touches the optimiser's parameters only. */
        tg_optim_zero_grad(a);
        assert_close(((float *)tg_param_grad(ps[0]))[0], 0, 0);
        assert_true(((float *)tg_param_grad(qs[0]))[0] != 0);
        assert_close(*(float *)tg_param_grad(extra), 1, 0);
    }
    for (int i = 0; i < NPARAMS; i++) {
        assert_memory_equal(tg_param_data(ps[i]), tg_param_data(qs[i]),
                            (size_t)tg_param_numel(ps[i]) * sizeof(float));
        char pname[16];
        snprintf(pname, sizeof pname, "f32.p%d", i);
        compare(c->name, pname, TG_F32, tg_param_numel(ps[i]), tg_param_data(qs[i]), TOL_F32);
    }
    /* Steps run without recording, whatever the tape's mode, and leave the mode as it was. */
    assert_true(tg_tape_grad_enabled(f->tp));
    tg_optim_free(a);
    tg_optim_free(b);

    /* Plain SGD keeps no state. */
    tg_optim *s;
    assert_status(tg_sgd_new(f->ctx, NPARAMS, ps, NULL, &s), TG_OK);
    assert_int_equal(tg_optim_state_count(s), 0);
    assert_int_equal(tg_optim_state_size(s), 0);
    assert_status(tg_optim_state_info(s, 0, &name, &p, &data), TG_RANGE);
    tg_optim_free(s);
}

/* ---- threads --------------------------------------------------------------------------------- */

/* 20 Adam steps on a parameter of a context of its own; 0 when all went well. */
static void *adam_on_own_context(void *arg)
{
    (void)arg;
    tg_ctx *ctx;
    tg_tape *tp = NULL;
    tg_param *p = NULL;
    tg_optim *opt = NULL;
    if (tg_ctx_new(&ctx, NULL) != TG_OK)
        return (void *)1;
    bool ok = tg_tape_new(ctx, &tp) == TG_OK;
    ok = ok && tg_param_new(ctx, "p", TG_F32, 1, (int64_t[]){1000}, &p) == TG_OK;
    ok = ok && tg_adam_new(ctx, 1, &p, NULL, &opt) == TG_OK;
    for (int k = 0; ok && k < 20; k++) {
        float *g = tg_param_grad(p);
        for (int i = 0; i < 1000; i++)
            g[i] = (float)(i % 7) - 3.0f;
        ok = tg_optim_step(opt, tp) == TG_OK;
    }
    ok = ok && tg_optim_steps(opt) == 20;
    tg_optim_free(opt);
    tg_tape_free(tp);
    tg_ctx_free(ctx); /* and the parameter */
    return ok ? NULL : (void *)1;
}

/* Steps on two threads at once (one context each). Built with -fsanitize=thread this also checks
 * that the library loads at all: the step functions' target_clones resolver used to crash the
 * program before main. */
static void steps_on_two_threads(void **state)
{
    (void)state;
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, adam_on_own_context, NULL), 0);
    for (int i = 0; i < 2; i++) {
        void *r = (void *)1;
        assert_int_equal(pthread_join(t[i], &r), 0);
        assert_null(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(optimisers_match_pytorch),
        cmocka_unit_test(clipping_matches_pytorch),
        FIXTURE_TEST(clipping_bad_arguments),
        cmocka_unit_test(schedules_match_pytorch),
        cmocka_unit_test(graph_step_matches_step),
        FIXTURE_TEST(hypergradient_matches_finite_differences),
        FIXTURE_TEST(graph_step_errors),
        cmocka_unit_test(failed_step_changes_nothing),
        FIXTURE_TEST(bad_options_are_clear_errors),
        FIXTURE_TEST(accessors_and_restoring_state),
        FIXTURE_TEST(step_count_limit),
        FIXTURE_TEST(zero_means_default),
        cmocka_unit_test(steps_on_two_threads),
    };
    return cmocka_run_group_tests(tests, load_refs, ref_free);
}
