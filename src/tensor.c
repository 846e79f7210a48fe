/* tensor.c — leaf tensors: creation, metadata, reading values back. */
#include "internal.h"

#include <math.h>
#include <stdio.h>

static bool dtype_valid(tg_dtype dt) { return dt == TG_F32 || dt == TG_F64 || dt == TG_I64; }

static bool check_leaf_args(tg_tape *tp, const char *fn, tg_dtype dt, int ndim,
                            const int64_t *shape, int64_t *numel)
{
    if (!dtype_valid(dt)) {
        tg__fail(tp, TG_DTYPE, "%s: unknown dtype %d", fn, (int)dt);
        return false;
    }
    if (ndim < 0 || ndim > TG_MAX_DIMS) {
        tg__fail(tp, TG_SHAPE, "%s: ndim %d outside 0..%d", fn, ndim, TG_MAX_DIMS);
        return false;
    }
    if (ndim > 0 && !shape) {
        tg__fail(tp, TG_INVALID, "%s: shape is NULL", fn);
        return false;
    }
    if (!tg__shape_ok(ndim, shape, numel)) {
        tg__fail(tp, TG_SHAPE, "%s: invalid shape (negative or overflowing dims)", fn);
        return false;
    }
    return true;
}

tg_tensor tg__leaf(tg_tape *tp, const char *who, tg_dtype dt, int ndim, const int64_t *shape,
                   tg__node **out)
{
    int64_t numel = 1;
    tg__shape_ok(ndim, shape, &numel);
    tg__node *n = tg__node_reserve(tp);
    if (!n)
        return tg__error_handle(tp);
    void *data = tg__tape_buffer(tp, who, dt, numel);
    if (!data)
        return tg__error_handle(tp);
    n->kind = TG__LEAF;
    n->v.data = data;
    n->v.numel = numel;
    n->v.dtype = dt;
    n->v.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        n->v.shape[i] = shape[i];
    if (out)
        *out = n;
    return tg__handle(tp, tp->nnodes++);
}

static tg_tensor make(tg_tape *tp, const char *fn, tg_dtype dt, int ndim, const int64_t *shape,
                      tg__node **node)
{
    int64_t numel;
    if (!tp)
        return tg__error_handle(NULL);
    if (tp->status || !check_leaf_args(tp, fn, dt, ndim, shape, &numel))
        return tg__error_handle(tp);
    return tg__leaf(tp, fn, dt, ndim, shape, node);
}

tg_tensor tg_tensor_from(tg_tape *tp, tg_dtype dt, int ndim, const int64_t *shape, const void *data)
{
    if (tp && !tp->status && !data) {
        tg__fail(tp, TG_INVALID, "tg_tensor_from: data is NULL");
        return tg__error_handle(tp);
    }
    tg__node *n;
    tg_tensor t = make(tp, "tg_tensor_from", dt, ndim, shape, &n);
    if (t.id_)
        memcpy(n->v.data, data, (size_t)n->v.numel * tg_dtype_size(dt));
    return t;
}

/* tg_full and the functions spelled with it, each named in its own messages. */
static tg_tensor full(tg_tape *tp, const char *fn, tg_dtype dt, int ndim, const int64_t *shape,
                      double value)
{
    if (tp && !tp->status && dt == TG_I64 && !tg__fits_i64(value)) {
        tg__fail(tp, TG_RANGE, "%s: %g is not representable as i64", fn, value);
        return tg__error_handle(tp);
    }
    tg__node *n;
    tg_tensor t = make(tp, fn, dt, ndim, shape, &n);
    if (t.id_)
        tg__fill_value(dt, n->v.data, n->v.numel, value);
    return t;
}

tg_tensor tg_full(tg_tape *tp, tg_dtype dt, int ndim, const int64_t *shape, double value)
{
    return full(tp, "tg_full", dt, ndim, shape, value);
}

tg_tensor tg_zeros(tg_tape *tp, tg_dtype dt, int ndim, const int64_t *shape)
{
    return full(tp, "tg_zeros", dt, ndim, shape, 0.0);
}

tg_tensor tg_ones(tg_tape *tp, tg_dtype dt, int ndim, const int64_t *shape)
{
    return full(tp, "tg_ones", dt, ndim, shape, 1.0);
}

tg_tensor tg_constant(tg_tape *tp, tg_dtype dt, double value)
{
    return full(tp, "tg_constant", dt, 0, NULL, value);
}

tg_tensor tg_arange(tg_tape *tp, tg_dtype dt, int64_t count)
{
    tg__node *n;
    tg_tensor t = make(tp, "tg_arange", dt, 1, &count, &n);
    if (!t.id_)
        return t;
    for (int64_t i = 0; i < count; i++) {
        if (dt == TG_F32)
            ((float *)n->v.data)[i] = (float)i;
        else if (dt == TG_F64)
            ((double *)n->v.data)[i] = (double)i;
        else
            ((int64_t *)n->v.data)[i] = i;
    }
    return t;
}

