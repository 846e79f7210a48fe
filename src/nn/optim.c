/* optim.c — optimisers (SGD, Adam, AdamW, RMSprop) whose updates are written in tapegrad ops,
 * gradient clipping and learning-rate schedules, on the public API only.
 *
 * Each algorithm is one rule function: tensors in (parameter, gradient, state buffers, learning
 * rate), tensors out (new parameter, new state); tg_optim_step_graph runs it recorded on the
 * caller's tensors, so a step can be differentiated. tg_optim_step, the training loop's step,
 * runs the same rule element by element in place (optim_step.h): one pass over each parameter,
 * no tape nodes, no copies, bitwise the graph step's numbers. The formulas and their order of
 * operations follow torch.optim 1.13 (single-tensor implementations). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <tapegrad.h>

#define PI 3.14159265358979323846
#define MAX_BUFS 3

typedef enum kind { KIND_SGD, KIND_ADAM, KIND_ADAMW, KIND_RMSPROP } kind;

struct tg_optim {
    tg_ctx *ctx;
    kind kind;
    double lr;
    union {
        tg_sgd_options sgd;
        tg_adam_options adam;
        tg_rmsprop_options rms;
    } o;
    int nbufs;                   /* named state buffers per parameter */
    const char *names[MAX_BUFS]; /* their names (PyTorch's state keys) */
    size_t n;                    /* parameters */
    tg_param **params;           /* [n] */
    size_t *bytes;               /* [n] allocated size of each of the parameter's buffers */
    void **bufs;                 /* [n * nbufs] parameter i's buffers at i * nbufs */
    int64_t steps;               /* steps taken; 0: the buffers hold no state yet */
};

static bool is_none(tg_tensor t) { return tg_tensor_tape(t) == NULL; }

/* ---- the update rules ------------------------------------------------------------------------ */

/* x * (lr * num / den), with lr the 0-d tensor `lr` or, when it is none, the optimiser's lr. */
static tg_tensor times_lr(const tg_optim *o, tg_tensor lr, tg_tensor x, double num, double den)
{
    if (is_none(lr))
        return tg_mul_scalar(x, o->lr * num / den);
    return tg_mul(x, num == den ? lr : tg_mul_scalar(lr, num / den));
}

/* a + b * c, skipping the multiplication when c is 1 (exact either way). */
static tg_tensor add_scaled(tg_tensor a, tg_tensor b, double c)
{
    return tg_add(a, c == 1.0 ? b : tg_mul_scalar(b, c));
}

/* state * decay + x, where a none state means zeros (PyTorch's initial buffers). */
static tg_tensor decay_add(tg_tensor state, double decay, tg_tensor x)
{
    return is_none(state) ? x : tg_add(tg_mul_scalar(state, decay), x);
}

/* Elementwise maximum; the gradient is shared at ties, as torch.maximum's. */
static tg_tensor maximum(tg_tensor a, tg_tensor b)
{
    return tg_max(tg_stack(2, (tg_tensor[]){a, b}, 0), 1, (int[]){0}, false);
}

/* SGD. s[0]: momentum_buffer (when momentum != 0). */
static tg_tensor sgd_rule(const tg_optim *o, tg_tensor lr, int64_t t, tg_tensor p, tg_tensor g,
                          tg_tensor *s)
{
    const tg_sgd_options *a = &o->o.sgd;
    (void)t;
    if (a->weight_decay != 0)
        g = add_scaled(g, p, a->weight_decay);
    if (a->momentum != 0) {
        /* First step: the buffer is the gradient itself (no dampening). */
        tg_tensor buf =
            is_none(s[0]) ? g : add_scaled(tg_mul_scalar(s[0], a->momentum), g, 1.0 - a->dampening);
        s[0] = buf;
        g = a->nesterov ? add_scaled(g, buf, a->momentum) : buf;
    }
    return tg_sub(p, times_lr(o, lr, g, 1, 1));
}

/* Adam and AdamW. s[0]: exp_avg, s[1]: exp_avg_sq, s[2]: max_exp_avg_sq (amsgrad); t counts
 * from 1. */
