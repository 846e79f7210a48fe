/* higher.c — higher-order helpers on tensors: Hessian-vector and Jacobian-vector products, full
 * Jacobians and Hessians. Built on tg_grad with TG_CREATE_GRAPH and written against the public
 * API only, like a user's code could be. */
#include <stdio.h>
#include <string.h>

#include "tapegrad.h"

enum { SMALL = 8 };

/* Scratch for n tensors: on the stack when small, else through the context's allocator. */
typedef struct scratch {
    tg_tensor small[2 * SMALL];
    tg_tensor *p;
    size_t bytes;
    tg_ctx *ctx;
} scratch;

static tg_tensor *scratch_get(scratch *s, tg_tape *tp, size_t n, const char *fn)
{
    s->ctx = tg_tape_ctx(tp);
    s->bytes = 0;
    if (n <= 2 * SMALL)
        return s->p = s->small;
    if (n > SIZE_MAX / sizeof(tg_tensor)) {
        tg_tape_fail(tp, TG_INVALID, "%s: too many inputs", fn);
        return NULL;
    }
    s->bytes = n * sizeof(tg_tensor);
    if (!(s->p = tg_alloc(s->ctx, s->bytes)))
        tg_tape_fail(tp, TG_NOMEM, "%s: out of memory", fn);
    return s->p;
}

static void scratch_free(scratch *s)
{
    if (s->bytes)
        tg_free(s->ctx, s->p, s->bytes);
}

/* "f64[3,4]" into buf; "invalid" for a bad handle. */
static const char *describe(tg_tensor t, char *buf, size_t size)
{
    int nd = tg_ndim(t);
    if (nd < 0) {
        snprintf(buf, size, "invalid");
        return buf;
    }
    tg_format_shape(buf, size, tg_tensor_dtype(t), nd, tg_shape(t));
    return buf;
}

static bool same_shape(tg_tensor a, tg_tensor b)
{
    int nd = tg_ndim(a);
    if (nd != tg_ndim(b) || tg_tensor_dtype(a) != tg_tensor_dtype(b))
        return false;
    const int64_t *sa = tg_shape(a), *sb = tg_shape(b);
    for (int i = 0; i < nd; i++)
        if (sa[i] != sb[i])
            return false;
    return true;
}

/* A tensor argument must be live and on `tp`: a clear error otherwise (none, stale, foreign). */
static bool check_live(tg_tape *tp, const char *fn, const char *what, int index, tg_tensor t)
{
    if (tg_ok(t) && tg_tensor_tape(t) == tp)
        return true;
    char name[48];
    if (index >= 0)
        snprintf(name, sizeof name, "%s %d", what, index);
    else
        snprintf(name, sizeof name, "%s", what);
    tg_tape *other = tg_tensor_tape(t);
    if (!other)
        tg_tape_fail(tp, TG_INVALID, "%s: %s is none", fn, name);
    else if (other != tp)
        tg_tape_fail(tp, TG_STALE, "%s: %s belongs to another tape", fn, name);
    else
        tg_tape_fail(tp, TG_STALE, "%s: %s is stale (from before a tape reset) or an error handle",
                     fn, name);
    return false;
}

/* The checks every helper shares: a fine tape, flags, and a live output. */
static tg_status check_common(tg_tape *tp, const char *fn, tg_tensor out, unsigned flags)
{
    if (tg_tape_status(tp))
        return tg_tape_status(tp);
    if (flags & ~(TG_RETAIN_GRAPH | TG_CREATE_GRAPH))
        return tg_tape_fail(tp, TG_INVALID, "%s: unknown flags 0x%x", fn, flags);
    if (!check_live(tp, fn, "the output", -1, out))
        return tg_tape_status(tp);
    return TG_OK;
}

static tg_status check_one_element(tg_tape *tp, const char *fn, tg_tensor f)
{
    if (tg_numel(f) == 1)
        return TG_OK;
    char b[96];
    return tg_tape_fail(tp, TG_NOT_SCALAR, "%s: f must have one element, got %s", fn,
                        describe(f, b, sizeof b));
}