tg_tensor tg_uniform(tg_tape *tp, tg_dtype dt, int ndim, const int64_t *shape, double low,
                     double high, uint64_t seed)
{
    if (tp && !tp->status && (dt == TG_I64 || !(low <= high) || !isfinite(high - low))) {
        tg__fail(tp, dt == TG_I64 ? TG_DTYPE : TG_RANGE,
                 "tg_uniform: needs a float dtype and finite low <= high (got %g, %g)", low, high);
        return tg__error_handle(tp);
    }
    tg__node *n;
    tg_tensor t = make(tp, "tg_uniform", dt, ndim, shape, &n);
    if (t.id_)
        tg__fill_uniform(dt, n->v.data, n->v.numel, low, high, seed);
    return t;
}

tg_tensor tg_normal(tg_tape *tp, tg_dtype dt, int ndim, const int64_t *shape, double mean,
                    double std, uint64_t seed)
{
    if (tp && !tp->status && (dt == TG_I64 || !(std >= 0) || !isfinite(mean) || !isfinite(std))) {
        tg__fail(tp, dt == TG_I64 ? TG_DTYPE : TG_RANGE,
                 "tg_normal: needs a float dtype, finite mean and std >= 0 (got %g, %g)", mean,
                 std);
        return tg__error_handle(tp);
    }
    tg__node *n;
    tg_tensor t = make(tp, "tg_normal", dt, ndim, shape, &n);
    if (t.id_)
        tg__fill_normal(dt, n->v.data, n->v.numel, mean, std, seed);
    return t;
}

/* A node with the same view (shared buffer) and no graph link. */
tg_tensor tg_detach(tg_tensor t)
{
    tg_tape *tp = t.tape_;
    if (!tp || tp->status)
        return tg__error_handle(tp);
    tg__node *src = tg__resolve(tp, t, "tg_detach");
    if (!src)
        return tg__error_handle(tp);
    tg_view v = src->v;
    tg__node *n = tg__node_reserve(tp);
    if (!n)
        return tg__error_handle(tp);
    n->kind = TG__LEAF;
    n->v = v;
    return tg__handle(tp, tp->nnodes++);
}

tg_tensor tg_requires_grad(tg_tensor t)
{
    tg_tape *tp = t.tape_;
    if (!tp || tp->status)
        return tg__error_handle(tp);
    tg__node *n = tg__resolve(tp, t, "tg_requires_grad");
    if (!n)
        return tg__error_handle(tp);
    if (n->kind != TG__LEAF) {
        tg__fail(tp, TG_INVALID, "tg_requires_grad: node %u is not a leaf tensor", t.id_);
        return tg__error_handle(tp);
    }
    if (n->v.dtype == TG_I64) {
        tg__fail(tp, TG_DTYPE, "tg_requires_grad: an i64 tensor cannot have a gradient");
        return tg__error_handle(tp);
    }
    n->requires_grad = 1;
    n->leaf_marked = 1;
    return t;
}

/* Read-only accessors: no error is recorded, an invalid handle just reads as invalid. */
static const tg__node *peek(tg_tensor t)
{
    return tg__live(t.tape_, t) ? tg__node_at(t.tape_, t.id_) : NULL;
}

bool tg_ok(tg_tensor t) { return peek(t) != NULL; }

tg_status tg_tensor_check(tg_tensor t, const char *who)
{
    tg_tape *tp = t.tape_;
    if (!tp)
        return TG_INVALID;
    if (!tp->status)
        tg__resolve(tp, t, who ? who : "tg_tensor_check");
    return tp->status;
}

tg_tape *tg_tensor_tape(tg_tensor t) { return t.tape_; }

tg_dtype tg_tensor_dtype(tg_tensor t)
{
    const tg__node *n = peek(t);
    return n ? n->v.dtype : (tg_dtype)0;
}

int tg_ndim(tg_tensor t)
{
    const tg__node *n = peek(t);
    return n ? n->v.ndim : -1;
}

int64_t tg_numel(tg_tensor t)
{
    const tg__node *n = peek(t);
    return n ? n->v.numel : -1;
}

int64_t tg_dim(tg_tensor t, int axis)
{
    const tg__node *n = peek(t);
    if (!n)
        return -1;
    if (axis < 0)
        axis += n->v.ndim;
    return axis >= 0 && axis < n->v.ndim ? n->v.shape[axis] : -1;
}

const int64_t *tg_shape(tg_tensor t)
{
    const tg__node *n = peek(t);
    return n ? n->v.shape : NULL;
}

const void *tg_data(tg_tensor t)
{
    const tg__node *n = peek(t);
    return n ? n->v.data : NULL;
}

static double load(const tg_view *v, int64_t i)
{
    switch (v->dtype) {
    case TG_F32:
        return ((const float *)v->data)[i];
    case TG_F64:
        return ((const double *)v->data)[i];
    case TG_I64:
        return (double)((const int64_t *)v->data)[i];
    }
    return NAN;
}

