/* backward.c — the reverse sweep: one loop over the tape in reverse creation order (the tape is
 * already topologically sorted), no recursion, no op-specific code. Broadcast reduction and
 * fan-in accumulation happen here, once, for every op. */
#include "internal.h"

#include "vmath.h"

#define OWNED 0x80000000u /* slot tag: the gradient buffer is private to this slot */

struct tg__bw {
    tg_tape *tp;
    uint32_t lo, hi; /* node range swept */
    uint32_t *slot;  /* gradient node of each node in [lo, hi] (| OWNED), 0 = none */
    uint8_t *need;   /* tg_grad: nodes on a path to a requested input; NULL for tg_backward */
    bool create, retain, accumulate;
};

static inline uint32_t *slot(struct tg__bw *bw, uint32_t id) { return &bw->slot[id - bw->lo]; }

static inline bool needs(const struct tg__bw *bw, uint32_t id)
{
    if (id < bw->lo || id > bw->hi)
        return false;
    if (bw->need)
        return bw->need[id - bw->lo];
    return tg__node_at(bw->tp, id)->requires_grad;
}

static const char *op_name(const tg__node *n) { return n->op ? n->op->name : "?"; }

/* Adds contribution `c` into node id's gradient, summing broadcast dims back first. `fresh`
 * says c's buffer is new and unshared, so later contributions may be added into it in place. */
static tg_status accumulate(struct tg__bw *bw, uint32_t id, tg_tensor c, bool fresh,
                            const tg__node *producer)
{
    tg_tape *tp = bw->tp;
    tg__node *dst = tg__node_at(tp, id);
    tg__node *cn;
    if (TG__LIKELY(c.tape_ == tp && c.gen_ == tp->gen && c.id_ != 0 && c.id_ < tp->nnodes))
        cn = tg__node_at(tp, c.id_);
    else if (!(cn = tg__resolve(tp, c, "backward")))
        return tp->status;
    if (cn->v.dtype != dst->v.dtype)
        return tg__fail(tp, TG_DTYPE,
                        "%s: backward produced a %s gradient for a %s input "
                        "(node %u)",
                        producer ? op_name(producer) : "backward", tg_dtype_name(cn->v.dtype),
                        tg_dtype_name(dst->v.dtype), id);
    if (!tg__same_shape(&cn->v, &dst->v)) {
        c = tg_sum_to(c, dst->v.ndim, dst->v.shape);
        if (!c.id_)
            return tp->status;
        cn = tg__node_at(tp, c.id_);
        fresh = !bw->create;
    }
    uint32_t *s = slot(bw, id);
    if (!*s) {
        *s = c.id_ | (fresh && !bw->create ? OWNED : 0);
        return TG_OK;
    }
    uint32_t cur = *s & ~OWNED;
    if (!bw->create && (*s & OWNED)) {
        tg__node *acc = tg__node_at(tp, cur);
        tg__vm_add_into(acc->v.dtype, acc->v.numel, cn->v.data, acc->v.data);
        return TG_OK;
    }
    tg_tensor sum = tg_add(tg__handle(tp, cur), c);
    if (!sum.id_)
        return tp->status;
    *s = sum.id_ | (bw->create ? 0 : OWNED);
    return TG_OK;
}

tg_status tg__bw_deposit(struct tg__bw *bw, uint32_t id, double value)
{
    tg_tape *tp = bw->tp;
    if (!needs(bw, id))
        return TG_OK;
    if (bw->create)
        return tg__fail(tp, TG_FIRST_ORDER,
                        "TG_CREATE_GRAPH through scalar entries is not "
                        "supported (tensor node %u feeds a scalar)",
                        id);
    tg__node *n = tg__node_at(tp, id);
    tg_tensor c = tg_full(tp, n->v.dtype, n->v.ndim, n->v.shape, value);
    if (!c.id_)
        return tp->status;
    return accumulate(bw, id, c, true, NULL);
}

enum { SMALL = 8 };

