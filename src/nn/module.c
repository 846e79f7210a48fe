/* module.c — layers as modules (Linear, Conv2d, pooling, Flatten, LayerNorm, Embedding, Dropout,
 * activations, Sequential, custom) and the initialisers, on the public API only. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <tapegrad.h>

/* Each kind of module is a forward function; modules with parameters own up to two. */
typedef tg_tensor (*forward_fn)(tg_module *m, tg_tensor x);

struct tg_module {
    tg_ctx *ctx;
    forward_fn forward;
    char *name;
    size_t name_size;
    bool training;
    tg_param *own[2];     /* weight, bias (NULL when absent) */
    const char *local[2]; /* their names within the module: "weight", "bias" */
    tg_param **params;    /* own and children's parameters, in order */
    size_t nparams;
    tg_module **children; /* Sequential */
    int nchildren;
    union {
        tg_conv2d_params conv;
        tg_pool2d_params pool;
        struct {
            int naxes;
            double eps;
        } norm;
        struct {
            double p;
            uint64_t seed, calls;
        } dropout;
        tg_activation act;
        struct {
            tg_module_forward_fn fn;
            void *user;
        } custom;
    } u;
};

/* ---- initialisers ------------------------------------------------------------------------- */

/* fan_in and fan_out of a [O, I, k...] tensor (PyTorch's _calculate_fan_in_and_fan_out). */
static tg_status fans(tg_param *p, const char *fn, double *fan_in, double *fan_out)
{
    if (!p)
        return TG_INVALID;
    int nd = tg_param_ndim(p);
    if (nd < 2)
        return tg_ctx_fail(tg_param_ctx(p), TG_SHAPE,
                           "%s(%s): fan in and fan out need at least 2 dims, the parameter has %d",
                           fn, tg_param_name(p), nd);
    const int64_t *s = tg_param_shape(p);
    double rf = 1;
    for (int d = 2; d < nd; d++)
        rf *= (double)s[d];
    *fan_in = (double)s[1] * rf;
    *fan_out = (double)s[0] * rf;
    return TG_OK;
}

tg_status tg_init_xavier_uniform(tg_param *p, double gain, uint64_t seed)
{
    double fi, fo;
    tg_status st = fans(p, "tg_init_xavier_uniform", &fi, &fo);
    if (st)
        return st;
    double bound = gain * sqrt(6.0 / (fi + fo));
    return tg_param_uniform(p, -bound, bound, seed);
}

tg_status tg_init_xavier_normal(tg_param *p, double gain, uint64_t seed)
{
    double fi, fo;
    tg_status st = fans(p, "tg_init_xavier_normal", &fi, &fo);
    if (st)
        return st;
    return tg_param_normal(p, 0.0, gain * sqrt(2.0 / (fi + fo)), seed);
}

static double kaiming_std(double a, tg_fan_mode mode, double fi, double fo)
{
    double gain = sqrt(2.0 / (1.0 + a * a));
    return gain / sqrt(mode == TG_FAN_OUT ? fo : fi);
}

tg_status tg_init_kaiming_uniform(tg_param *p, double a, tg_fan_mode mode, uint64_t seed)
{
    double fi, fo;
    tg_status st = fans(p, "tg_init_kaiming_uniform", &fi, &fo);
    if (st)
        return st;
    double bound = sqrt(3.0) * kaiming_std(a, mode, fi, fo);
    return tg_param_uniform(p, -bound, bound, seed);
}

tg_status tg_init_kaiming_normal(tg_param *p, double a, tg_fan_mode mode, uint64_t seed)
{
    double fi, fo;
    tg_status st = fans(p, "tg_init_kaiming_normal", &fi, &fo);
    if (st)
        return st;
    return tg_param_normal(p, 0.0, kaiming_std(a, mode, fi, fo), seed);
}

/* ---- construction helpers ----------------------------------------------------------------- */

/* FNV-1a of the name: distinct default seeds for distinctly named layers. */
static uint64_t name_seed(const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *c = name; c && *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    return h;
}

