/* module.c — the module tree (entries, children, hierarchical names, containers, lookup) and the
 * simple layers (Linear, Conv2d, pooling, Flatten, LayerNorm, Embedding, Dropout, activations,
 * Sequential, custom), with the initialisers, on the public API only. module_impl.h describes
 * the module record. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "module_impl.h"

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

/* ---- the module tree ---------------------------------------------------------------------- */

uint64_t tg__name_seed(const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *c = name; c && *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    return h;
}

/* A copy of `s` through the context's allocator (NULL when out of memory). */
static char *copy_string(tg_ctx *ctx, const char *s, size_t *size)
{
    *size = strlen(s) + 1;
    char *d = tg_alloc(ctx, *size);
    if (d)
        memcpy(d, s, *size);
    return d;
}

/* "<prefix>.<key>", or "<key>" when the prefix is "" (NULL when out of memory). */
static char *join(tg_ctx *ctx, const char *prefix, const char *key, size_t *size)
{
    size_t a = strlen(prefix), dot = a ? 1 : 0, b = strlen(key);
    *size = a + dot + b + 1;
    char *s = tg_alloc(ctx, *size);
    if (s) {
        memcpy(s, prefix, a);
        s[a] = '.';
        memcpy(s + a + dot, key, b + 1);
    }
    return s;
}

/* A local name or key: not empty, and no '.' (which separates the components of a path). */
static bool key_ok(const char *key) { return key && key[0] && !strchr(key, '.'); }

/* Whether m already uses `key` for an entry or a child. */
static bool key_used(const tg_module *m, const char *key)
{
    for (size_t i = 0; i < m->nown; i++)
        if (strcmp(m->own[i].local, key) == 0)
            return true;
    for (size_t i = 0; i < m->nchildren; i++)
        if (strcmp(m->children[i]->key, key) == 0)
            return true;
    return false;
}

/* Grows an array of `count` elements of `size` bytes to hold `count + more` (capacity doubles). */
static bool reserve(tg_ctx *ctx, void **array, size_t *cap, size_t count, size_t more, size_t size)
{
    if (count + more <= *cap)
        return true;
    size_t want = *cap ? *cap * 2 : 4;
    if (want < count + more)
        want = count + more;
    void *grown = tg_realloc(ctx, *array, *cap * size, want * size);
    if (!grown)
        return false;
    *array = grown;
    *cap = want;
    return true;
}

/* Rebuilds the parameter and buffer lists of m and of every ancestor (after an entry or a child
 * was added below them), all or nothing: on failure every list is as it was. */
static tg_status rebuild(tg_module *m, const char *fn)
{
    if (!m)
        return TG_OK;
    size_t np = 0, nb = 0;
    for (size_t i = 0; i < m->nown; i++)
        tg_param_is_buffer(m->own[i].param) ? nb++ : np++;
    for (size_t i = 0; i < m->nchildren; i++) {
        np += m->children[i]->nparams;
        nb += m->children[i]->nbuffers;
    }
    size_t cap = np + nb;
    tg_param **list = cap ? tg_alloc(m->ctx, cap * sizeof *list) : NULL;
    if (cap && !list)
        return tg_ctx_fail(m->ctx, TG_NOMEM, "%s(%s): out of memory", fn, m->name);
    size_t k = 0;
    for (int buffers = 0; buffers < 2; buffers++) {
        for (size_t i = 0; i < m->nown; i++)
            if (tg_param_is_buffer(m->own[i].param) == buffers)
                list[k++] = m->own[i].param;
        for (size_t i = 0; i < m->nchildren; i++) {
            const tg_module *c = m->children[i];
            size_t count = buffers ? c->nbuffers : c->nparams;
            if (count)
                memcpy(list + k, c->state + (buffers ? c->nparams : 0), count * sizeof *list);
            k += count;
        }
    }
    tg_param **old = m->state;
    size_t old_np = m->nparams, old_nb = m->nbuffers, old_cap = m->state_cap;
    m->state = list;
    m->nparams = np;
    m->nbuffers = nb;
    m->state_cap = cap;
    tg_status st = rebuild(m->parent, fn);
    if (st != TG_OK) {
        tg_free(m->ctx, list, cap * sizeof *list);
        m->state = old;
        m->nparams = old_np;
        m->nbuffers = old_nb;
        m->state_cap = old_cap;
        return st;
    }
    tg_free(m->ctx, old, old_cap * sizeof *old);
    return TG_OK;
}

