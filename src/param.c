/* param.c — parameters: persistent tensors with gradients, owned by the context. */
#include "internal.h"

#include <math.h>

/* A parameter (buffer false: f32 or f64, with a gradient) or a buffer (f32, f64 or i64, no
 * gradient), zero-filled and appended to the context's list. */
static tg_status create(tg_ctx *ctx, const char *fn, const char *name, tg_dtype dt, int ndim,
                        const int64_t *shape, bool buffer, tg_param **out)
{
    if (out)
        *out = NULL;
    if (!ctx)
        return TG_INVALID;
    if (!out)
        return tg__ctx_fail(ctx, TG_INVALID, "%s: out is NULL", fn);
    if (dt != TG_F32 && dt != TG_F64 && !(buffer && dt == TG_I64))
        return tg__ctx_fail(ctx, TG_DTYPE, "%s(%s): dtype must be f32 or f64%s", fn,
                            name ? name : "", buffer ? " or i64" : "");
    int64_t numel;
    if (ndim < 0 || ndim > TG_MAX_DIMS || (ndim > 0 && !shape)
        || !tg__shape_ok(ndim, shape, &numel))
        return tg__ctx_fail(ctx, TG_SHAPE, "%s(%s): invalid shape", fn, name ? name : "");
    if (ctx->nparams == ctx->params_cap) {
        size_t cap = ctx->params_cap ? ctx->params_cap * 2 : 16;
        tg_param **ps =
            tg__realloc(ctx, ctx->params, ctx->params_cap * sizeof *ps, cap * sizeof *ps);
        if (!ps)
            return tg__ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
        ctx->params = ps;
        ctx->params_cap = cap;
    }
    tg_param *p = tg__alloc(ctx, sizeof *p);
    if (!p)
        return tg__ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
    memset(p, 0, sizeof *p);
    p->ctx = ctx;
    p->buffer = buffer;
    p->bytes = (size_t)numel * tg_dtype_size(dt);
    p->capacity = p->bytes ? p->bytes : 1;
    p->name = tg__strdup(ctx, name ? name : "", &p->name_size);
    p->value.data = tg__alloc(ctx, p->capacity);
    p->grad = buffer ? NULL : tg__alloc(ctx, p->capacity);
    if (!p->name || !p->value.data || (!buffer && !p->grad)) {
        tg__free(ctx, p->name, p->name_size);
        tg__free(ctx, p->value.data, p->capacity);
        tg__free(ctx, p->grad, p->capacity);
        tg__free(ctx, p, sizeof *p);
        return tg__ctx_fail(ctx, TG_NOMEM, "%s: out of memory", fn);
    }
    memset(p->value.data, 0, p->bytes);
    if (p->grad)
        memset(p->grad, 0, p->bytes);
    p->value.dtype = dt;
    p->value.ndim = ndim;
    p->value.numel = numel;
    for (int i = 0; i < ndim; i++)
        p->value.shape[i] = shape[i];
    ctx->params[ctx->nparams++] = p;
    *out = p;
    return TG_OK;
}

tg_status tg_param_new(tg_ctx *ctx, const char *name, tg_dtype dt, int ndim, const int64_t *shape,
                       tg_param **out)
{
    return create(ctx, "tg_param_new", name, dt, ndim, shape, false, out);
}

tg_status tg_buffer_new(tg_ctx *ctx, const char *name, tg_dtype dt, int ndim, const int64_t *shape,
                        tg_param **out)
{
    return create(ctx, "tg_buffer_new", name, dt, ndim, shape, true, out);
}

bool tg_param_is_buffer(const tg_param *p) { return p && p->buffer; }

tg_status tg_param_rename(tg_param *p, const char *name)
{
    if (!p)
        return TG_INVALID;
    size_t size;
    char *copy = tg__strdup(p->ctx, name ? name : "", &size);
    if (!copy)
        return tg__ctx_fail(p->ctx, TG_NOMEM, "tg_param_rename: out of memory");
    tg__free(p->ctx, p->name, p->name_size);
    p->name = copy;
    p->name_size = size;
    return TG_OK;
}

void tg_param_free(tg_param *p)
{
    if (!p)
        return;
    tg_ctx *ctx = p->ctx;
    for (size_t i = 0; i < ctx->nparams; i++) {
        if (ctx->params[i] == p) {
            memmove(&ctx->params[i], &ctx->params[i + 1],
                    (ctx->nparams - i - 1) * sizeof *ctx->params);
            ctx->nparams--;
            break;
        }
    }
    tg__free(ctx, p->name, p->name_size);
    tg__free(ctx, p->value.data, p->capacity);
    tg__free(ctx, p->grad, p->capacity); /* NULL for a buffer: a no-op */
    tg__free(ctx, p, sizeof *p);
}