static tg_tensor adam_rule(const tg_optim *o, tg_tensor lr, int64_t t, tg_tensor p, tg_tensor g,
                           tg_tensor *s)
{
    const tg_adam_options *a = &o->o.adam;
    tg_tape *tp = tg_tensor_tape(p);
    if (a->weight_decay != 0) {
        if (o->kind == KIND_ADAMW) {
            /* p *= 1 - lr * weight_decay, before the Adam update. */
            p = is_none(lr) ? tg_mul_scalar(p, 1.0 - o->lr * a->weight_decay)
                            : tg_mul(p, tg_add_scalar(tg_mul_scalar(lr, -a->weight_decay), 1.0));
        } else {
            g = add_scaled(g, p, a->weight_decay);
        }
    }
    tg_tensor m = decay_add(s[0], a->beta1, tg_mul_scalar(g, 1.0 - a->beta1));
    tg_tensor v = decay_add(s[1], a->beta2, tg_mul(tg_mul_scalar(g, 1.0 - a->beta2), g));
    s[0] = m;
    s[1] = v;
    double bc1 = 1.0 - pow(a->beta1, (double)t);
    double bc2 = 1.0 - pow(a->beta2, (double)t);
    if (a->amsgrad) {
        /* max_exp_avg_sq starts at zeros, so its first value is v itself. */
        s[2] = is_none(s[2]) ? v : maximum(s[2], v);
        v = s[2];
    }
    tg_tensor denom =
        tg_add_scalar(tg_div(tg_sqrt(v), tg_constant(tp, tg_tensor_dtype(p), sqrt(bc2))), a->eps);
    return tg_sub(p, tg_div(times_lr(o, lr, m, 1.0, bc1), denom));
}

/* RMSprop. s: square_avg, then momentum_buffer (momentum > 0), then grad_avg (centered). */
static tg_tensor rmsprop_rule(const tg_optim *o, tg_tensor lr, int64_t t, tg_tensor p, tg_tensor g,
                              tg_tensor *s)
{
    const tg_rmsprop_options *a = &o->o.rms;
    int mi = a->momentum > 0 ? 1 : -1, gi = a->centered ? (mi > 0 ? 2 : 1) : -1;
    (void)t;
    if (a->weight_decay != 0)
        g = add_scaled(g, p, a->weight_decay);
    tg_tensor sq = decay_add(s[0], a->alpha, tg_mul(tg_mul_scalar(g, 1.0 - a->alpha), g));
    s[0] = sq;
    tg_tensor avg;
    if (gi >= 0) {
        tg_tensor ga = decay_add(s[gi], a->alpha, tg_mul_scalar(g, 1.0 - a->alpha));
        s[gi] = ga;
        avg = tg_sqrt(tg_sub(sq, tg_mul(ga, ga)));
    } else {
        avg = tg_sqrt(sq);
    }
    avg = tg_add_scalar(avg, a->eps);
    if (mi >= 0) {
        tg_tensor buf = decay_add(s[mi], a->momentum, tg_div(g, avg));
        s[mi] = buf;
        return tg_sub(p, times_lr(o, lr, buf, 1, 1));
    }
    return tg_sub(p, tg_div(times_lr(o, lr, g, 1, 1), avg));
}

typedef tg_tensor (*rule_fn)(const tg_optim *o, tg_tensor lr, int64_t t, tg_tensor p, tg_tensor g,
                             tg_tensor *s);

static rule_fn rule_of(const tg_optim *o)
{
    switch (o->kind) {
    case KIND_SGD:
        return sgd_rule;
    case KIND_ADAM:
    case KIND_ADAMW:
        return adam_rule;
    default:
        return rmsprop_rule;
    }
}

/* Adam's graph state carries a step count after its buffers. */
static bool counts_steps(const tg_optim *o)
{
    return o->kind == KIND_ADAM || o->kind == KIND_ADAMW;
}

/* ---- the same rules in place, for tg_optim_step ---------------------------------------------- */

/* One parameter's update: n elements of value p (written), gradient g and state buffers s. */
typedef void (*step_fn)(const tg_optim *o, int64_t n, void *p, const void *g, void *const *s,
                        bool first);

/* On x86-64 the step functions are compiled for the baseline and for AVX2, and the loader picks
 * one (function multiversioning: an ifunc resolved once, at load time). Both give the same bits:
 * the nn layer is compiled with -ffp-contract=off, and these loops only add, multiply, divide and
 * take square roots, which IEEE rounds the same at every vector width.
 *
 * Not under ThreadSanitizer: the ifunc resolver is instrumented like any function, and the
 * dynamic loader runs it before the sanitizer's runtime is set up, so every program linking the
 * library would crash before main. */
#if defined(__SANITIZE_THREAD__)
#define STEP_NO_CLONES 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STEP_NO_CLONES 1
#endif
#endif
#if defined(__x86_64__) && defined(__ELF__) && !defined(STEP_NO_CLONES)                            \
    && ((defined(__clang__) && __clang_major__ >= 14) || (!defined(__clang__) && __GNUC__ >= 6))
#define STEP_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define STEP_CLONES
#endif