static tg_status make(tg_ctx *ctx, const char *fn, const char *name, forward_fn forward,
                      tg_module **out)
{
    if (!out)
        return ctx ? tg_ctx_fail(ctx, TG_INVALID, "%s: out is NULL", fn) : TG_INVALID;
    *out = NULL;
    if (!ctx)
        return TG_INVALID;
    tg_module *m = tg_alloc(ctx, sizeof *m);
    if (!m)
        return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
    memset(m, 0, sizeof *m);
    m->ctx = ctx;
    m->forward = forward;
    m->training = true;
    m->name_size = strlen(name ? name : "") + 1;
    m->name = tg_alloc(ctx, m->name_size);
    if (!m->name) {
        tg_free(ctx, m, sizeof *m);
        return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
    }
    memcpy(m->name, name ? name : "", m->name_size);
    *out = m;
    return TG_OK;
}

/* Creates parameter `slot` ("weight" or "bias") named "<module>.<local>". */
static tg_status add_param(tg_module *m, int slot, const char *local, int ndim,
                           const int64_t *shape)
{
    char full[256];
    if (m->name[0])
        snprintf(full, sizeof full, "%s.%s", m->name, local);
    else
        snprintf(full, sizeof full, "%s", local);
    tg_status st = tg_param_new(m->ctx, full, TG_F32, ndim, shape, &m->own[slot]);
    m->local[slot] = local;
    return st;
}

/* The parameter list of a module without children: its own parameters. */
static tg_status own_list(tg_module *m)
{
    size_t n = (m->own[0] != NULL) + (m->own[1] != NULL);
    if (n == 0)
        return TG_OK;
    m->params = tg_alloc(m->ctx, n * sizeof *m->params);
    if (!m->params)
        return tg_ctx_fail(m->ctx, TG_NOMEM, "module %s: out of memory", m->name);
    for (int i = 0; i < 2; i++)
        if (m->own[i])
            m->params[m->nparams++] = m->own[i];
    return TG_OK;
}

/* Finishes a constructor: on failure frees the partial module and passes the status on. */
static tg_status finish(tg_module **out, tg_status st)
{
    if (st == TG_OK)
        st = own_list(*out);
    if (st != TG_OK) {
        tg_module_free(*out);
        *out = NULL;
    }
    return st;
}

/* PyTorch's default for Linear and Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both weight
 * (kaiming_uniform with a = sqrt(5)) and bias. */
static tg_status default_init(tg_module *m, double fan_in, uint64_t seed)
{
    double bound = fan_in > 0 ? 1.0 / sqrt(fan_in) : 0.0;
    if (seed == 0)
        seed = name_seed(m->name);
    tg_status st = tg_param_uniform(m->own[0], -bound, bound, seed);
    if (st == TG_OK && m->own[1])
        st = tg_param_uniform(m->own[1], -bound, bound, seed ^ 0x9e3779b97f4a7c15ull);
    return st;
}

static tg_tensor fail(tg_tensor x, tg_status st, const char *fmt, const char *name)
{
    tg_tape *tp = tg_tensor_tape(x);
    tg_tape_fail(tp, st, fmt, name);
    return tg_error(tp);
}

/* ---- layers ------------------------------------------------------------------------------- */

static tg_tensor linear_forward(tg_module *m, tg_tensor x)
{
    tg_tape *tp = tg_tensor_tape(x);
    tg_tensor y = tg_matmul_t(x, tg_param_tensor(tp, m->own[0]), false, true);
    return m->own[1] ? tg_add(y, tg_param_tensor(tp, m->own[1])) : y;
}

tg_status tg_linear_new(tg_ctx *ctx, const char *name, int64_t in_features, int64_t out_features,
                        const tg_linear_options *opts, tg_module **out)
{
    tg_linear_options o = {0};
    if (opts)
        o = *opts;
    tg_status st = make(ctx, "tg_linear_new", name, linear_forward, out);
    if (st)
        return st;
    if (in_features < 1 || out_features < 1)
        return finish(out,
                      tg_ctx_fail(ctx, TG_SHAPE, "tg_linear_new(%s): %lld -> %lld features",
                                  (*out)->name, (long long)in_features, (long long)out_features));
    st = add_param(*out, 0, "weight", 2, (int64_t[]){out_features, in_features});
    if (!st && !o.no_bias)
        st = add_param(*out, 1, "bias", 1, &out_features);
    if (!st)
        st = default_init(*out, (double)in_features, o.seed);
    return finish(out, st);
}