tg_status tg__module_new(tg_ctx *ctx, const char *fn, const char *kind, const char *name,
                         tg__forward_fn forward, tg_module **out)
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
    m->kind = kind;
    m->training = true;
    m->name = copy_string(ctx, name ? name : "", &m->name_size);
    if (!m->name) {
        tg_free(ctx, m, sizeof *m);
        return tg_ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
    }
    *out = m;
    return TG_OK;
}

tg_status tg__module_entry(tg_module *m, const char *fn, const char *local, tg_dtype dt, int ndim,
                           const int64_t *shape, bool buffer, tg_param **out)
{
    if (out)
        *out = NULL;
    if (!key_ok(local))
        return tg_ctx_fail(m->ctx, TG_INVALID,
                           "%s(%s): \"%s\" is not a valid name (it must be non-empty, without '.')",
                           fn, m->name, local ? local : "(null)");
    if (key_used(m, local))
        return tg_ctx_fail(m->ctx, TG_EXISTS,
                           "%s(%s): the module already has a member named \"%s\"", fn, m->name,
                           local);
    if (!reserve(m->ctx, (void **)&m->own, &m->own_cap, m->nown, 1, sizeof *m->own))
        return tg_ctx_fail(m->ctx, TG_NOMEM, "%s(%s): out of memory", fn, m->name);
    tg__entry e = {0};
    size_t full_size;
    char *full = join(m->ctx, m->name, local, &full_size);
    e.local = copy_string(m->ctx, local, &e.local_size);
    tg_status st = !full || !e.local
                       ? tg_ctx_fail(m->ctx, TG_NOMEM, "%s(%s): out of memory", fn, m->name)
                   : buffer ? tg_buffer_new(m->ctx, full, dt, ndim, shape, &e.param)
                            : tg_param_new(m->ctx, full, dt, ndim, shape, &e.param);
    tg_free(m->ctx, full, full_size);
    if (st == TG_OK) {
        m->own[m->nown++] = e;
        st = rebuild(m, fn);
        if (st != TG_OK)
            m->nown--;
    }
    if (st != TG_OK) {
        tg_param_free(e.param);
        tg_free(m->ctx, e.local, e.local_size);
        return st;
    }
    if (out)
        *out = e.param;
    return TG_OK;
}

/* Removes the contiguous run of c's parameters and the run of its buffers from a's lists (a is
 * c's parent or an ancestor). In place: it cannot fail. */
static void drop_runs(tg_module *a, const tg_module *c)
{
    size_t total = a->nparams + a->nbuffers;
    for (int buffers = 1; buffers >= 0; buffers--) { /* buffers first: they sit after params */
        size_t count = buffers ? c->nbuffers : c->nparams, begin = buffers ? a->nparams : 0;
        size_t end = buffers ? total : a->nparams;
        tg_param *first = count ? c->state[buffers ? c->nparams : 0] : NULL;
        for (size_t i = begin; first && i + count <= end; i++) {
            if (a->state[i] != first)
                continue;
            memmove(a->state + i, a->state + i + count, (total - i - count) * sizeof *a->state);
            total -= count;
            *(buffers ? &a->nbuffers : &a->nparams) -= count;
            break;
        }
    }
}

/* Takes m out of its parent (whose other children keep their names). */
static void detach(tg_module *m)
{
    tg_module *parent = m->parent;
    for (size_t i = 0; i < parent->nchildren; i++) {
        if (parent->children[i] != m)
            continue;
        memmove(parent->children + i, parent->children + i + 1,
                (parent->nchildren - i - 1) * sizeof *parent->children);
        parent->nchildren--;
        break;
    }
    for (tg_module *a = parent; a; a = a->parent)
        drop_runs(a, m);
    m->parent = NULL;
}

void tg_module_free(tg_module *m)
{
    if (!m)
        return;
    tg_ctx *ctx = m->ctx;
    if (m->parent)
        detach(m);
    for (size_t i = 0; i < m->nchildren; i++) {
        m->children[i]->parent = NULL; /* freed whole: no need to take it out of m's lists */
        tg_module_free(m->children[i]);
    }
    for (size_t i = 0; i < m->nown; i++) {
        tg_param_free(m->own[i].param);
        tg_free(ctx, m->own[i].local, m->own[i].local_size);
    }
    tg_free(ctx, m->own, m->own_cap * sizeof *m->own);
    tg_free(ctx, m->children, m->children_cap * sizeof *m->children);
    tg_free(ctx, m->state, m->state_cap * sizeof *m->state);
    tg_free(ctx, m->key, m->key_size);
    tg_free(ctx, m->name, m->name_size);
    tg_free(ctx, m, sizeof *m);
}