static tg_status composite(struct tg__bw *bw, uint32_t id, tg__node *n, uint32_t g,
                           const bool *need_in)
{
    tg_tape *tp = bw->tp;
    uint32_t k = n->ninputs;
    tg_tensor ins_small[SMALL], grads_small[SMALL];
    tg_tensor *ins = ins_small, *grads = grads_small;
    if (k > SMALL) {
        ins = tg__arena_alloc(tp->ctx, &tp->arena, 2 * k * sizeof *ins);
        if (!ins)
            return tg__fail(tp, TG_NOMEM, "%s: backward: out of memory", op_name(n));
        grads = ins + k;
    }
    for (uint32_t j = 0; j < k; j++) {
        ins[j] = tg__handle(tp, n->inputs[j]);
        grads[j] = tg__handle(NULL, 0);
    }
    tg_backward_io io = {(int)k,  ins,  tg__handle(tp, id), tg__handle(tp, g), n->attr, n->saved,
                         need_in, grads};
    n->op->def.backward(&io);
    if (tp->status)
        return tp->status;
    for (uint32_t j = 0; j < k; j++) {
        if (!need_in[j] || !grads[j].tape_)
            continue;
        tg_status st = accumulate(bw, n->inputs[j], grads[j], false, n);
        if (st)
            return st;
    }
    return TG_OK;
}

static tg_status kernel(struct tg__bw *bw, tg__node *n, uint32_t g, const bool *need_in)
{
    tg_tape *tp = bw->tp;
    uint32_t k = n->ninputs;
    const tg_view *views_small[SMALL];
    tg_view *gviews_small[SMALL];
    uint32_t bufs_small[SMALL];
    const tg_view **views = views_small;
    tg_view **gviews = gviews_small;
    uint32_t *bufs = bufs_small;
    if (k > SMALL) {
        void *p = tg__arena_alloc(tp->ctx, &tp->arena, k * (2 * sizeof(void *) + 4));
        if (!p)
            return tg__fail(tp, TG_NOMEM, "%s: backward: out of memory", op_name(n));
        views = p;
        gviews = (tg_view **)(views + k);
        bufs = (uint32_t *)(gviews + k);
    }
    bool any_rg = tg__node_at(tp, g)->requires_grad;
    for (uint32_t j = 0; j < k; j++) {
        tg__node *in = tg__node_at(tp, n->inputs[j]);
        views[j] = &in->v;
        any_rg |= in->requires_grad;
    }
    for (uint32_t j = 0; j < k; j++) {
        gviews[j] = NULL;
        bufs[j] = 0;
        if (!need_in[j])
            continue;
        tg__node *in = tg__node_at(tp, n->inputs[j]);
        bool bcast = (n->op->def.flags & TG_OP_BROADCAST) && !tg__same_shape(&in->v, &n->v);
        uint32_t s = *slot(bw, n->inputs[j]);
        if (!bw->create && !bcast && (s & OWNED)) {
            gviews[j] = &tg__node_at(tp, s & ~OWNED)->v; /* add straight into the owned slot */
            continue;
        }
        const tg_view *shape = bcast ? &n->v : &in->v;
        tg__node *buf;
        tg_tensor t = tg__leaf(tp, in->v.dtype, shape->ndim, shape->shape, &buf);
        if (!t.id_)
            return tp->status;
        memset(buf->v.data, 0, (size_t)buf->v.numel * tg_dtype_size(buf->v.dtype));
        if (bw->create) {
            /* Differentiating this gradient again must fail loudly, not give zero. */
            uint32_t *ids = tg__arena_alloc(tp->ctx, &tp->arena, (k + 1) * sizeof *ids);
            if (!ids)
                return tg__fail(tp, TG_NOMEM, "%s: backward: out of memory", op_name(n));
            memcpy(ids, n->inputs, k * sizeof *ids);
            ids[k] = g;
            buf->kind = TG__BARRIER;
            buf->op = n->op;
            buf->inputs = ids;
            buf->ninputs = k + 1;
            buf->requires_grad = any_rg;
        }
        gviews[j] = &buf->v;
        bufs[j] = t.id_;
    }
    tg_kernel kn = {(int)k, views, &n->v, n->attr, n->saved, tp->ctx->threads};
    n->op->def.backward_kernel(&kn, &tg__node_at(tp, g)->v, gviews);
    for (uint32_t j = 0; j < k; j++) {
        if (!bufs[j])
            continue;
        tg_status st = accumulate(bw, n->inputs[j], tg__handle(tp, bufs[j]), true, n);
        if (st)
            return st;
    }
    return TG_OK;
}