static tg_tensor conv2d_forward(tg_module *m, tg_tensor x)
{
    tg_tape *tp = tg_tensor_tape(x);
    tg_tensor b = {0};
    if (m->own[1])
        b = tg_param_tensor(tp, m->own[1]);
    return tg_conv2d(x, tg_param_tensor(tp, m->own[0]), b, &m->u.conv);
}

/* Stride, padding and dilation of a convolution: none negative (0 stride or dilation means 1). */
static bool conv_params_ok(const tg_conv2d_params *p)
{
    for (int d = 0; d < 2; d++)
        if (p->stride[d] < 0 || p->padding[d] < 0 || p->dilation[d] < 0)
            return false;
    return true;
}

tg_status tg_conv2d_new(tg_ctx *ctx, const char *name, int64_t in_channels, int64_t out_channels,
                        int kernel_h, int kernel_w, const tg_conv2d_options *opts, tg_module **out)
{
    tg_conv2d_options o = {0};
    if (opts)
        o = *opts;
    tg_status st = make(ctx, "tg_conv2d_new", name, conv2d_forward, out);
    if (st)
        return st;
    int groups = o.params.groups ? o.params.groups : 1;
    if (in_channels < 1 || out_channels < 1 || kernel_h < 1 || kernel_w < 1 || groups < 1
        || in_channels % groups || out_channels % groups)
        return finish(out, tg_ctx_fail(ctx, TG_SHAPE,
                                       "tg_conv2d_new(%s): %lld -> %lld channels, kernel %dx%d, "
                                       "%d groups",
                                       (*out)->name, (long long)in_channels,
                                       (long long)out_channels, kernel_h, kernel_w, groups));
    const tg_conv2d_params *cp = &o.params;
    if (!conv_params_ok(cp))
        return finish(out, tg_ctx_fail(ctx, TG_INVALID,
                                       "tg_conv2d_new(%s): stride %dx%d, padding %dx%d, dilation "
                                       "%dx%d (none may be negative; 0 stride or dilation means 1)",
                                       (*out)->name, cp->stride[0], cp->stride[1], cp->padding[0],
                                       cp->padding[1], cp->dilation[0], cp->dilation[1]));
    (*out)->u.conv = o.params;
    int64_t wshape[4] = {out_channels, in_channels / groups, kernel_h, kernel_w};
    st = add_param(*out, 0, "weight", 4, wshape);
    if (!st && !o.no_bias)
        st = add_param(*out, 1, "bias", 1, &out_channels);
    if (!st)
        st = default_init(*out, (double)(wshape[1] * kernel_h * kernel_w), o.seed);
    return finish(out, st);
}

static tg_tensor max_pool_forward(tg_module *m, tg_tensor x)
{
    return tg_max_pool2d(x, &m->u.pool);
}

static tg_tensor avg_pool_forward(tg_module *m, tg_tensor x)
{
    return tg_avg_pool2d(x, &m->u.pool);
}

/* A pooling window: a kernel (no default), a stride >= 0 (0: the kernel) and a padding of at most
 * half the kernel, as tg_max_pool2d and tg_avg_pool2d check them. */
static bool pool_params_ok(const tg_pool2d_params *p)
{
    for (int d = 0; d < 2; d++)
        if (p->kernel[d] < 1 || p->stride[d] < 0 || p->padding[d] < 0
            || p->padding[d] > p->kernel[d] / 2)
            return false;
    return true;
}

static tg_status pool_new(tg_ctx *ctx, const char *fn, forward_fn f, const tg_pool2d_params *p,
                          tg_module **out)
{
    tg_status st = make(ctx, fn, "", f, out);
    if (st)
        return st;
    if (!p)
        return finish(out, tg_ctx_fail(ctx, TG_INVALID, "%s: parameters are NULL", fn));
    if (!pool_params_ok(p))
        return finish(out, tg_ctx_fail(ctx, TG_INVALID,
                                       "%s: kernel %dx%d, stride %dx%d, padding %dx%d (need "
                                       "kernel >= 1, stride >= 0 (0: the kernel size), "
                                       "0 <= padding <= kernel / 2)",
                                       fn, p->kernel[0], p->kernel[1], p->stride[0], p->stride[1],
                                       p->padding[0], p->padding[1]));
    (*out)->u.pool = *p;
    return finish(out, TG_OK);
}

