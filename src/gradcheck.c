/* gradcheck.c — analytic gradients against central finite differences, in f64. */
#include "internal.h"

#include <math.h>

typedef struct check {
    tg_ctx *ctx;
    tg_tape *tp;
    tg_graph_fn fn;
    void *user;
    int n;
    tg_view *views; /* the point: views[i].data owned here */
    tg_tensor *leaves;
    uint64_t seed;
    int order;
    tg_tensor *grads; /* scratch for the first-order gradients (order 2) */
} check;

static tg_status fail_from_tape(check *c, const char *what)
{
    tg_status st = tg_tape_status(c->tp);
    if (st == TG_OK)
        st = TG_INVALID;
    return tg__ctx_fail(c->ctx, st, "tg_gradcheck: %s: %s", what, tg_tape_error(c->tp));
}

/* Evaluates <r, f(point)> on a fresh scratch tape; leaves stay valid until the next call. */
static tg_status eval(check *c, double *value, tg_tensor *loss)
{
    tg_tape_reset(c->tp);
    for (int i = 0; i < c->n; i++)
        c->leaves[i] = tg_tensor_from(c->tp, c->views[i].dtype, c->views[i].ndim, c->views[i].shape,
                                      c->views[i].data);
    tg_tensor out =
        tg_ok(c->leaves[c->n - 1]) ? c->fn(c->user, c->n, c->leaves) : tg__error_handle(c->tp);
    if (!tg_ok(out))
        return fail_from_tape(c, "the graph function failed");
    if (tg_tensor_dtype(out) != TG_F64)
        return tg__ctx_fail(c->ctx, TG_DTYPE, "tg_gradcheck: the graph's output is %s, not f64",
                            tg_dtype_name(tg_tensor_dtype(out)));
    tg_tensor r = tg_normal(c->tp, TG_F64, tg_ndim(out), tg_shape(out), 0.0, 1.0, c->seed);
    tg_tensor l = tg_sum_all(tg_mul(out, r));
    if (!tg_ok(l))
        return fail_from_tape(c, "projecting the output");
    if (c->order == 2) {
        /* l2 = sum_i <s_i, dl/dx_i>: its gradient is the Hessian of l times s. */
        if (tg_grad(1, &l, NULL, c->n, c->leaves, c->grads, TG_CREATE_GRAPH) != TG_OK)
            return fail_from_tape(c, "the recorded first-order backward failed");
        tg_tensor l2 = tg_zeros(c->tp, TG_F64, 0, NULL);
        for (int i = 0; i < c->n; i++)
            if (c->views[i].dtype == TG_F64)
                l2 = tg_add(
                    l2, tg_sum_all(tg_mul(c->grads[i], tg_normal(c->tp, TG_F64, c->views[i].ndim,
                                                                 c->views[i].shape, 0.0, 1.0,
                                                                 c->seed + 1 + (uint64_t)i))));
        if (!tg_ok(l2))
            return fail_from_tape(c, "projecting the first-order gradients");
        l = l2;
    }
    *value = tg_item(l);
    if (loss)
        *loss = l;
    return TG_OK;
}