tg_status tg__module_finish(tg_module **out, tg_status st)
{
    if (st != TG_OK) {
        tg_module_free(*out);
        *out = NULL;
    }
    return st;
}

tg_tensor tg__module_fail(tg_tensor x, tg_status st, const char *fmt, ...)
{
    tg_tape *tp = tg_tensor_tape(x);
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    tg_tape_fail(tp, st, "%s", message);
    return tg_error(tp);
}

/* Gives m and its subtree the name `name`: entries become "<name>.<local>", children
 * "<name>.<key>", recursively. */
static tg_status rename_tree(tg_module *m, const char *fn, const char *name)
{
    size_t size;
    char *copy = copy_string(m->ctx, name, &size);
    if (!copy)
        return tg_ctx_fail(m->ctx, TG_NOMEM, "%s: out of memory", fn);
    tg_free(m->ctx, m->name, m->name_size);
    m->name = copy;
    m->name_size = size;
    tg_status st = TG_OK;
    for (size_t i = 0; st == TG_OK && i < m->nown + m->nchildren; i++) {
        bool entry = i < m->nown;
        char *full =
            join(m->ctx, m->name, entry ? m->own[i].local : m->children[i - m->nown]->key, &size);
        if (!full)
            st = tg_ctx_fail(m->ctx, TG_NOMEM, "%s: out of memory", fn);
        else if (entry)
            st = tg_param_rename(m->own[i].param, full);
        else
            st = rename_tree(m->children[i - m->nown], fn, full);
        tg_free(m->ctx, full, size);
    }
    return st;
}

/* The first parameter or buffer of m's subtree whose name another of the context's parameters
 * or buffers also has, or NULL. */
static const tg_param *name_clash(const tg_module *m)
{
    size_t count = tg_param_count(m->ctx);
    for (size_t i = 0; i < m->nparams + m->nbuffers; i++)
        for (size_t j = 0; j < count; j++) {
            const tg_param *p = tg_param_at(m->ctx, j);
            if (p != m->state[i] && strcmp(tg_param_name(p), tg_param_name(m->state[i])) == 0)
                return m->state[i];
        }
    return NULL;
}

/* Whether `a` is m or one of m's ancestors. */
static bool is_ancestor(const tg_module *a, const tg_module *m)
{
    for (; m; m = m->parent)
        if (m == a)
            return true;
    return false;
}

/* Whether a call placing modules[i] into m (NULL: a container not made yet) may free it on
 * failure: the first mention of a module of ctx without a parent that is not m or above m. */
static bool ours(tg_ctx *ctx, const tg_module *m, tg_module *const *modules, size_t i)
{
    const tg_module *c = modules[i];
    for (size_t j = 0; j < i; j++) /* before looking inside: a repeat may be freed already */
        if (modules[j] == c)
            return false;
    return c && c->ctx == ctx && !c->parent && !(m && is_ancestor(c, m));
}

/* Frees the modules a failed call took (see ours). Which they are is decided before any is
 * freed, since freeing one frees the modules inside it, which the list may also name; they are
 * roots, so their trees are disjoint, and a chain through `next_freed` holds them meanwhile. */
static void free_taken(tg_ctx *ctx, const tg_module *m, size_t n, tg_module *const *modules)
{
    tg_module *chain = NULL;
    for (size_t i = 0; modules && i < n; i++)
        if (ours(ctx, m, modules, i)) {
            modules[i]->next_freed = chain;
            chain = modules[i];
        }
    while (chain) {
        tg_module *next = chain->next_freed;
        tg_module_free(chain);
        chain = next;
    }
}