tg_status tg_max_pool2d_new(tg_ctx *ctx, const tg_pool2d_params *p, tg_module **out)
{
    return pool_new(ctx, "tg_max_pool2d_new", max_pool_forward, p, out);
}

tg_status tg_avg_pool2d_new(tg_ctx *ctx, const tg_pool2d_params *p, tg_module **out)
{
    return pool_new(ctx, "tg_avg_pool2d_new", avg_pool_forward, p, out);
}

static tg_tensor flatten_forward(tg_module *m, tg_tensor x)
{
    if (tg_ok(x) && tg_ndim(x) < 1)
        return fail(x, TG_SHAPE, "flatten(%s): needs at least 1 dim", m->name);
    return tg_reshape(x, 2, (int64_t[]){tg_dim(x, 0), -1});
}

tg_status tg_flatten_new(tg_ctx *ctx, tg_module **out)
{
    tg_status st = make(ctx, "tg_flatten_new", "", flatten_forward, out);
    return st ? st : finish(out, TG_OK);
}

static tg_tensor layer_norm_forward(tg_module *m, tg_tensor x)
{
    tg_tape *tp = tg_tensor_tape(x);
    return tg_layer_norm(x, m->u.norm.naxes, tg_param_tensor(tp, m->own[0]),
                         tg_param_tensor(tp, m->own[1]), m->u.norm.eps);
}

tg_status tg_layer_norm_new(tg_ctx *ctx, const char *name, int ndim, const int64_t *shape,
                            double eps, tg_module **out)
{
    tg_status st = make(ctx, "tg_layer_norm_new", name, layer_norm_forward, out);
    if (st)
        return st;
    if (ndim < 1 || ndim > TG_MAX_DIMS || !shape || !(eps >= 0))
        return finish(out, tg_ctx_fail(ctx, TG_INVALID,
                                       "tg_layer_norm_new(%s): needs 1..%d dims and eps >= 0",
                                       (*out)->name, TG_MAX_DIMS));
    (*out)->u.norm.naxes = ndim;
    (*out)->u.norm.eps = eps;
    st = add_param(*out, 0, "weight", ndim, shape);
    if (!st)
        st = add_param(*out, 1, "bias", ndim, shape);
    if (!st)
        st = tg_param_fill((*out)->own[0], 1.0);
    return finish(out, st);
}

static tg_tensor embedding_forward(tg_module *m, tg_tensor x)
{
    return tg_embedding(tg_param_tensor(tg_tensor_tape(x), m->own[0]), x);
}

tg_status tg_embedding_new(tg_ctx *ctx, const char *name, int64_t num, int64_t dim, uint64_t seed,
                           tg_module **out)
{
    tg_status st = make(ctx, "tg_embedding_new", name, embedding_forward, out);
    if (st)
        return st;
    if (num < 1 || dim < 1)
        return finish(out, tg_ctx_fail(ctx, TG_SHAPE, "tg_embedding_new(%s): %lld x %lld table",
                                       (*out)->name, (long long)num, (long long)dim));
    st = add_param(*out, 0, "weight", 2, (int64_t[]){num, dim});
    if (!st)
        st = tg_param_normal((*out)->own[0], 0.0, 1.0, seed ? seed : name_seed((*out)->name));
    return finish(out, st);
}

static tg_tensor dropout_forward(tg_module *m, tg_tensor x)
{
    /* A new mask per call: the seed moves on with every training forward. */
    uint64_t seed = m->u.dropout.seed + 0x9e3779b97f4a7c15ull * m->u.dropout.calls;
    if (m->training)
        m->u.dropout.calls++;
    return tg_dropout(x, m->u.dropout.p, m->training, seed);
}