/* inputs[i] and v[i], n of each: live, on tp, same dtype and shape pairwise. */
static tg_status check_pairs(tg_tape *tp, const char *fn, int n, const tg_tensor *inputs,
                             const tg_tensor *v, const tg_tensor *results)
{
    if (n < 1 || !inputs || !v || !results)
        return tg_tape_fail(tp, TG_INVALID,
                            "%s: needs n >= 1 and the inputs, v and result arrays (n = %d)", fn, n);
    for (int i = 0; i < n; i++) {
        if (!check_live(tp, fn, "input", i, inputs[i]) || !check_live(tp, fn, "v", i, v[i]))
            return tg_tape_status(tp);
        if (!same_shape(inputs[i], v[i])) {
            char a[96], b[96];
            return tg_tape_fail(
                tp, tg_tensor_dtype(inputs[i]) != tg_tensor_dtype(v[i]) ? TG_DTYPE : TG_SHAPE,
                "%s: v[%d] is %s but input %d is %s", fn, i, describe(v[i], a, sizeof a), i,
                describe(inputs[i], b, sizeof b));
        }
    }
    return TG_OK;
}

/* sum_i <a[i], b[i]> as a one-element tensor. */
static tg_tensor inner(int n, const tg_tensor *a, const tg_tensor *b)
{
    tg_tensor acc = tg_sum_all(tg_mul(a[0], b[0]));
    for (int i = 1; i < n; i++)
        acc = tg_add(acc, tg_sum_all(tg_mul(a[i], b[i])));
    return acc;
}

/* Without TG_CREATE_GRAPH the results are plain values: cut them from the graph. */
static void finish(tg_tape *tp, int n, tg_tensor *out, unsigned flags, tg_status st)
{
    for (int i = 0; i < n; i++)
        out[i] = st ? tg_error(tp) : (flags & TG_CREATE_GRAPH) ? out[i] : tg_detach(out[i]);
}

tg_status tg_hvp(tg_tensor f, int n, const tg_tensor *inputs, const tg_tensor *v, tg_tensor *hv,
                 unsigned flags)
{
    static const char fn[] = "tg_hvp";
    tg_tape *tp = tg_tensor_tape(f);
    if (!tp)
        return TG_INVALID;
    for (int i = 0; hv && i < n; i++)
        hv[i] = tg_error(tp);
    tg_status st = check_common(tp, fn, f, flags);
    if (!st)
        st = check_pairs(tp, fn, n, inputs, v, hv);
    if (!st)
        st = check_one_element(tp, fn, f);
    if (st)
        return st;
    scratch s;
    tg_tensor *g = scratch_get(&s, tp, (size_t)n, fn);
    if (!g)
        return tg_tape_status(tp);
    /* g = grad f, recorded; then hv = grad <g, v>. */
    st = tg_grad(1, &f, NULL, n, inputs, g, TG_CREATE_GRAPH);
    if (!st) {
        tg_tensor gv = inner(n, g, v);
        st = tg_tape_status(tp);
        if (!st)
            st = tg_grad(1, &gv, NULL, n, inputs, hv, flags);
    }
    scratch_free(&s);
    finish(tp, n, hv, flags, st);
    return st ? st : tg_tape_status(tp);
}

tg_status tg_jvp(tg_tensor out, int n, const tg_tensor *inputs, const tg_tensor *v, tg_tensor *jv,
                 unsigned flags)
{
    static const char fn[] = "tg_jvp";
    tg_tape *tp = tg_tensor_tape(out);
    if (!tp)
        return TG_INVALID;
    if (jv)
        *jv = tg_error(tp);
    tg_status st = check_common(tp, fn, out, flags);
    if (!st)
        st = check_pairs(tp, fn, n, inputs, v, jv);
    if (st)
        return st;
    if (tg_tensor_dtype(out) == TG_I64)
        return tg_tape_fail(tp, TG_DTYPE, "%s: cannot differentiate an i64 output", fn);
    scratch s;
    tg_tensor *w = scratch_get(&s, tp, (size_t)n, fn);
    if (!w)
        return tg_tape_status(tp);
    /* The double-reverse trick: w(u) = J^T u is linear in u, so d<w(u), v>/du = J v. The seed u
     * is a zero tensor shaped like out; its value does not matter, only the recorded graph. */
    tg_tensor u = tg_zeros(tp, tg_tensor_dtype(out), tg_ndim(out), tg_shape(out));
    st = tg_tape_status(tp);
    if (!st)
        st = tg_grad(1, &out, &u, n, inputs, w, TG_CREATE_GRAPH);
    if (!st) {
        tg_tensor wv = inner(n, w, v);
        st = tg_tape_status(tp);
        if (!st)
            st = tg_grad(1, &wv, NULL, 1, &u, jv, flags);
    }
    scratch_free(&s);
    finish(tp, 1, jv, flags, st);
    return st ? st : tg_tape_status(tp);
}

/* Rows d out[r] / d input for r < m, stacked into [m, k]. Every pass but the last keeps the
 * graph; the last one follows `flags`. */