#define T float
#define SQRT sqrtf
#define SUFFIX f32
#include "optim_step.h"
#undef T
#undef SQRT
#undef SUFFIX
#define T double
#define SQRT sqrt
#define SUFFIX f64
#include "optim_step.h"
#undef T
#undef SQRT
#undef SUFFIX
#undef STEP_CLONES

static step_fn step_of(const tg_optim *o, tg_dtype dt)
{
    bool f32 = dt == TG_F32;
    switch (o->kind) {
    case KIND_SGD:
        return f32 ? sgd_step_f32 : sgd_step_f64;
    case KIND_ADAM:
    case KIND_ADAMW:
        return f32 ? adam_step_f32 : adam_step_f64;
    default:
        return f32 ? rmsprop_step_f32 : rmsprop_step_f64;
    }
}

/* Updates parameter i and its state in place; with threads, in slices of at least SLICE
 * elements. */
#define SLICE ((int64_t)1 << 15)
static void step_param(const tg_optim *o, size_t i)
{
    tg_param *param = o->params[i];
    step_fn fn = step_of(o, tg_param_dtype(param));
    size_t nb = (size_t)o->nbufs, es = tg_dtype_size(tg_param_dtype(param));
    int64_t n = tg_param_numel(param), slices = (n + SLICE - 1) / SLICE;
    char *p = tg_param_write(param);
    const char *g = tg_param_grad(param);
    bool first = o->steps == 0;
    int threads = tg_ctx_threads(o->ctx);
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) if (threads > 1 && slices > 1) schedule(static)
#endif
    for (int64_t k = 0; k < slices; k++) {
        int64_t lo = k * SLICE, len = n - lo < SLICE ? n - lo : SLICE;
        size_t off = (size_t)lo * es;
        void *s[MAX_BUFS] = {NULL};
        for (size_t j = 0; j < nb; j++)
            s[j] = (char *)o->bufs[i * nb + j] + off;
        fn(o, len, p + off, g + off, s, first);
    }
}

/* ---- construction ---------------------------------------------------------------------------- */

static void add_buf(tg_optim *o, const char *name) { o->names[o->nbufs++] = name; }

static bool bad_number(double x, double low) { return !(x >= low) || !isfinite(x); }

/* An option that must be finite and >= 0: TG_OK, or the error "fn: invalid <what> v (need <name>
 * >= 0)". */
static tg_status check_nonneg(tg_ctx *ctx, const char *fn, const char *what, const char *name,
                              double v)
{
    if (bad_number(v, 0))
        return tg_ctx_fail(ctx, TG_RANGE, "%s: invalid %s %g (need %s >= 0)", fn, what, v, name);
    return TG_OK;
}

/* An option as given: 0 takes the default `fallback`, TG_OPTION_ZERO stands for an exact 0. */
static double option_or(double v, double fallback)
{
    if (v == 0)
        return fallback;
    return v == TG_OPTION_ZERO ? 0.0 : v;
}

static tg_sgd_options sgd_options(const tg_sgd_options *in)
{
    tg_sgd_options d = TG_SGD_DEFAULTS, a = in ? *in : d;
    a.lr = option_or(a.lr, d.lr);
    a.momentum = option_or(a.momentum, d.momentum);
    a.dampening = option_or(a.dampening, d.dampening);
    a.weight_decay = option_or(a.weight_decay, d.weight_decay);
    return a;
}

static tg_adam_options adam_options(const tg_adam_options *in, kind k)
{
    tg_adam_options adam = TG_ADAM_DEFAULTS, adamw = TG_ADAMW_DEFAULTS;
    tg_adam_options d = k == KIND_ADAMW ? adamw : adam, a = in ? *in : d;
    a.lr = option_or(a.lr, d.lr);
    a.beta1 = option_or(a.beta1, d.beta1);
    a.beta2 = option_or(a.beta2, d.beta2);
    a.eps = option_or(a.eps, d.eps);
    a.weight_decay = option_or(a.weight_decay, d.weight_decay);
    return a;
}

static tg_rmsprop_options rmsprop_options(const tg_rmsprop_options *in)
{
    tg_rmsprop_options d = TG_RMSPROP_DEFAULTS, a = in ? *in : d;
    a.lr = option_or(a.lr, d.lr);
    a.alpha = option_or(a.alpha, d.alpha);
    a.eps = option_or(a.eps, d.eps);
    a.weight_decay = option_or(a.weight_decay, d.weight_decay);
    a.momentum = option_or(a.momentum, d.momentum);
    return a;
}