/* Why modules[i] (under keys[i] when keys is not NULL) cannot become m's child, or TG_OK. */
static tg_status check_child(tg_module *m, const char *fn, const char *const *keys,
                             tg_module *const *modules, size_t i)
{
    const tg_module *c = modules[i];
    if (!c || c->ctx != m->ctx)
        return tg_ctx_fail(m->ctx, TG_INVALID, "%s(%s): module %zu is %s", fn, m->name, i,
                           c ? "of another context" : "NULL");
    if (c->parent || is_ancestor(c, m))
        return tg_ctx_fail(m->ctx, TG_INVALID, "%s(%s): module %zu (%s) %s", fn, m->name, i,
                           c->name, c->parent ? "already has a parent" : "contains the container");
    for (size_t j = 0; j < i; j++)
        if (modules[j] == c)
            return tg_ctx_fail(m->ctx, TG_INVALID, "%s(%s): module %zu (%s) appears twice", fn,
                               m->name, i, c->name);
    if (!keys) { /* its index; taken when a child was freed from the middle of a list */
        char index[24];
        snprintf(index, sizeof index, "%zu", m->nchildren + i);
        if (key_used(m, index))
            return tg_ctx_fail(m->ctx, TG_EXISTS,
                               "%s(%s): the module already has a member named \"%s\"", fn, m->name,
                               index);
        return TG_OK;
    }
    if (!key_ok(keys[i]))
        return tg_ctx_fail(m->ctx, TG_INVALID,
                           "%s(%s): key %zu \"%s\" is not a valid name (it must be non-empty, "
                           "without '.')",
                           fn, m->name, i, keys[i] ? keys[i] : "(null)");
    if (key_used(m, keys[i]))
        return tg_ctx_fail(m->ctx, TG_EXISTS,
                           "%s(%s): the module already has a member named \"%s\"", fn, m->name,
                           keys[i]);
    for (size_t j = 0; j < i; j++)
        if (strcmp(keys[j], keys[i]) == 0)
            return tg_ctx_fail(m->ctx, TG_EXISTS, "%s(%s): key \"%s\" appears twice", fn, m->name,
                               keys[i]);
    return TG_OK;
}

/* Names the children m->children[first..] (keys[i], or their index among m's children when keys
 * is NULL) and renames their subtrees; then checks that no resulting name is taken. */
static tg_status name_children(tg_module *m, const char *fn, size_t first, const char *const *keys)
{
    for (size_t i = first; i < m->nchildren; i++) {
        tg_module *c = m->children[i];
        char index[24];
        snprintf(index, sizeof index, "%zu", i);
        c->key = copy_string(m->ctx, keys ? keys[i - first] : index, &c->key_size);
        if (!c->key)
            return tg_ctx_fail(m->ctx, TG_NOMEM, "%s(%s): out of memory", fn, m->name);
        size_t size;
        char *full = join(m->ctx, m->name, c->key, &size);
        tg_status st = full ? rename_tree(c, fn, full)
                            : tg_ctx_fail(m->ctx, TG_NOMEM, "%s(%s): out of memory", fn, m->name);
        tg_free(m->ctx, full, size);
        if (st != TG_OK)
            return st;
    }
    for (size_t i = first; i < m->nchildren; i++) {
        const tg_param *p = name_clash(m->children[i]);
        if (p)
            return tg_ctx_fail(m->ctx, TG_EXISTS,
                               "%s(%s): \"%s\" would name two parameters or buffers of the context",
                               fn, m->name, tg_param_name(p));
    }
    return TG_OK;
}

/* Makes the n modules children of m, under keys[i] or (keys NULL) their index among m's
 * children, renaming their subtrees below m's name. Takes the modules also on failure: every one
 * it may take (see ours) is freed then, and m is as it was. */
static tg_status adopt(tg_module *m, const char *fn, size_t n, const char *const *keys,
                       tg_module *const *modules)
{
    tg_status st = TG_OK;
    for (size_t i = 0; st == TG_OK && i < n; i++)
        st = check_child(m, fn, keys, modules, i);
    if (st == TG_OK
        && !reserve(m->ctx, (void **)&m->children, &m->children_cap, m->nchildren, n,
                    sizeof *m->children))
        st = tg_ctx_fail(m->ctx, TG_NOMEM, "%s(%s): out of memory", fn, m->name);
    if (st != TG_OK) {
        free_taken(m->ctx, m, n, modules);
        return st;
    }
    size_t first = m->nchildren;
    for (size_t i = 0; i < n; i++) {
        m->children[m->nchildren++] = modules[i];
        modules[i]->parent = m;
    }
    st = name_children(m, fn, first, keys);
    if (st == TG_OK)
        st = rebuild(m, fn);
    if (st != TG_OK)
        while (m->nchildren > first) { /* not in any list yet: no detach needed */
            tg_module *c = m->children[--m->nchildren];
            c->parent = NULL;
            tg_module_free(c);
        }
    return st;
}

/* PyTorch's default for Linear and Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both weight
 * (kaiming_uniform with a = sqrt(5)) and bias. */