tg_tensor tg_param_tensor(tg_tape *tp, tg_param *p)
{
    if (!tp || tp->status)
        return tg__error_handle(tp);
    if (!p || p->ctx != tp->ctx) {
        tg__fail(tp, TG_INVALID, "tg_param_tensor: %s",
                 p ? "parameter of another context" : "parameter is NULL");
        return tg__error_handle(tp);
    }
    if (p->buffer) { /* a copy, so that a later tg_buffer_store cannot reach this tape */
        tg__node *n;
        tg_tensor t = tg__leaf(tp, p->value.dtype, p->value.ndim, p->value.shape, &n);
        if (t.id_)
            memcpy(n->v.data, p->value.data, p->bytes);
        return t;
    }
    tg__node *n = tg__node_reserve(tp);
    if (!n)
        return tg__error_handle(tp);
    n->kind = TG__PARAM;
    n->v = p->value;
    n->param = p;
    n->param_version = p->version;
    n->requires_grad = 1;
    return tg__handle(tp, tp->nnodes++);
}

tg_tensor tg_param_grad_tensor(tg_tape *tp, tg_param *p)
{
    if (!tp || tp->status)
        return tg__error_handle(tp);
    if (!p || p->ctx != tp->ctx) {
        tg__fail(tp, TG_INVALID, "tg_param_grad_tensor: %s",
                 p ? "parameter of another context" : "parameter is NULL");
        return tg__error_handle(tp);
    }
    if (p->buffer) {
        tg__fail(tp, TG_INVALID, "tg_param_grad_tensor(%s): a buffer has no gradient", p->name);
        return tg__error_handle(tp);
    }
    return tg_tensor_from(tp, p->value.dtype, p->value.ndim, p->value.shape, p->grad);
}

const void *tg_param_data(const tg_param *p) { return p ? p->value.data : NULL; }
void *tg_param_grad(tg_param *p) { return p ? p->grad : NULL; }
void *tg_param_write(tg_param *p)
{
    if (!p)
        return NULL;
    p->version++;
    return p->value.data;
}
const char *tg_param_name(const tg_param *p) { return p ? p->name : ""; }
tg_ctx *tg_param_ctx(const tg_param *p) { return p ? p->ctx : NULL; }
tg_dtype tg_param_dtype(const tg_param *p) { return p ? p->value.dtype : (tg_dtype)0; }
int tg_param_ndim(const tg_param *p) { return p ? p->value.ndim : -1; }
const int64_t *tg_param_shape(const tg_param *p) { return p ? p->value.shape : NULL; }
int64_t tg_param_numel(const tg_param *p) { return p ? p->value.numel : -1; }
uint64_t tg_param_version(const tg_param *p) { return p ? p->version : 0; }

tg_status tg_param_set(tg_param *p, const void *data)
{
    if (!p)
        return TG_INVALID;
    if (!data)
        return tg__ctx_fail(p->ctx, TG_INVALID, "tg_param_set(%s): data is NULL", p->name);
    memmove(p->value.data, data, p->bytes);
    p->version++;
    return TG_OK;
}

tg_status tg_param_fill(tg_param *p, double value)
{
    if (!p)
        return TG_INVALID;
    if (p->value.dtype == TG_I64 && !tg__fits_i64(value))
        return tg__ctx_fail(p->ctx, TG_RANGE, "tg_param_fill(%s): %g is not representable as i64",
                            p->name, value);
    tg__fill_value(p->value.dtype, p->value.data, p->value.numel, value);
    p->version++;
    return TG_OK;
}

tg_status tg_param_uniform(tg_param *p, double low, double high, uint64_t seed)
{
    if (!p)
        return TG_INVALID;
    if (p->value.dtype == TG_I64)
        return tg__ctx_fail(p->ctx, TG_DTYPE,
                            "tg_param_uniform(%s): an i64 buffer takes no random values", p->name);
    if (!(low <= high) || !isfinite(high - low))
        return tg__ctx_fail(p->ctx, TG_RANGE, "tg_param_uniform(%s): need finite low <= high",
                            p->name);
    tg__fill_uniform(p->value.dtype, p->value.data, p->value.numel, low, high, seed);
    p->version++;
    return TG_OK;
}

tg_status tg_param_normal(tg_param *p, double mean, double std, uint64_t seed)
{
    if (!p)
        return TG_INVALID;
    if (p->value.dtype == TG_I64)
        return tg__ctx_fail(p->ctx, TG_DTYPE,
                            "tg_param_normal(%s): an i64 buffer takes no random values", p->name);
    if (!(std >= 0) || !isfinite(mean) || !isfinite(std))
        return tg__ctx_fail(p->ctx, TG_RANGE, "tg_param_normal(%s): need finite mean, std >= 0",
                            p->name);
    tg__fill_normal(p->value.dtype, p->value.data, p->value.numel, mean, std, seed);
    p->version++;
    return TG_OK;
}