tg_status tg_read(tg_tensor t, tg_dtype dt, void *dst, int64_t count)
{
    const tg__node *n = peek(t);
    if (!n)
        return tg__handle_status(t.tape_, t, NULL);
    if (!dst || !dtype_valid(dt))
        return TG_INVALID;
    if (count < n->v.numel)
        return TG_RANGE;
    if (dt == n->v.dtype) {
        memcpy(dst, n->v.data, (size_t)n->v.numel * tg_dtype_size(dt));
        return TG_OK;
    }
    for (int64_t i = 0; dt == TG_I64 && i < n->v.numel; i++)
        if (!tg__fits_i64(load(&n->v, i)))
            return TG_RANGE; /* NaN, infinite or beyond i64: nothing written */
    for (int64_t i = 0; i < n->v.numel; i++) {
        if (n->v.dtype == TG_I64 && dt == TG_F32) {
            ((float *)dst)[i] = (float)((const int64_t *)n->v.data)[i];
            continue;
        }
        double x = load(&n->v, i);
        if (dt == TG_F32)
            ((float *)dst)[i] = (float)x;
        else if (dt == TG_F64)
            ((double *)dst)[i] = x;
        else
            ((int64_t *)dst)[i] = (int64_t)x;
    }
    return TG_OK;
}

double tg_item(tg_tensor t)
{
    const tg__node *n = peek(t);
    if (!n || n->v.numel != 1)
        return NAN;
    return load(&n->v, 0);
}

tg_tensor tg_tensor_grad(tg_tensor t)
{
    const tg__node *n = peek(t);
    if (!n || !n->leaf_grad)
        return tg__handle(NULL, 0);
    return tg__handle(t.tape_, n->leaf_grad);
}

const tg_op *tg_tensor_op(tg_tensor t)
{
    const tg__node *n = peek(t);
    return n && n->kind == TG__OPNODE ? n->op : NULL;
}

/* ---- introspection ------------------------------------------------------------------------ */

size_t tg_tensor_node(tg_tensor t) { return peek(t) ? t.id_ : 0; }

tg_tensor tg_tape_tensor(tg_tape *tp, size_t node)
{
    if (!tp || node == 0 || node >= tp->nnodes)
        return tg__handle(NULL, 0);
    return tg__handle(tp, (uint32_t)node);
}

const char *tg__node_kind_name(const tg__node *n)
{
    switch (n->kind) {
    case TG__OPNODE:
        return n->op->name;
    case TG__PARAM:
        return "parameter";
    case TG__FROM_SCALAR:
        return "scalar";
    case TG__BARRIER:
        return "kernel gradient";
    default:
        return "leaf";
    }
}

const char *tg_tensor_op_name(tg_tensor t)
{
    const tg__node *n = peek(t);
    return n ? tg__node_kind_name(n) : "";
}

const char *tg_tensor_scope(tg_tensor t)
{
    const tg__node *n = peek(t);
    return n && n->scope ? n->scope->name : "";
}

int tg_tensor_input_count(tg_tensor t)
{
    const tg__node *n = peek(t);
    return n && n->inputs ? (int)n->ninputs : 0;
}

tg_tensor tg_tensor_input(tg_tensor t, int i)
{
    const tg__node *n = peek(t);
    if (!n || !n->inputs || i < 0 || (uint32_t)i >= n->ninputs)
        return tg__handle(NULL, 0);
    return tg__handle(t.tape_, n->inputs[i]);
}

tg_param *tg_tensor_param(tg_tensor t)
{
    const tg__node *n = peek(t);
    return n && n->kind == TG__PARAM ? n->param : NULL;
}

/* Appends `text` to buf as far as it fits (NUL-terminated); `len` counts the whole text. */
static void append(char *buf, size_t size, size_t *len, const char *text)
{
    size_t n = strlen(text);
    if (*len + 1 < size) {
        size_t room = size - 1 - *len, k = n < room ? n : room;
        memcpy(buf + *len, text, k);
        buf[*len + k] = '\0';
    }
    *len += n;
}

int tg_format_shape(char *buf, size_t size, tg_dtype dtype, int ndim, const int64_t *shape)
{
    if (!buf)
        size = 0;
    if (size)
        buf[0] = '\0';
    size_t len = 0;
    append(buf, size, &len, dtype ? tg_dtype_name(dtype) : "");
    append(buf, size, &len, "[");
    for (int d = 0; shape && d < ndim && d < TG_MAX_DIMS; d++) {
        char dim[24];
        snprintf(dim, sizeof dim, d ? ",%lld" : "%lld", (long long)shape[d]);
        append(buf, size, &len, dim);
    }
    append(buf, size, &len, "]");
    return (int)len; /* at most 8 dims of 21 characters and a name */
}