static tg_status default_init(tg_module *m, double fan_in, uint64_t seed)
{
    double bound = fan_in > 0 ? 1.0 / sqrt(fan_in) : 0.0;
    if (seed == 0)
        seed = tg__name_seed(m->name);
    tg_status st = tg_param_uniform(m->weight, -bound, bound, seed);
    if (st == TG_OK && m->bias)
        st = tg_param_uniform(m->bias, -bound, bound, seed ^ 0x9e3779b97f4a7c15ull);
    return st;
}

/* The weight (and unless no_bias, the bias [out]) of a simple layer, as f32 parameters. */
static tg_status weight_and_bias(tg_module *m, const char *fn, int ndim, const int64_t *shape,
                                 bool no_bias, int64_t out)
{
    tg_status st = tg__module_entry(m, fn, "weight", TG_F32, ndim, shape, false, &m->weight);
    if (st == TG_OK && !no_bias)
        st = tg__module_entry(m, fn, "bias", TG_F32, 1, &out, false, &m->bias);
    return st;
}

/* ---- layers ------------------------------------------------------------------------------- */

static tg_tensor linear_forward(tg_module *m, tg_tensor x)
{
    tg_tape *tp = tg_tensor_tape(x);
    tg_tensor y = tg_matmul_t(x, tg_param_tensor(tp, m->weight), false, true);
    return m->bias ? tg_add(y, tg_param_tensor(tp, m->bias)) : y;
}

tg_status tg_linear_new(tg_ctx *ctx, const char *name, int64_t in_features, int64_t out_features,
                        const tg_linear_options *opts, tg_module **out)
{
    static const char fn[] = "tg_linear_new";
    tg_linear_options o = {0};
    if (opts)
        o = *opts;
    tg_status st = tg__module_new(ctx, fn, "Linear", name, linear_forward, out);
    if (st)
        return st;
    if (in_features < 1 || out_features < 1)
        return tg__module_finish(out, tg_ctx_fail(ctx, TG_SHAPE, "%s(%s): %lld -> %lld features",
                                                  fn, (*out)->name, (long long)in_features,
                                                  (long long)out_features));
    st = weight_and_bias(*out, fn, 2, (int64_t[]){out_features, in_features}, o.no_bias,
                         out_features);
    if (!st)
        st = default_init(*out, (double)in_features, o.seed);
    return tg__module_finish(out, st);
}