/* Validates the parameter list and allocates the optimiser with its zeroed state buffers. */
static tg_status make(tg_ctx *ctx, const char *fn, kind k, size_t n, tg_param *const *params,
                      tg_optim **out)
{
    *out = NULL;
    if (n == 0 || !params)
        return tg_ctx_fail(ctx, TG_INVALID, "%s: empty parameter list", fn);
    for (size_t i = 0; i < n; i++) {
        if (!params[i])
            return tg_ctx_fail(ctx, TG_INVALID, "%s: parameter %zu is NULL", fn, i);
        if (tg_param_ctx(params[i]) != ctx)
            return tg_ctx_fail(ctx, TG_INVALID, "%s: parameter %zu (%s) is of another context", fn,
                               i, tg_param_name(params[i]));
        if (tg_param_is_buffer(params[i]))
            return tg_ctx_fail(ctx, TG_INVALID,
                               "%s: parameter %zu (%s) is a buffer: it has no gradient to follow",
                               fn, i, tg_param_name(params[i]));
        for (size_t j = 0; j < i; j++)
            if (params[j] == params[i])
                return tg_ctx_fail(ctx, TG_INVALID,
                                   "%s: parameter %zu (%s) appears twice in the list", fn, i,
                                   tg_param_name(params[i]));
    }
    tg_optim *o = tg_alloc(ctx, sizeof *o);
    if (!o)
        return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
    memset(o, 0, sizeof *o);
    o->ctx = ctx;
    o->kind = k;
    o->n = n;
    o->params = tg_alloc(ctx, n * sizeof *o->params);
    o->bytes = tg_alloc(ctx, n * sizeof *o->bytes);
    if (!o->params || !o->bytes) {
        tg_optim_free(o);
        return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
    }
    for (size_t i = 0; i < n; i++) {
        o->params[i] = params[i];
        size_t bytes = (size_t)tg_param_numel(params[i]) * tg_dtype_size(tg_param_dtype(params[i]));
        o->bytes[i] = bytes ? bytes : 1;
    }
    *out = o;
    return TG_OK;
}

/* Allocates the buffers named so far; on failure frees the optimiser. */
static tg_status finish(tg_optim **out, const char *fn)
{
    tg_optim *o = *out;
    tg_ctx *ctx = o->ctx;
    size_t nb = (size_t)o->nbufs;
    o->bufs = nb ? tg_alloc(ctx, o->n * nb * sizeof *o->bufs) : NULL;
    if (o->bufs)
        memset(o->bufs, 0, o->n * nb * sizeof *o->bufs); /* NULL entries: nothing to free */
    if (nb && !o->bufs)
        goto nomem;
    for (size_t i = 0; i < o->n * nb; i++) {
        o->bufs[i] = tg_alloc(ctx, o->bytes[i / nb]);
        if (!o->bufs[i])
            goto nomem;
        memset(o->bufs[i], 0, o->bytes[i / nb]);
    }
    return TG_OK;
nomem:
    tg_optim_free(o);
    *out = NULL;
    return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
}

tg_status tg_sgd_new(tg_ctx *ctx, size_t n, tg_param *const *params, const tg_sgd_options *opts,
                     tg_optim **out)
{
    static const char fn[] = "tg_sgd_new";
    if (!ctx || !out)
        return ctx ? tg_ctx_fail(ctx, TG_INVALID, "%s: out is NULL", fn) : TG_INVALID;
    *out = NULL;
    tg_sgd_options a = sgd_options(opts);
    tg_status st = check_nonneg(ctx, fn, "learning rate", "lr", a.lr);
    if (!st)
        st = check_nonneg(ctx, fn, "momentum", "momentum", a.momentum);
    if (!st && !isfinite(a.dampening))
        st = tg_ctx_fail(ctx, TG_RANGE, "%s: invalid dampening %g", fn, a.dampening);
    if (!st)
        st = check_nonneg(ctx, fn, "weight_decay", "weight_decay", a.weight_decay);
    if (!st && a.nesterov && (a.momentum <= 0 || a.dampening != 0))
        st = tg_ctx_fail(ctx, TG_INVALID,
                         "%s: nesterov momentum requires a momentum and zero dampening "
                         "(momentum %g, dampening %g)",
                         fn, a.momentum, a.dampening);
    if (!st)
        st = make(ctx, fn, KIND_SGD, n, params, out);
    if (st)
        return st;
    (*out)->lr = a.lr;
    (*out)->o.sgd = a;
    if (a.momentum != 0)
        add_buf(*out, "momentum_buffer");
    return finish(out, fn);
}