static tg_status process(struct tg__bw *bw, uint32_t id)
{
    tg_tape *tp = bw->tp;
    tg__node *n = tg__node_at(tp, id);
    uint32_t g = *slot(bw, id) & ~OWNED;
    switch (n->kind) {
    case TG__LEAF:
        return TG_OK;
    case TG__PARAM:
        if (n->param->version != n->param_version)
            return tg__fail(tp, TG_MODIFIED,
                            "parameter '%s' was modified after it was used on "
                            "the tape (node %u); recompute the forward pass",
                            n->param->name ? n->param->name : "", id);
        return TG_OK;
    case TG__FROM_SCALAR:
        if (bw->create)
            return tg__fail(tp, TG_FIRST_ORDER,
                            "TG_CREATE_GRAPH through scalar entries is not "
                            "supported (node %u comes from a scalar)",
                            id);
        tp->sadj[n->scalar_src] += tg_item(tg__handle(tp, g));
        return TG_OK;
    case TG__BARRIER:
        return tg__fail(tp, TG_FIRST_ORDER,
                        "%s: its backward is a first-order kernel; its "
                        "gradient cannot be differentiated again (node %u)",
                        op_name(n), id);
    }
    if (!n->inputs)
        return TG_OK; /* recorded without grad: a leaf as far as backward goes */
    if (n->released)
        return tg__fail(tp, TG_RELEASED,
                        "%s: backward through a graph already released by an "
                        "earlier backward (node %u); pass TG_RETAIN_GRAPH to the first",
                        op_name(n), id);
    bool small[SMALL], *need_in = small;
    if (n->ninputs > SMALL) {
        need_in = tg__arena_alloc(tp->ctx, &tp->arena, n->ninputs);
        if (!need_in)
            return tg__fail(tp, TG_NOMEM, "%s: backward: out of memory", op_name(n));
    }
    bool any = false;
    for (uint32_t j = 0; j < n->ninputs; j++) {
        need_in[j] = needs(bw, n->inputs[j]);
        any |= need_in[j];
    }
    if (!any)
        return TG_OK;
    const tg_op_def *d = &n->op->def;
    tg_status st;
    if (d->backward)
        st = composite(bw, id, n, g, need_in);
    else if (d->backward_kernel)
        st = kernel(bw, n, g, need_in);
    else
        st = tg__fail(tp, TG_NO_BACKWARD,
                      "%s: op has no backward rule, so no gradient can flow "
                      "through it (node %u)",
                      op_name(n), id);
    if (st == TG_OK && !bw->retain)
        n->released = 1;
    return st;
}

/* Last tensor node created before scalar entry `s` (node scalar marks never decrease). */
static uint32_t last_node_before(const tg_tape *tp, uint32_t s)
{
    uint32_t lo = 1, hi = tp->nnodes; /* answer in [0, nnodes) */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (tg__node_at(tp, mid)->scalar_mark <= s)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo - 1;
}

static tg_status seed_output(struct tg__bw *bw, tg_tensor out, const tg_tensor *seed,
                             const char *fn)
{
    tg_tape *tp = bw->tp;
    tg__node *o = tg__resolve(tp, out, fn);
    if (!o)
        return tp->status;
    char buf[96];
    tg__format_view(buf, sizeof buf, &o->v);
    if (o->v.dtype == TG_I64)
        return tg__fail(tp, TG_DTYPE, "%s: cannot differentiate an i64 output %s (node %u)", fn,
                        buf, out.id_);
    tg_tensor s;
    if (seed && seed->tape_) {
        tg__node *sn = tg__resolve(tp, *seed, fn);
        if (!sn)
            return tp->status;
        if (sn->v.dtype != o->v.dtype || !tg__same_shape(&sn->v, &o->v)) {
            char sb[96];
            tg__format_view(sb, sizeof sb, &sn->v);
            return tg__fail(tp, TG_SHAPE, "%s: seed %s does not match output %s (node %u)", fn, sb,
                            buf, out.id_);
        }
        s = *seed;
    } else {
        if (o->v.numel != 1)
            return tg__fail(tp, TG_NOT_SCALAR,
                            "%s: output %s (node %u) is not a scalar; pass a "
                            "seed of its shape",
                            fn, buf, out.id_);
        s = tg_ones(tp, o->v.dtype, o->v.ndim, o->v.shape);
        if (!s.id_)
            return tp->status;
    }
    return accumulate(bw, out.id_, s, false, NULL);
}