tg_status tg_dropout_new(tg_ctx *ctx, double p, uint64_t seed, tg_module **out)
{
    tg_status st = make(ctx, "tg_dropout_new", "", dropout_forward, out);
    if (st)
        return st;
    if (!(p >= 0 && p < 1))
        return finish(out,
                      tg_ctx_fail(ctx, TG_RANGE, "tg_dropout_new: p = %g (need 0 <= p < 1)", p));
    (*out)->u.dropout.p = p;
    (*out)->u.dropout.seed = seed;
    return finish(out, TG_OK);
}

static tg_tensor activation_forward(tg_module *m, tg_tensor x)
{
    switch (m->u.act) {
    case TG_ACT_RELU:
        return tg_relu(x);
    case TG_ACT_TANH:
        return tg_tanh(x);
    case TG_ACT_SIGMOID:
        return tg_sigmoid(x);
    case TG_ACT_GELU:
        return tg_gelu(x);
    case TG_ACT_SOFTPLUS:
        return tg_softplus(x);
    case TG_ACT_LEAKY_RELU:
        return tg_leaky_relu(x, 0.01);
    }
    return fail(x, TG_INVALID, "activation(%s): unknown kind", m->name);
}

tg_status tg_activation_new(tg_ctx *ctx, tg_activation act, tg_module **out)
{
    tg_status st = make(ctx, "tg_activation_new", "", activation_forward, out);
    if (st)
        return st;
    if ((unsigned)act > TG_ACT_LEAKY_RELU)
        return finish(out,
                      tg_ctx_fail(ctx, TG_INVALID, "tg_activation_new: unknown kind %d", (int)act));
    (*out)->u.act = act;
    return finish(out, TG_OK);
}

/* ---- composition -------------------------------------------------------------------------- */

static tg_tensor sequential_forward(tg_module *m, tg_tensor x)
{
    for (int i = 0; i < m->nchildren; i++)
        x = tg_forward(m->children[i], x);
    return x;
}

/* Child i is renamed "<seq>.<i>" and its parameters "<seq>.<i>.<local>" (deeper Sequentials
 * keep their own numbering below that prefix). */
static tg_status rename_tree(tg_module *m, const char *prefix)
{
    size_t size = strlen(prefix) + 1;
    char *name = tg_alloc(m->ctx, size);
    if (!name)
        return tg_ctx_fail(m->ctx, TG_NOMEM, "tg_sequential_new: out of memory");
    memcpy(name, prefix, size);
    tg_free(m->ctx, m->name, m->name_size); /* may be `prefix` itself: use `name` from here */
    m->name = name;
    m->name_size = size;
    prefix = name;
    for (int i = 0; i < 2; i++) {
        if (!m->own[i])
            continue;
        char full[256];
        snprintf(full, sizeof full, "%s%s%s", prefix, prefix[0] ? "." : "", m->local[i]);
        tg_status st = tg_param_rename(m->own[i], full);
        if (st)
            return st;
    }
    for (int i = 0; i < m->nchildren; i++) {
        char child[256];
        snprintf(child, sizeof child, "%s%s%d", prefix, prefix[0] ? "." : "", i);
        tg_status st = rename_tree(m->children[i], child);
        if (st)
            return st;
    }
    return TG_OK;
}