static tg_status adam_new(tg_ctx *ctx, const char *fn, kind k, size_t n, tg_param *const *params,
                          const tg_adam_options *opts, tg_optim **out)
{
    if (!ctx || !out)
        return ctx ? tg_ctx_fail(ctx, TG_INVALID, "%s: out is NULL", fn) : TG_INVALID;
    *out = NULL;
    tg_adam_options a = adam_options(opts, k);
    tg_status st = check_nonneg(ctx, fn, "learning rate", "lr", a.lr);
    if (!st)
        st = check_nonneg(ctx, fn, "eps", "eps", a.eps);
    if (!st && !(a.beta1 >= 0 && a.beta1 < 1))
        st = tg_ctx_fail(ctx, TG_RANGE, "%s: invalid beta1 %g (need 0 <= beta1 < 1)", fn, a.beta1);
    if (!st && !(a.beta2 >= 0 && a.beta2 < 1))
        st = tg_ctx_fail(ctx, TG_RANGE, "%s: invalid beta2 %g (need 0 <= beta2 < 1)", fn, a.beta2);
    if (!st)
        st = check_nonneg(ctx, fn, "weight_decay", "weight_decay", a.weight_decay);
    if (!st)
        st = make(ctx, fn, k, n, params, out);
    if (st)
        return st;
    (*out)->lr = a.lr;
    (*out)->o.adam = a;
    add_buf(*out, "exp_avg");
    add_buf(*out, "exp_avg_sq");
    if (a.amsgrad)
        add_buf(*out, "max_exp_avg_sq");
    return finish(out, fn);
}

tg_status tg_adam_new(tg_ctx *ctx, size_t n, tg_param *const *params, const tg_adam_options *o,
                      tg_optim **out)
{
    return adam_new(ctx, "tg_adam_new", KIND_ADAM, n, params, o, out);
}

tg_status tg_adamw_new(tg_ctx *ctx, size_t n, tg_param *const *params, const tg_adam_options *o,
                       tg_optim **out)
{
    return adam_new(ctx, "tg_adamw_new", KIND_ADAMW, n, params, o, out);
}

tg_status tg_rmsprop_new(tg_ctx *ctx, size_t n, tg_param *const *params,
                         const tg_rmsprop_options *opts, tg_optim **out)
{
    static const char fn[] = "tg_rmsprop_new";
    if (!ctx || !out)
        return ctx ? tg_ctx_fail(ctx, TG_INVALID, "%s: out is NULL", fn) : TG_INVALID;
    *out = NULL;
    tg_rmsprop_options a = rmsprop_options(opts);
    tg_status st = check_nonneg(ctx, fn, "learning rate", "lr", a.lr);
    if (!st)
        st = check_nonneg(ctx, fn, "eps", "eps", a.eps);
    if (!st)
        st = check_nonneg(ctx, fn, "alpha", "alpha", a.alpha);
    if (!st)
        st = check_nonneg(ctx, fn, "momentum", "momentum", a.momentum);
    if (!st)
        st = check_nonneg(ctx, fn, "weight_decay", "weight_decay", a.weight_decay);
    if (!st)
        st = make(ctx, fn, KIND_RMSPROP, n, params, out);
    if (st)
        return st;
    (*out)->lr = a.lr;
    (*out)->o.rms = a;
    add_buf(*out, "square_avg");
    if (a.momentum > 0)
        add_buf(*out, "momentum_buffer");
    if (a.centered)
        add_buf(*out, "grad_avg");
    return finish(out, fn);
}

void tg_optim_free(tg_optim *opt)
{
    if (!opt)
        return;
    tg_ctx *ctx = opt->ctx;
    size_t nb = (size_t)opt->nbufs;
    if (opt->bufs)
        for (size_t i = 0; i < opt->n * nb; i++)
            tg_free(ctx, opt->bufs[i], opt->bytes[i / nb]);
    tg_free(ctx, opt->bufs, opt->n * nb * sizeof *opt->bufs);
    tg_free(ctx, opt->bytes, opt->n * sizeof *opt->bytes);
    tg_free(ctx, opt->params, opt->n * sizeof *opt->params);
    tg_free(ctx, opt, sizeof *opt);
}

/* ---- steps ----------------------------------------------------------------------------------- */

tg_status tg_optim_step(tg_optim *opt, tg_tape *tp)
{
    if (!opt)
        return tp ? tg_tape_fail(tp, TG_INVALID, "tg_optim_step: optimiser is NULL") : TG_INVALID;
    if (!tp)
        return tg_ctx_fail(opt->ctx, TG_INVALID, "tg_optim_step: tape is NULL");
    tg_status st = tg_tape_status(tp);
    if (st)
        return st;
    if (tg_tape_ctx(tp) != opt->ctx)
        return tg_tape_fail(tp, TG_INVALID,
                            "tg_optim_step: the tape is of another context than the parameters");
    if (opt->steps >= TG_OPTIM_MAX_STEPS)
        return tg_tape_fail(tp, TG_RANGE,
                            "tg_optim_step: the step count %lld is at its limit 2^53 - 1 (no "
                            "step taken)",
                            (long long)opt->steps);
    /* Nothing below can fail: every parameter is updated, or (above) none. */
    for (size_t i = 0; i < opt->n; i++)
        step_param(opt, i);
    opt->steps++;
    return TG_OK;
}