/* Adds the finished gradients of requires_grad leaves and parameters (tg_backward only). Leaves
 * first: they can fail; parameters last, with plain arithmetic that cannot. */
static tg_status finish_accumulate(struct tg__bw *bw)
{
    tg_tape *tp = bw->tp;
    for (uint32_t i = bw->lo; i <= bw->hi; i++) {
        uint32_t g = *slot(bw, i) & ~OWNED;
        tg__node *n = tg__node_at(tp, i);
        if (!g || n->kind != TG__LEAF || !n->leaf_marked)
            continue;
        if (!n->leaf_grad) {
            n->leaf_grad = g;
            continue;
        }
        tg_tensor sum = tg_add(tg__handle(tp, n->leaf_grad), tg__handle(tp, g));
        if (!sum.id_)
            return tp->status;
        n->leaf_grad = sum.id_;
    }
    for (uint32_t i = bw->lo; i <= bw->hi; i++) {
        uint32_t g = *slot(bw, i) & ~OWNED;
        tg__node *n = tg__node_at(tp, i);
        if (!g || n->kind != TG__PARAM)
            continue;
        const tg__node *gn = tg__node_at(tp, g);
        tg__vm_add_into(gn->v.dtype, gn->v.numel, gn->v.data, n->param->grad);
    }
    return TG_OK;
}

static tg_status run(tg_tape *tp, const char *fn, int nout, const tg_tensor *outs,
                     const tg_tensor *seeds, uint32_t scalar_out, int nin, const tg_tensor *ins,
                     tg_tensor *grads, unsigned flags, bool accumulate_mode)
{
    if (tp->status)
        return tp->status;
    if (tp->in_backward)
        return tg__fail(tp, TG_INVALID, "%s: called from inside a backward rule", fn);
    if (flags & ~(TG_RETAIN_GRAPH | TG_CREATE_GRAPH))
        return tg__fail(tp, TG_INVALID, "%s: unknown flags 0x%x", fn, flags);
    struct tg__bw bw = {0};
    bw.tp = tp;
    bw.create = flags & TG_CREATE_GRAPH;
    bw.retain = bw.create || (flags & TG_RETAIN_GRAPH);
    bw.accumulate = accumulate_mode;

    /* Range of nodes to sweep. */
    uint32_t hi = 0, lo = 1, scur;
    for (int k = 0; k < nout; k++) {
        if (!tg__resolve(tp, outs[k], fn))
            return tp->status;
        hi = outs[k].id_ > hi ? outs[k].id_ : hi;
    }
    if (scalar_out) {
        hi = last_node_before(tp, scalar_out);
        scur = scalar_out + 1;
    } else {
        scur = hi + 1 < tp->nnodes ? tg__node_at(tp, hi + 1)->scalar_mark : tp->ns;
    }
    if (!accumulate_mode) {
        lo = UINT32_MAX;
        for (int k = 0; k < nin; k++) {
            if (!tg__resolve(tp, ins[k], fn))
                return tp->status;
            lo = ins[k].id_ < lo ? ins[k].id_ : lo;
        }
    }
    bool empty = lo > hi; /* nothing to sweep: no node, or every input after every output */
    bw.lo = empty ? 1 : lo;
    bw.hi = empty ? 0 : hi;
    size_t count = empty ? 1 : (size_t)(hi - lo + 1);
    bw.slot = tg__arena_alloc(tp->ctx, &tp->arena, count * sizeof *bw.slot);
    if (!bw.slot)
        return tg__fail(tp, TG_NOMEM, "%s: out of memory for %zu gradient slots", fn, count);
    memset(bw.slot, 0, count * sizeof *bw.slot);
    if (!accumulate_mode && !empty) {
        bw.need = tg__arena_alloc(tp->ctx, &tp->arena, count);
        if (!bw.need)
            return tg__fail(tp, TG_NOMEM, "%s: out of memory", fn);
        memset(bw.need, 0, count);
        for (int k = 0; k < nin; k++) /* integer tensors (indices) never carry gradients */
            if (ins[k].id_ <= hi && tg__node_at(tp, ins[k].id_)->v.dtype != TG_I64)
                bw.need[ins[k].id_ - lo] = 1;
        for (uint32_t i = lo; i <= hi; i++) {
            tg__node *n = tg__node_at(tp, i);
            uint8_t *nd = &bw.need[i - lo];
            if (n->kind == TG__FROM_SCALAR)
                *nd = 1;
            for (uint32_t j = 0; !*nd && n->inputs && j < n->ninputs; j++)
                *nd = n->inputs[j] >= lo && bw.need[n->inputs[j] - lo];
        }
    }

    bool grad_mode = tp->grad_enabled;
    tp->grad_enabled = bw.create;
    tp->in_backward = true;
    tg_status st = TG_OK;
    if (tp->ns > 1)
        tg__scalar_prepare(tp, scur, false);
    if (scalar_out) {
        tp->sadj[scalar_out] += 1.0;
    } else if (!empty) {
        for (int k = 0; k < nout && !st; k++)
            st = seed_output(&bw, outs[k], seeds ? &seeds[k] : NULL, fn);
    }
    for (uint32_t i = hi; !st && !empty && i >= lo; i--) {
        tg__node *n = tg__node_at(tp, i);
        if (scur > n->scalar_mark) {
            st = tg__scalar_sweep(tp, n->scalar_mark, scur, bw.retain, &bw);
            scur = n->scalar_mark;
            if (st)
                break;
        }
        if (*slot(&bw, i) && needs(&bw, i))
            st = process(&bw, i);
    }
    if (!st && accumulate_mode && scur > 1)
        st = tg__scalar_sweep(tp, 1, scur, bw.retain, &bw);
    if (!st && accumulate_mode && !empty)
        st = finish_accumulate(&bw);
    if (!st && !accumulate_mode) {
        for (int k = 0; k < nin && !st; k++) {
            uint32_t id = ins[k].id_;
            uint32_t g = !empty && id <= hi ? *slot(&bw, id) & ~OWNED : 0;
            if (g) {
                grads[k] = tg__handle(tp, g);
            } else {
                const tg__node *n = tg__node_at(tp, id);
                grads[k] = tg_zeros(tp, n->v.dtype, n->v.ndim, n->v.shape);
                st = tp->status;
            }
        }
    }
    tp->grad_enabled = grad_mode;
    tp->in_backward = false;
    return st ? st : tp->status;
}