tg_status tg_sequential_new(tg_ctx *ctx, const char *name, int n, tg_module *const *modules,
                            tg_module **out)
{
    if (!out) { /* it takes ownership even now */
        for (int i = 0; modules && i < n; i++)
            if (modules[i] && modules[i]->ctx == ctx)
                tg_module_free(modules[i]);
        return ctx ? tg_ctx_fail(ctx, TG_INVALID, "tg_sequential_new: out is NULL") : TG_INVALID;
    }
    tg_status st = make(ctx, "tg_sequential_new", name, sequential_forward, out);
    if (st == TG_OK && (n < 1 || !modules))
        st = tg_ctx_fail(ctx, TG_INVALID, "tg_sequential_new: needs 1 or more modules");
    for (int i = 0; st == TG_OK && i < n; i++)
        if (!modules[i] || modules[i]->ctx != ctx)
            st = tg_ctx_fail(ctx, TG_INVALID, "tg_sequential_new: module %d is %s", i,
                             modules[i] ? "of another context" : "NULL");
    tg_module *m = *out;
    if (st == TG_OK) {
        m->children = tg_alloc(ctx, (size_t)n * sizeof *m->children);
        if (!m->children)
            st = tg_ctx_fail(ctx, TG_NOMEM, "tg_sequential_new: out of memory");
    }
    if (st != TG_OK) {
        /* It takes ownership even on failure: nothing is leaked by a failed call. */
        for (int i = 0; modules && i < n; i++)
            if (modules[i] && modules[i]->ctx == ctx)
                tg_module_free(modules[i]);
        tg_module_free(m);
        *out = NULL;
        return st;
    }
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        m->children[m->nchildren++] = modules[i];
        total += modules[i]->nparams;
    }
    if (total) {
        m->params = tg_alloc(ctx, total * sizeof *m->params);
        if (!m->params)
            st = tg_ctx_fail(ctx, TG_NOMEM, "tg_sequential_new: out of memory");
    }
    for (int i = 0; st == TG_OK && i < n; i++)
        for (size_t j = 0; j < modules[i]->nparams; j++)
            m->params[m->nparams++] = modules[i]->params[j];
    if (st == TG_OK)
        st = rename_tree(m, m->name);
    if (st != TG_OK) {
        tg_module_free(m);
        *out = NULL;
    }
    return st;
}

static tg_tensor custom_forward(tg_module *m, tg_tensor x)
{
    return m->u.custom.fn(m->u.custom.user, m, x);
}

tg_status tg_module_custom_new(tg_ctx *ctx, const char *name, tg_module_forward_fn forward,
                               void *user, tg_module **out)
{
    tg_status st = make(ctx, "tg_module_custom_new", name, custom_forward, out);
    if (st)
        return st;
    if (!forward)
        return finish(out, tg_ctx_fail(ctx, TG_INVALID, "tg_module_custom_new: forward is NULL"));
    (*out)->u.custom.fn = forward;
    (*out)->u.custom.user = user;
    return finish(out, TG_OK);
}

/* ---- module API --------------------------------------------------------------------------- */

tg_tensor tg_forward(tg_module *m, tg_tensor x)
{
    tg_tape *tp = tg_tensor_tape(x);
    if (!tp || tg_tape_status(tp) != TG_OK)
        return tg_error(tp);
    if (!m) {
        tg_tape_fail(tp, TG_INVALID, "tg_forward: module is NULL");
        return tg_error(tp);
    }
    if (tg_tape_ctx(tp) != m->ctx) {
        tg_tape_fail(tp, TG_INVALID, "tg_forward(%s): module of another context", m->name);
        return tg_error(tp);
    }
    if (!m->name[0])
        return m->forward(m, x);
    /* The module's name scopes its nodes and its errors; the pop matches even after a failure. */
    tg_tape_push_scope(tp, m->name);
    tg_tensor y = m->forward(m, x);
    tg_tape_pop_scope(tp);
    return y;
}

void tg_module_set_training(tg_module *m, bool training)
{
    if (!m)
        return;
    m->training = training;
    for (int i = 0; i < m->nchildren; i++)
        tg_module_set_training(m->children[i], training);
}

bool tg_module_training(const tg_module *m) { return m && m->training; }
const char *tg_module_name(const tg_module *m) { return m ? m->name : ""; }
size_t tg_module_param_count(const tg_module *m) { return m ? m->nparams : 0; }
tg_param *const *tg_module_params(const tg_module *m) { return m ? m->params : NULL; }

void tg_module_free(tg_module *m)
{
    if (!m)
        return;
    tg_ctx *ctx = m->ctx;
    for (int i = 0; i < m->nchildren; i++)
        tg_module_free(m->children[i]);
    for (int i = 0; i < 2; i++)
        tg_param_free(m->own[i]);
    tg_free(ctx, m->children, (size_t)m->nchildren * sizeof *m->children);
    tg_free(ctx, m->params, m->nparams * sizeof *m->params);
    tg_free(ctx, m->name, m->name_size);
    tg_free(ctx, m, sizeof *m);
}