/* "f32[4,3]" for messages. */
static const char *describe(tg_tensor t, char *buf, size_t size)
{
    int nd = tg_ndim(t);
    if (nd < 0) {
        snprintf(buf, size, "%s", is_none(t) ? "none" : "an invalid handle");
        return buf;
    }
    tg_format_shape(buf, size, tg_tensor_dtype(t), nd, tg_shape(t));
    return buf;
}

static bool same_shape(tg_tensor a, tg_tensor b)
{
    if (tg_tensor_dtype(a) != tg_tensor_dtype(b) || tg_ndim(a) != tg_ndim(b))
        return false;
    for (int d = 0; d < tg_ndim(a); d++)
        if (tg_dim(a, d) != tg_dim(b, d))
            return false;
    return true;
}

/* Checks one operand of a graph step: on tp, valid, with p's dtype and shape (when `like_p`).
 * Records the error on tp otherwise. */
static bool check_operand(tg_tape *tp, tg_tensor t, tg_tensor p, bool like_p, const char *what,
                          size_t i)
{
    char a[96], b[96];
    if (tg_tensor_tape(t) != tp || !tg_ok(t)) {
        tg_tape_fail(tp, TG_INVALID, "tg_optim_step_graph: %s %zu is %s", what, i,
                     tg_tensor_tape(t) && tg_tensor_tape(t) != tp ? "on another tape"
                                                                  : describe(t, a, sizeof a));
        return false;
    }
    if (like_p && !same_shape(t, p)) {
        tg_tape_fail(tp, tg_tensor_dtype(t) != tg_tensor_dtype(p) ? TG_DTYPE : TG_SHAPE,
                     "tg_optim_step_graph: %s %zu is %s, parameter %zu is %s", what, i,
                     describe(t, a, sizeof a), i, describe(p, b, sizeof b));
        return false;
    }
    return true;
}

/* Adam's step t (from 1) after the count in the graph state tensor c: c must be a whole number in
 * [0, TG_OPTIM_MAX_STEPS - 1], so that t is exact. Records the error on tp otherwise. */
static bool graph_step_count(tg_tape *tp, tg_tensor c, size_t i, int64_t *t)
{
    if (!check_operand(tp, c, c, false, "step count", i))
        return false;
    double v = tg_item(c);
    if (!(v >= 0 && v < (double)TG_OPTIM_MAX_STEPS && v == floor(v))) {
        tg_tape_fail(tp, TG_RANGE,
                     "tg_optim_step_graph: step count %zu is %g (need a whole number in [0, 2^53 "
                     "- 2])",
                     i, v);
        return false;
    }
    *t = (int64_t)v + 1;
    return true;
}

tg_status tg_optim_step_graph(tg_optim *opt, tg_tensor lr, size_t n, const tg_tensor *params,
                              const tg_tensor *grads, tg_tensor *state, tg_tensor *new_params)
{
    static const char fn[] = "tg_optim_step_graph";
    if (!opt)
        return TG_INVALID;
    size_t k = tg_optim_state_size(opt), nb = (size_t)opt->nbufs;
    if (n == 0)
        return TG_OK;
    if (!params || !grads || !new_params || (k && !state))
        return tg_ctx_fail(opt->ctx, TG_INVALID, "%s: params, grads, state or new_params is NULL",
                           fn);
    tg_tape *tp = tg_tensor_tape(params[0]);
    if (!tp)
        return tg_ctx_fail(opt->ctx, TG_INVALID, "%s: parameter 0 is none", fn);
    tg_status st = tg_tape_status(tp);
    if (st)
        return st;
    tg_tensor *next = NULL;
    if (k) {
        next = tg_alloc(opt->ctx, n * k * sizeof *next);
        if (!next)
            return tg_tape_fail(tp, TG_NOMEM, "%s: out of memory", fn);
    }
    if (!is_none(lr) && check_operand(tp, lr, lr, false, "lr", 0) && tg_ndim(lr) != 0) {
        char a[96];
        tg_tape_fail(tp, TG_SHAPE, "%s: lr must be a 0-d tensor, not %s", fn,
                     describe(lr, a, sizeof a));
    }
    rule_fn rule = rule_of(opt);
    bool was = tg_tape_set_grad(tp, true);
    for (size_t i = 0; i < n && !tg_tape_status(tp); i++) {
        tg_tensor p = params[i], s[MAX_BUFS + 1];
        if (!check_operand(tp, p, p, false, "parameter", i)
            || !check_operand(tp, grads[i], p, true, "gradient", i))
            break;
        if (!is_none(lr) && tg_tensor_dtype(lr) != tg_tensor_dtype(p)) {
            char a[96], b[96];
            tg_tape_fail(tp, TG_DTYPE, "%s: lr is %s, parameter %zu is %s (they must match)", fn,
                         describe(lr, a, sizeof a), i, describe(p, b, sizeof b));
            break;
        }
        for (size_t j = 0; j < nb; j++) {
            s[j] = state[i * k + j];
            if (!is_none(s[j]) && !check_operand(tp, s[j], p, true, opt->names[j], i))
                break;
        }
        int64_t t = 1;
        if (tg_tape_status(tp)
            || (counts_steps(opt) && !is_none(state[i * k + nb])
                && !graph_step_count(tp, state[i * k + nb], i, &t)))
            break;
        new_params[i] = rule(opt, lr, t, p, grads[i], s);
        for (size_t j = 0; j < nb; j++)
            next[i * k + j] = s[j];
        if (counts_steps(opt))
            next[i * k + nb] = tg_constant(tp, TG_F64, (double)t);
    }
    tg_tape_set_grad(tp, was);
    st = tg_tape_status(tp);
    if (st) {
        for (size_t i = 0; i < n; i++)
            new_params[i] = tg_error(tp);
    } else if (k) {
        memcpy(state, next, n * k * sizeof *next);
    }
    tg_free(opt->ctx, next, n * k * sizeof *next);
    return st;
}