static tg_tensor conv2d_forward(tg_module *m, tg_tensor x)
{
    tg_tape *tp = tg_tensor_tape(x);
    tg_tensor b = {0};
    if (m->bias)
        b = tg_param_tensor(tp, m->bias);
    return tg_conv2d(x, tg_param_tensor(tp, m->weight), b, &m->u.conv);
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
    static const char fn[] = "tg_conv2d_new";
    tg_conv2d_options o = {0};
    if (opts)
        o = *opts;
    tg_status st = tg__module_new(ctx, fn, "Conv2d", name, conv2d_forward, out);
    if (st)
        return st;
    int groups = o.params.groups ? o.params.groups : 1;
    if (in_channels < 1 || out_channels < 1 || kernel_h < 1 || kernel_w < 1 || groups < 1
        || in_channels % groups || out_channels % groups)
        return tg__module_finish(out,
                                 tg_ctx_fail(ctx, TG_SHAPE,
                                             "%s(%s): %lld -> %lld channels, kernel %dx%d, "
                                             "%d groups",
                                             fn, (*out)->name, (long long)in_channels,
                                             (long long)out_channels, kernel_h, kernel_w, groups));
    const tg_conv2d_params *cp = &o.params;
    if (!conv_params_ok(cp))
        return tg__module_finish(
            out, tg_ctx_fail(ctx, TG_INVALID,
                             "%s(%s): stride %dx%d, padding %dx%d, dilation %dx%d (none may be "
                             "negative; 0 stride or dilation means 1)",
                             fn, (*out)->name, cp->stride[0], cp->stride[1], cp->padding[0],
                             cp->padding[1], cp->dilation[0], cp->dilation[1]));
    (*out)->u.conv = o.params;
    int64_t wshape[4] = {out_channels, in_channels / groups, kernel_h, kernel_w};
    st = weight_and_bias(*out, fn, 4, wshape, o.no_bias, out_channels);
    if (!st)
        st = default_init(*out, (double)(wshape[1] * kernel_h * kernel_w), o.seed);
    return tg__module_finish(out, st);
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

static tg_status pool_new(tg_ctx *ctx, const char *fn, const char *kind, tg__forward_fn f,
                          const tg_pool2d_params *p, tg_module **out)
{
    tg_status st = tg__module_new(ctx, fn, kind, "", f, out);
    if (st)
        return st;
    if (!p)
        return tg__module_finish(out, tg_ctx_fail(ctx, TG_INVALID, "%s: parameters are NULL", fn));
    if (!pool_params_ok(p))
        return tg__module_finish(
            out, tg_ctx_fail(ctx, TG_INVALID,
                             "%s: kernel %dx%d, stride %dx%d, padding %dx%d (need kernel >= 1, "
                             "stride >= 0 (0: the kernel size), 0 <= padding <= kernel / 2)",
                             fn, p->kernel[0], p->kernel[1], p->stride[0], p->stride[1],
                             p->padding[0], p->padding[1]));
    (*out)->u.pool = *p;
    return TG_OK;
}

tg_status tg_max_pool2d_new(tg_ctx *ctx, const tg_pool2d_params *p, tg_module **out)
{
    return pool_new(ctx, "tg_max_pool2d_new", "MaxPool2d", max_pool_forward, p, out);
}

tg_status tg_avg_pool2d_new(tg_ctx *ctx, const tg_pool2d_params *p, tg_module **out)
{
    return pool_new(ctx, "tg_avg_pool2d_new", "AvgPool2d", avg_pool_forward, p, out);
}

static tg_tensor flatten_forward(tg_module *m, tg_tensor x)
{
    if (tg_ok(x) && tg_ndim(x) < 1)
        return tg__module_fail(x, TG_SHAPE, "flatten(%s): needs at least 1 dim", m->name);
    return tg_reshape(x, 2, (int64_t[]){tg_dim(x, 0), -1});
}

tg_status tg_flatten_new(tg_ctx *ctx, tg_module **out)
{
    return tg__module_new(ctx, "tg_flatten_new", "Flatten", "", flatten_forward, out);
}

static tg_tensor layer_norm_forward(tg_module *m, tg_tensor x)
{
    tg_tape *tp = tg_tensor_tape(x);
    return tg_layer_norm(x, m->u.norm.naxes, tg_param_tensor(tp, m->weight),
                         tg_param_tensor(tp, m->bias), m->u.norm.eps);
}

tg_status tg_layer_norm_new(tg_ctx *ctx, const char *name, int ndim, const int64_t *shape,
                            double eps, tg_module **out)
{
    static const char fn[] = "tg_layer_norm_new";
    tg_status st = tg__module_new(ctx, fn, "LayerNorm", name, layer_norm_forward, out);
    if (st)
        return st;
    if (ndim < 1 || ndim > TG_MAX_DIMS || !shape || !(eps >= 0))
        return tg__module_finish(out, tg_ctx_fail(ctx, TG_INVALID,
                                                  "%s(%s): needs 1..%d dims and eps >= 0", fn,
                                                  (*out)->name, TG_MAX_DIMS));
    (*out)->u.norm.naxes = ndim;
    (*out)->u.norm.eps = eps;
    tg_module *m = *out;
    st = tg__module_entry(m, fn, "weight", TG_F32, ndim, shape, false, &m->weight);
    if (!st)
        st = tg__module_entry(m, fn, "bias", TG_F32, ndim, shape, false, &m->bias);
    if (!st)
        st = tg_param_fill(m->weight, 1.0);
    return tg__module_finish(out, st);
}

static tg_tensor embedding_forward(tg_module *m, tg_tensor x)
{
    return tg_embedding(tg_param_tensor(tg_tensor_tape(x), m->weight), x);
}

tg_status tg_embedding_new(tg_ctx *ctx, const char *name, int64_t num, int64_t dim, uint64_t seed,
                           tg_module **out)
{
    static const char fn[] = "tg_embedding_new";
    tg_status st = tg__module_new(ctx, fn, "Embedding", name, embedding_forward, out);
    if (st)
        return st;
    tg_module *m = *out;
    if (num < 1 || dim < 1)
        return tg__module_finish(out, tg_ctx_fail(ctx, TG_SHAPE, "%s(%s): %lld x %lld table", fn,
                                                  m->name, (long long)num, (long long)dim));
    st = tg__module_entry(m, fn, "weight", TG_F32, 2, (int64_t[]){num, dim}, false, &m->weight);
    if (!st)
        st = tg_param_normal(m->weight, 0.0, 1.0, seed ? seed : tg__name_seed(m->name));
    return tg__module_finish(out, st);
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
    tg_status st = tg__module_new(ctx, "tg_dropout_new", "Dropout", "", dropout_forward, out);
    if (st)
        return st;
    if (!(p >= 0 && p < 1))
        return tg__module_finish(
            out, tg_ctx_fail(ctx, TG_RANGE, "tg_dropout_new: p = %g (need 0 <= p < 1)", p));
    (*out)->u.dropout.p = p;
    (*out)->u.dropout.seed = seed;
    return TG_OK;
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
    return tg__module_fail(x, TG_INVALID, "activation(%s): unknown kind", m->name);
}

tg_status tg_activation_new(tg_ctx *ctx, tg_activation act, tg_module **out)
{
    tg_status st =
        tg__module_new(ctx, "tg_activation_new", "Activation", "", activation_forward, out);
    if (st)
        return st;
    if ((unsigned)act > TG_ACT_LEAKY_RELU)
        return tg__module_finish(
            out, tg_ctx_fail(ctx, TG_INVALID, "tg_activation_new: unknown kind %d", (int)act));
    (*out)->u.act = act;
    return TG_OK;
}

static tg_tensor custom_forward(tg_module *m, tg_tensor x)
{
    return m->u.custom.fn(m->u.custom.user, m, x);
}

tg_status tg_module_custom_new(tg_ctx *ctx, const char *name, tg_module_forward_fn forward,
                               void *user, tg_module **out)
{
    static const char fn[] = "tg_module_custom_new";
    tg_status st = tg__module_new(ctx, fn, "Module", name, custom_forward, out);
    if (st)
        return st;
    if (!forward)
        return tg__module_finish(out, tg_ctx_fail(ctx, TG_INVALID, "%s: forward is NULL", fn));
    (*out)->u.custom.fn = forward;
    (*out)->u.custom.user = user;
    return TG_OK;
}

/* ---- containers --------------------------------------------------------------------------- */

static tg_tensor sequential_forward(tg_module *m, tg_tensor x)
{
    for (size_t i = 0; i < m->nchildren; i++)
        x = tg_forward(m->children[i], x);
    return x;
}

/* A container holding the n modules (taken also on failure) under keys (NULL: 0, 1, ...). */
static tg_status container_new(tg_ctx *ctx, const char *fn, const char *kind, const char *name,
                               tg__forward_fn forward, int n, bool keyed, const char *const *keys,
                               tg_module *const *modules, tg_module **out)
{
    tg_status st = tg__module_new(ctx, fn, kind, name, forward, out);
    if (st == TG_OK && n < 0)
        st = tg_ctx_fail(ctx, TG_INVALID, "%s(%s): %d modules", fn, (*out)->name, n);
    if (st == TG_OK && n > 0 && !modules)
        st = tg_ctx_fail(ctx, TG_INVALID, "%s(%s): modules is NULL", fn, (*out)->name);
    if (st == TG_OK && n > 0 && keyed && !keys)
        st = tg_ctx_fail(ctx, TG_INVALID, "%s(%s): keys is NULL", fn, (*out)->name);
    if (st != TG_OK) {
        free_taken(ctx, NULL, n > 0 ? (size_t)n : 0, modules);
        return out ? tg__module_finish(out, st) : st;
    }
    return tg__module_finish(out, adopt(*out, fn, (size_t)n, keys, modules));
}

tg_status tg_sequential_new(tg_ctx *ctx, const char *name, int n, tg_module *const *modules,
                            tg_module **out)
{
    static const char fn[] = "tg_sequential_new";
    if (n < 1 && ctx && out) {
        *out = NULL;
        return tg_ctx_fail(ctx, TG_INVALID, "%s: needs 1 or more modules", fn);
    }
    return container_new(ctx, fn, "Sequential", name, sequential_forward, n, false, NULL, modules,
                         out);
}

tg_status tg_module_list_new(tg_ctx *ctx, const char *name, int n, tg_module *const *modules,
                             tg_module **out)
{
    return container_new(ctx, "tg_module_list_new", "ModuleList", name, NULL, n, false, NULL,
                         modules, out);
}

tg_status tg_module_dict_new(tg_ctx *ctx, const char *name, int n, const char *const *keys,
                             tg_module *const *modules, tg_module **out)
{
    return container_new(ctx, "tg_module_dict_new", "ModuleDict", name, NULL, n, true, keys,
                         modules, out);
}

tg_status tg_module_add_child(tg_module *m, const char *key, tg_module *child)
{
    if (!m) {
        if (child && !child->parent)
            tg_module_free(child);
        return TG_INVALID;
    }
    return adopt(m, "tg_module_add_child", 1, key ? &key : NULL, &child);
}

tg_status tg_module_add_param(tg_module *m, const char *name, tg_dtype dt, int ndim,
                              const int64_t *shape, tg_param **out)
{
    if (out)
        *out = NULL;
    return m ? tg__module_entry(m, "tg_module_add_param", name, dt, ndim, shape, false, out)
             : TG_INVALID;
}

tg_status tg_module_add_buffer(tg_module *m, const char *name, tg_dtype dt, int ndim,
                               const int64_t *shape, tg_param **out)
{
    if (out)
        *out = NULL;
    return m ? tg__module_entry(m, "tg_module_add_buffer", name, dt, ndim, shape, true, out)
             : TG_INVALID;
}

/* ---- module API --------------------------------------------------------------------------- */

tg_tensor tg_forward(tg_module *m, tg_tensor x)
{
    tg_tape *tp = tg_tensor_tape(x);
    if (!tp || tg_tape_status(tp) != TG_OK)
        return tg_error(tp);
    if (!m)
        return tg__module_fail(x, TG_INVALID, "tg_forward: module is NULL");
    if (tg_tape_ctx(tp) != m->ctx)
        return tg__module_fail(x, TG_INVALID, "tg_forward(%s): module of another context", m->name);
    if (!m->forward)
        return tg__module_fail(x, TG_INVALID,
                               "tg_forward(%s): a %s has no forward of its own (run its children)",
                               m->name, m->kind);
    return m->forward(m, x);
}

void tg_module_set_training(tg_module *m, bool training)
{
    if (!m)
        return;
    m->training = training;
    for (size_t i = 0; i < m->nchildren; i++)
        tg_module_set_training(m->children[i], training);
}

bool tg_module_training(const tg_module *m) { return m && m->training; }
const char *tg_module_name(const tg_module *m) { return m ? m->name : ""; }
const char *tg_module_key(const tg_module *m) { return !m ? "" : m->key ? m->key : m->name; }
size_t tg_module_param_count(const tg_module *m) { return m ? m->nparams : 0; }
tg_param *const *tg_module_params(const tg_module *m) { return m ? m->state : NULL; }
size_t tg_module_buffer_count(const tg_module *m) { return m ? m->nbuffers : 0; }
tg_param *const *tg_module_buffers(const tg_module *m)
{
    return m && m->state ? m->state + m->nparams : NULL;
}
size_t tg_module_state_count(const tg_module *m) { return m ? m->nparams + m->nbuffers : 0; }
tg_param *const *tg_module_state(const tg_module *m) { return m ? m->state : NULL; }
size_t tg_module_child_count(const tg_module *m) { return m ? m->nchildren : 0; }
tg_module *tg_module_child(const tg_module *m, size_t i)
{
    return m && i < m->nchildren ? m->children[i] : NULL;
}

/* The descendant at the first `len` characters of a dotted path of keys ("" is m itself). */
static tg_module *find(const tg_module *m, const char *path, size_t len)
{
    const char *p = path, *end = path + len;
    while (m && p < end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        const tg_module *next = NULL;
        for (size_t i = 0; !next && i < m->nchildren; i++)
            if (strlen(m->children[i]->key) == n && memcmp(m->children[i]->key, p, n) == 0)
                next = m->children[i];
        m = next;
        p += n;
        if (dot && ++p == end) /* a trailing dot names nothing */
            return NULL;
    }
    return (tg_module *)m;
}

tg_module *tg_module_find(const tg_module *m, const char *path)
{
    return m && path ? find(m, path, strlen(path)) : NULL;
}

tg_param *tg_module_find_param(const tg_module *m, const char *path)
{
    if (!m || !path)
        return NULL;
    const char *dot = strrchr(path, '.'), *local = dot ? dot + 1 : path;
    if (dot == path)
        return NULL;
    const tg_module *owner = dot ? find(m, path, (size_t)(dot - path)) : m;
    for (size_t i = 0; owner && i < owner->nown; i++)
        if (strcmp(owner->own[i].local, local) == 0)
            return owner->own[i].param;
    return NULL;
}