tg_status tg_backward(tg_tensor loss)
{
    tg_tensor none = {0};
    return tg_backward_ex(loss, none, 0);
}

tg_status tg_backward_ex(tg_tensor out, tg_tensor seed, unsigned flags)
{
    tg_tape *tp = out.tape_ ? out.tape_ : seed.tape_;
    if (!tp)
        return TG_INVALID;
    return run(tp, "tg_backward", 1, &out, &seed, 0, 0, NULL, NULL, flags, true);
}

tg_status tg_grad(int noutputs, const tg_tensor *outputs, const tg_tensor *seeds, int ninputs,
                  const tg_tensor *inputs, tg_tensor *grads, unsigned flags)
{
    if (noutputs < 1 || ninputs < 1 || !outputs || !inputs || !grads)
        return outputs && noutputs > 0 && outputs[0].tape_ ? tg__fail(
                   outputs[0].tape_, TG_INVALID, "tg_grad: needs outputs, inputs and a grads array")
                                                           : TG_INVALID;
    tg_tape *tp = outputs[0].tape_;
    if (!tp)
        return TG_INVALID;
    for (int k = 0; k < ninputs; k++)
        grads[k] = tg__handle(tp, 0);
    return run(tp, "tg_grad", noutputs, outputs, seeds, 0, ninputs, inputs, grads, flags, false);
}

tg_status tg_s_backward(tg_scalar out, unsigned flags)
{
    tg_tape *tp = out.tape_;
    if (!tp)
        return TG_INVALID;
    if (tp->status)
        return tp->status;
    if (!tg_s_ok(out))
        return tg__fail(tp, out.gen_ != tp->gen ? TG_STALE : TG_INVALID, "tg_s_backward: %s",
                        out.gen_ != tp->gen ? "stale scalar handle" : "invalid scalar handle");
    if (flags & TG_CREATE_GRAPH)
        return tg__fail(tp, TG_INVALID,
                        "tg_s_backward: TG_CREATE_GRAPH is not supported on "
                        "scalar entries; use tensors for higher-order gradients");
    return run(tp, "tg_s_backward", 0, NULL, NULL, out.id_, 0, NULL, NULL, flags, true);
}