/* ---- accessors ------------------------------------------------------------------------------- */

size_t tg_optim_state_size(const tg_optim *opt)
{
    return opt ? (size_t)opt->nbufs + (counts_steps(opt) ? 1 : 0) : 0;
}

void tg_optim_zero_grad(tg_optim *opt)
{
    for (size_t i = 0; opt && i < opt->n; i++)
        tg_param_zero_grad(opt->params[i]);
}

double tg_optim_lr(const tg_optim *opt) { return opt ? opt->lr : NAN; }

void tg_optim_set_lr(tg_optim *opt, double lr)
{
    if (!opt)
        return;
    if (bad_number(lr, 0)) {
        tg_ctx_fail(opt->ctx, TG_RANGE, "tg_optim_set_lr: invalid learning rate %g (kept %g)", lr,
                    opt->lr);
        return;
    }
    opt->lr = lr;
}

int64_t tg_optim_steps(const tg_optim *opt) { return opt ? opt->steps : 0; }

void tg_optim_set_steps(tg_optim *opt, int64_t steps)
{
    if (!opt)
        return;
    if (steps < 0 || steps > TG_OPTIM_MAX_STEPS) {
        tg_ctx_fail(opt->ctx, TG_RANGE,
                    "tg_optim_set_steps: %s step count %lld (kept %lld; at most 2^53 - 1)",
                    steps < 0 ? "negative" : "too large a", (long long)steps,
                    (long long)opt->steps);
        return;
    }
    opt->steps = steps;
}

size_t tg_optim_param_count(const tg_optim *opt) { return opt ? opt->n : 0; }

tg_param *tg_optim_param(const tg_optim *opt, size_t i)
{
    return opt && i < opt->n ? opt->params[i] : NULL;
}

size_t tg_optim_state_count(const tg_optim *opt) { return opt ? opt->n * (size_t)opt->nbufs : 0; }

tg_status tg_optim_state_info(const tg_optim *opt, size_t i, const char **name, tg_param **param,
                              void **data)
{
    if (!opt)
        return TG_INVALID;
    if (i >= tg_optim_state_count(opt))
        return tg_ctx_fail(opt->ctx, TG_RANGE, "tg_optim_state_info: index %zu of %zu buffers", i,
                           tg_optim_state_count(opt));
    size_t nb = (size_t)opt->nbufs;
    if (name)
        *name = opt->names[i % nb];
    if (param)
        *param = opt->params[i / nb];
    if (data)
        *data = opt->bufs[i];
    return TG_OK;
}

/* ---- gradient clipping ----------------------------------------------------------------------- */

/* The context of the first parameter that is not NULL (for messages), or NULL. */
static tg_ctx *ctx_of(size_t n, tg_param *const *params)
{
    for (size_t i = 0; params && i < n; i++)
        if (params[i])
            return tg_param_ctx(params[i]);
    return NULL;
}

/* The list is usable: no NULL entries, no buffers (they have no gradient). Records why not on a
 * context when it can. */