static tg_status jacobian(const char *fn, tg_tensor out, tg_tensor input, tg_tensor *result,
                          unsigned flags)
{
    tg_tape *tp = tg_tensor_tape(out);
    int64_t m = tg_numel(out), k = tg_numel(input);
    tg_dtype dt = tg_tensor_dtype(out);
    if (dt == TG_I64 || tg_tensor_dtype(input) == TG_I64)
        return tg_tape_fail(tp, TG_DTYPE, "%s: cannot differentiate i64 tensors", fn);
    if (m < 1 || k < 1) {
        char a[96], b[96];
        return tg_tape_fail(tp, TG_SHAPE, "%s: output %s and input %s must not be empty", fn,
                            describe(out, a, sizeof a), describe(input, b, sizeof b));
    }
    if ((uint64_t)m > (uint64_t)INT32_MAX)
        return tg_tape_fail(tp, TG_RANGE, "%s: %lld rows is too many", fn, (long long)m);
    scratch s;
    tg_tensor *rows = scratch_get(&s, tp, (size_t)m, fn);
    if (!rows)
        return tg_tape_status(tp);
    /* One-hot seeds from a host buffer of the output's dtype. */
    size_t esize = tg_dtype_size(dt), bytes = (size_t)m * esize;
    tg_ctx *ctx = tg_tape_ctx(tp);
    unsigned char *onehot = tg_alloc(ctx, bytes);
    tg_status st = TG_OK;
    if (!onehot)
        st = tg_tape_fail(tp, TG_NOMEM, "%s: out of memory", fn);
    else
        memset(onehot, 0, bytes);
    unsigned keep = TG_RETAIN_GRAPH | (flags & TG_CREATE_GRAPH);
    int64_t flat[1] = {k};
    for (int64_t r = 0; !st && r < m; r++) {
        if (dt == TG_F32)
            ((float *)onehot)[r] = 1.0f;
        else
            ((double *)onehot)[r] = 1.0;
        tg_tensor seed = tg_tensor_from(tp, dt, tg_ndim(out), tg_shape(out), onehot);
        memset(onehot + (size_t)r * esize, 0, esize);
        tg_tensor row = {0};
        st = tg_tape_status(tp);
        if (!st)
            st = tg_grad(1, &out, &seed, 1, &input, &row, r + 1 < m ? keep : flags);
        rows[r] = row;
    }
    if (onehot)
        tg_free(ctx, onehot, bytes);
    if (!st) {
        /* Differentiable rows are stacked in the graph; plain ones outside it. */
        bool was = tg_tape_set_grad(tp, (flags & TG_CREATE_GRAPH) != 0);
        for (int64_t r = 0; r < m; r++)
            rows[r] = tg_reshape(rows[r], 1, flat);
        *result = tg_stack((int)m, rows, 0);
        tg_tape_set_grad(tp, was);
        st = tg_tape_status(tp);
    }
    scratch_free(&s);
    if (st)
        *result = tg_error(tp);
    return st;
}

tg_status tg_jacobian(tg_tensor out, tg_tensor input, tg_tensor *result, unsigned flags)
{
    static const char fn[] = "tg_jacobian";
    tg_tape *tp = tg_tensor_tape(out);
    if (!tp)
        return TG_INVALID;
    if (result)
        *result = tg_error(tp);
    tg_status st = check_common(tp, fn, out, flags);
    if (st)
        return st;
    if (!result)
        return tg_tape_fail(tp, TG_INVALID, "%s: the result pointer is NULL", fn);
    if (!check_live(tp, fn, "the input", -1, input))
        return tg_tape_status(tp);
    return jacobian(fn, out, input, result, flags);
}

tg_status tg_hessian(tg_tensor f, tg_tensor input, tg_tensor *hessian, unsigned flags)
{
    static const char fn[] = "tg_hessian";
    tg_tape *tp = tg_tensor_tape(f);
    if (!tp)
        return TG_INVALID;
    if (hessian)
        *hessian = tg_error(tp);
    tg_status st = check_common(tp, fn, f, flags);
    if (st)
        return st;
    if (!hessian)
        return tg_tape_fail(tp, TG_INVALID, "%s: the result pointer is NULL", fn);
    if (!check_live(tp, fn, "the input", -1, input))
        return tg_tape_status(tp);
    if ((st = check_one_element(tp, fn, f)))
        return st;
    /* The gradient, recorded; then its Jacobian: row r is d(grad_r f)/d input. */
    tg_tensor g;
    if ((st = tg_grad(1, &f, NULL, 1, &input, &g, TG_CREATE_GRAPH)))
        return st;
    return jacobian(fn, g, input, hessian, flags);
}