tg_status tg_param_assign(tg_param *p, tg_tensor value)
{
    if (!p)
        return TG_INVALID;
    const tg_view *v = tg_ok(value) ? &tg__node_at(value.tape_, value.id_)->v : NULL;
    if (!v)
        return tg__ctx_fail(p->ctx, TG_STALE, "tg_param_assign(%s): invalid tensor handle",
                            p->name);
    if (v->dtype != p->value.dtype || !tg__same_shape(v, &p->value)) {
        char a[96], b[96];
        tg__format_view(a, sizeof a, v);
        tg__format_view(b, sizeof b, &p->value);
        return tg__ctx_fail(p->ctx, v->dtype != p->value.dtype ? TG_DTYPE : TG_SHAPE,
                            "tg_param_assign(%s): value %s does not match parameter %s", p->name, a,
                            b);
    }
    memmove(p->value.data, v->data, p->bytes);
    p->version++;
    return TG_OK;
}

/* The buffer's value becomes a copy of `value`, detached from its graph (no tape refers to a
 * buffer: reading one copies it). A larger value gets a new block before the old one is freed,
 * so a failure leaves the buffer as it was; the capacity grows by at least half each time, so a
 * state that grows a little every step (a KV cache) reallocates only now and then. */
tg_status tg_buffer_store(tg_param *buffer, tg_tensor value)
{
    static const char fn[] = "tg_buffer_store";
    tg_param *p = buffer;
    if (!p)
        return TG_INVALID;
    if (!p->buffer)
        return tg__ctx_fail(p->ctx, TG_INVALID,
                            "%s(%s): a parameter, not a buffer (tg_param_assign writes those)", fn,
                            p->name);
    tg_tape *tp = value.tape_;
    const char *why = "tensor is none";
    tg_status st = tp ? tg__handle_status(tp, value, &why) : TG_INVALID;
    if (tp && tp->ctx != p->ctx)
        return tg__ctx_fail(p->ctx, TG_INVALID, "%s(%s): the value is on a tape of another context",
                            fn, p->name);
    if (tp && tp->status)
        return tg__ctx_fail(p->ctx, tp->status,
                            "%s(%s): the value's tape holds an error (the buffer is unchanged): %s",
                            fn, p->name, tp->error);
    if (st != TG_OK)
        return tg__ctx_fail(p->ctx, st, "%s(%s): %s", fn, p->name, why);
    const tg_view *v = &tg__node_at(tp, value.id_)->v;
    if (v->dtype != p->value.dtype)
        return tg__ctx_fail(p->ctx, TG_DTYPE, "%s(%s): the value is %s, the buffer %s", fn, p->name,
                            tg_dtype_name(v->dtype), tg_dtype_name(p->value.dtype));
    size_t bytes = (size_t)v->numel * tg_dtype_size(v->dtype);
    if (bytes > p->capacity) {
        size_t grown = p->capacity + p->capacity / 2;
        size_t capacity = bytes > grown ? bytes : grown;
        void *data = tg__alloc(p->ctx, capacity);
        if (!data)
            return tg__ctx_fail(p->ctx, TG_NOMEM, "%s(%s): out of memory for %zu bytes", fn,
                                p->name, capacity);
        tg__free(p->ctx, p->value.data, p->capacity);
        p->value.data = data;
        p->capacity = capacity;
    }
    memcpy(p->value.data, v->data, bytes);
    p->bytes = bytes;
    p->value.numel = v->numel;
    p->value.ndim = v->ndim;
    for (int i = 0; i < v->ndim; i++)
        p->value.shape[i] = v->shape[i];
    p->version++;
    return TG_OK;
}

void tg_param_zero_grad(tg_param *p)
{
    if (p && p->grad)
        memset(p->grad, 0, p->bytes);
}

void tg_zero_grad(tg_ctx *ctx)
{
    for (size_t i = 0; ctx && i < ctx->nparams; i++)
        tg_param_zero_grad(ctx->params[i]);
}

size_t tg_param_count(const tg_ctx *ctx) { return ctx ? ctx->nparams : 0; }

tg_param *tg_param_at(const tg_ctx *ctx, size_t index)
{
    return ctx && index < ctx->nparams ? ctx->params[index] : NULL;
}

tg_param *tg_param_find(const tg_ctx *ctx, const char *name)
{
    for (size_t i = 0; ctx && name && i < ctx->nparams; i++)
        if (strcmp(ctx->params[i]->name, name) == 0)
            return ctx->params[i];
    return NULL;
}