static bool params_ok(size_t n, tg_param *const *params, const char *fn)
{
    if (n && !params)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!params[i] || tg_param_is_buffer(params[i])) {
            tg_ctx *ctx = ctx_of(n, params);
            if (ctx)
                tg_ctx_fail(ctx, TG_INVALID, "%s: parameter %zu %s", fn, i,
                            params[i] ? "is a buffer (it has no gradient)" : "is NULL");
            return false;
        }
    }
    return true;
}

double tg_clip_grad_norm(size_t n, tg_param *const *params, double max_norm, double norm_type)
{
    static const char fn[] = "tg_clip_grad_norm";
    if (!params_ok(n, params, fn))
        return NAN;
    tg_ctx *ctx = ctx_of(n, params);
    if (!(norm_type > 0) || bad_number(max_norm, 0)) {
        if (ctx)
            tg_ctx_fail(ctx, TG_RANGE,
                        "%s: max_norm %g, norm_type %g (need max_norm >= 0, "
                        "norm_type > 0 or inf)",
                        fn, max_norm, norm_type);
        return NAN;
    }
    if (n == 0)
        return 0.0;
    bool inf = isinf(norm_type);
    double total = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t m = tg_param_numel(params[i]);
        bool f32 = tg_param_dtype(params[i]) == TG_F32;
        const float *gf = tg_param_grad(params[i]);
        const double *gd = tg_param_grad(params[i]);
        for (int64_t j = 0; j < m; j++) {
            double a = fabs(f32 ? (double)gf[j] : gd[j]);
            if (inf)
                total = isnan(a) || isnan(total) ? NAN : a > total ? a : total;
            else if (norm_type == 2)
                total += a * a;
            else if (norm_type == 1)
                total += a;
            else
                total += pow(a, norm_type);
        }
    }
    if (!inf)
        total = norm_type == 2 ? sqrt(total) : norm_type == 1 ? total : pow(total, 1 / norm_type);
    /* PyTorch: coef = max_norm / (total + 1e-6), clamped to at most 1 (a NaN stays NaN). */
    double coef = max_norm / (total + 1e-6);
    if (!(coef >= 1)) {
        for (size_t i = 0; i < n; i++) {
            int64_t m = tg_param_numel(params[i]);
            if (tg_param_dtype(params[i]) == TG_F32) {
                float *g = tg_param_grad(params[i]), c = (float)coef;
                for (int64_t j = 0; j < m; j++)
                    g[j] *= c;
            } else {
                double *g = tg_param_grad(params[i]);
                for (int64_t j = 0; j < m; j++)
                    g[j] *= coef;
            }
        }
    }
    return total;
}

void tg_clip_grad_value(size_t n, tg_param *const *params, double clip)
{
    static const char fn[] = "tg_clip_grad_value";
    if (!params_ok(n, params, fn))
        return;
    if (bad_number(clip, 0)) {
        tg_ctx *ctx = ctx_of(n, params);
        if (ctx)
            tg_ctx_fail(ctx, TG_RANGE, "%s: invalid clip value %g (need >= 0)", fn, clip);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        int64_t m = tg_param_numel(params[i]);
        if (tg_param_dtype(params[i]) == TG_F32) {
            float *g = tg_param_grad(params[i]), c = (float)clip;
            for (int64_t j = 0; j < m; j++)
                g[j] = g[j] > c ? c : g[j] < -c ? -c : g[j];
        } else {
            double *g = tg_param_grad(params[i]);
            for (int64_t j = 0; j < m; j++)
                g[j] = g[j] > clip ? clip : g[j] < -clip ? -clip : g[j];
        }
    }
}

/* ---- learning-rate schedules ----------------------------------------------------------------- */

double tg_lr_step(double base, int64_t t, int64_t step_size, double gamma)
{
    if (t < 0 || step_size < 1)
        return NAN;
    return base * pow(gamma, (double)(t / step_size));
}

double tg_lr_exponential(double base, int64_t t, double gamma)
{
    return t < 0 ? NAN : base * pow(gamma, (double)t);
}

double tg_lr_cosine(double base, int64_t t, int64_t t_max, double eta_min)
{
    if (t < 0 || t_max < 1)
        return NAN;
    return eta_min + (base - eta_min) * (1 + cos(PI * (double)t / (double)t_max)) / 2;
}

double tg_lr_warmup(double base, int64_t t, int64_t warmup, double start_factor)
{
    if (t < 0 || warmup < 0 || !(start_factor > 0 && start_factor <= 1))
        return NAN;
    if (warmup == 0)
        return base;
    int64_t done = t < warmup ? t : warmup;
    return base * (start_factor + (1.0 - start_factor) * (double)done / (double)warmup);
}