tg_status tg_gradcheck(tg_ctx *ctx, tg_graph_fn fn, void *user, int n, const tg_tensor *inputs,
                       const tg_gradcheck_options *opts, tg_gradcheck_result *result)
{
    if (!ctx)
        return TG_INVALID;
    if (!fn || n < 1 || n > 64 || !inputs || !result)
        return tg__ctx_fail(ctx, TG_INVALID, "tg_gradcheck: needs fn, 1..64 inputs and result");
    tg_gradcheck_options o = {0};
    if (opts)
        o = *opts;
    double eps = o.eps > 0 ? o.eps : 1e-6, atol = o.atol > 0 ? o.atol : 1e-5,
           rtol = o.rtol > 0 ? o.rtol : 1e-4;
    memset(result, 0, sizeof *result);
    result->input = -1;

    check c = {ctx, NULL, fn, user, n, NULL, NULL, o.seed ? o.seed : 0x5eed, 1, NULL};
    if (o.order < 0 || o.order > 2)
        return tg__ctx_fail(ctx, TG_INVALID, "tg_gradcheck: order %d (1 or 2)", o.order);
    c.order = o.order == 2 ? 2 : 1;
    size_t vbytes = (size_t)n * (sizeof(tg_view) + 3 * sizeof(tg_tensor));
    c.views = tg__alloc(ctx, vbytes);
    if (!c.views)
        return tg__ctx_fail(ctx, TG_NOMEM, "tg_gradcheck: out of memory");
    memset(c.views, 0, vbytes);
    c.leaves = (tg_tensor *)(c.views + n);
    tg_tensor *grads = c.leaves + n;
    c.grads = grads + n;
    tg_status st = TG_OK;
    for (int i = 0; i < n && !st; i++) {
        if (!tg_ok(inputs[i])) {
            st = tg__ctx_fail(ctx, TG_INVALID, "tg_gradcheck: input %d is not a live tensor", i);
            break;
        }
        tg_view *v = &c.views[i];
        v->dtype = tg_tensor_dtype(inputs[i]) == TG_I64 ? TG_I64 : TG_F64;
        v->ndim = tg_ndim(inputs[i]);
        v->numel = tg_numel(inputs[i]);
        memcpy(v->shape, tg_shape(inputs[i]), (size_t)v->ndim * sizeof(int64_t));
        v->data = tg__alloc(ctx, (size_t)(v->numel ? v->numel : 1) * 8);
        if (!v->data)
            st = tg__ctx_fail(ctx, TG_NOMEM, "tg_gradcheck: out of memory");
        else
            tg_read(inputs[i], v->dtype, v->data, v->numel);
    }
    if (!st)
        st = tg_tape_new(ctx, &c.tp);

    /* Analytic gradients of <r, f> at the point. */
    double f0;
    tg_tensor loss;
    if (!st)
        st = eval(&c, &f0, &loss);
    if (!st) {
        st = tg_grad(1, &loss, NULL, n, c.leaves, grads, 0);
        if (st)
            st = fail_from_tape(&c, "backward failed");
    }
    double **analytic = NULL;
    if (!st) {
        analytic = tg__alloc(ctx, (size_t)n * sizeof *analytic);
        if (!analytic)
            st = tg__ctx_fail(ctx, TG_NOMEM, "tg_gradcheck: out of memory");
        else
            memset(analytic, 0, (size_t)n * sizeof *analytic);
    }
    for (int i = 0; i < n && !st; i++) {
        if (c.views[i].dtype != TG_F64)
            continue;
        analytic[i] = tg__alloc(ctx, (size_t)(c.views[i].numel ? c.views[i].numel : 1) * 8);
        if (!analytic[i])
            st = tg__ctx_fail(ctx, TG_NOMEM, "tg_gradcheck: out of memory");
        else
            tg_read(grads[i], TG_F64, analytic[i], c.views[i].numel);
    }

    /* Central differences, element by element. */
    double worst = -1;
    for (int i = 0; i < n && !st; i++) {
        if (c.views[i].dtype != TG_F64)
            continue;
        double *x = c.views[i].data;
        for (int64_t e = 0; e < c.views[i].numel && !st; e++) {
            double keep = x[e], fp, fm;
            x[e] = keep + eps;
            st = eval(&c, &fp, NULL);
            x[e] = keep - eps;
            if (!st)
                st = eval(&c, &fm, NULL);
            x[e] = keep;
            if (st)
                break;
            double num = (fp - fm) / (2 * eps), ana = analytic[i][e];
            double err = fabs(ana - num) / (atol + rtol * fabs(num));
            if (isnan(err))
                err = INFINITY;
            result->checked++;
            if (err > worst) {
                worst = err;
                result->input = i;
                result->index = e;
                result->analytic = ana;
                result->numeric = num;
                result->error = err;
            }
        }
    }
    result->passed = !st && worst <= 1.0;

    for (int i = 0; analytic && i < n; i++)
        if (analytic[i])
            tg__free(ctx, analytic[i], (size_t)(c.views[i].numel ? c.views[i].numel : 1) * 8);
    if (analytic)
        tg__free(ctx, analytic, (size_t)n * sizeof *analytic);
    for (int i = 0; i < n; i++)
        if (c.views[i].data)
            tg__free(ctx, c.views[i].data, (size_t)(c.views[i].numel ? c.views[i].numel : 1) * 8);
    tg__free(ctx, c.views, vbytes);
    tg_tape_free(c.tp);
    return st;
}
