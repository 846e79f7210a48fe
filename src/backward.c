/* backward.c — the reverse sweep: one loop over the tape in reverse creation order (the tape is
 * already topologically sorted), no recursion, no op-specific code. Broadcast reduction and
 * fan-in accumulation happen here, once, for every op. */
#include "internal.h"

#include <math.h>
#include <stdio.h>

#include "vmath.h"

#define OWNED 0x80000000u /* slot tag: the gradient buffer is private to this slot */

/* struct tg__bw (the state of one backward) is in internal.h: the scalar sweeps use it too. */

static inline uint32_t *slot(struct tg__bw *bw, uint32_t id) { return &bw->slot[id - bw->lo]; }

static inline bool needs(const struct tg__bw *bw, uint32_t id) { return tg__bw_needs(bw, id); }

/* The numeric scalar adjoints of this backward. */
static inline double *sadj(const struct tg__bw *bw) { return bw->sadj ? bw->sadj : bw->tp->sadj; }

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
    tg__node *n = tg__node_at(tp, id);
    tg_tensor c = tg_full(tp, n->v.dtype, n->v.ndim, n->v.shape, value);
    if (!c.id_)
        return tp->status;
    return accumulate(bw, id, c, true, NULL);
}

tg_status tg__bw_deposit_graph(struct tg__bw *bw, uint32_t id, tg_scalar h)
{
    tg_tape *tp = bw->tp;
    if (!needs(bw, id))
        return TG_OK;
    tg__node *n = tg__node_at(tp, id);
    tg_tensor c = tg__scalar_tensor(h, n->v.dtype, n->v.ndim, n->v.shape);
    if (!c.id_)
        return tp->status;
    return accumulate(bw, id, c, false, NULL);
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
    tg_kernel kn = {(int)k, views, &n->v, n->attr, n->saved, tp->ctx->threads, NULL};
    size_t loop_bytes = tg__loop_scratch_bytes((int)k);
    if (loop_bytes && !(kn.loop_scratch_ = tg__arena_alloc(tp->ctx, &tp->arena, loop_bytes)))
        return tg__fail(tp, TG_NOMEM, "%s: backward: out of memory", op_name(n));
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
        /* The gradient goes back into the entry: as a recorded entry under TG_CREATE_GRAPH. */
        if (bw->create)
            return tg__bw_give(bw, n->scalar_src, tg_s_from(tg__handle(tp, g)));
        sadj(bw)[n->scalar_src] += tg_item(tg__handle(tp, g));
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
    bool seeded = seed && seed->tape_;
    if (seeded) {
        tg__node *sn = tg__resolve(tp, *seed, fn);
        if (!sn)
            return tp->status;
        if (sn->v.dtype != o->v.dtype || !tg__same_shape(&sn->v, &o->v)) {
            char sb[96];
            tg__format_view(sb, sizeof sb, &sn->v);
            return tg__fail(tp, TG_SHAPE, "%s: seed %s does not match output %s (node %u)", fn, sb,
                            buf, out.id_);
        }
    } else if (o->v.numel != 1) {
        return tg__fail(tp, TG_NOT_SCALAR,
                        "%s: output %s (node %u) is not a scalar; pass a seed of its shape", fn,
                        buf, out.id_);
    }
    /* An output outside the swept range (recorded before every input) or off every path from
     * an input contributes nothing, and has no slot to seed. */
    if (!needs(bw, out.id_))
        return TG_OK;
    tg_tensor s = seeded ? *seed : tg_ones(tp, o->v.dtype, o->v.ndim, o->v.shape);
    if (!s.id_)
        return tp->status;
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

/* What one backward is asked: outputs (tensors with seeds, or one scalar entry), and either
 * accumulation into parameters, leaves and scalar adjoints (tg_backward, tg_s_backward), or the
 * gradients of given tensor or scalar inputs (tg_grad, tg_s_gradient: functional). */
typedef struct job {
    const char *fn;
    int nout;
    const tg_tensor *outs, *seeds;
    uint32_t scalar_out; /* instead of tensor outputs: an entry, seeded with 1 */
    int nin;             /* functional: tensor inputs and their gradients */
    const tg_tensor *ins;
    tg_tensor *grads;
    int nsin; /* functional: scalar inputs; gradients as entries (sgrads) and/or values (svals) */
    const tg_scalar *sins;
    tg_scalar *sgrads;
    double *svals;
    unsigned flags;
    bool accumulate;
} job;

/* The scalar entries [lo, hi) in reverse: numeric adjoints, or recorded ones under
 * TG_CREATE_GRAPH (a separate loop, so the first-order sweep stays as tight as it is). */
static tg_status sweep_scalars(struct tg__bw *bw, uint32_t lo, uint32_t hi)
{
    if (lo < bw->slo)
        lo = bw->slo;
    if (hi <= lo)
        return TG_OK;
    if (bw->create)
        return tg__scalar_sweep_graph(bw->tp, lo, hi, bw);
    return tg__scalar_sweep(bw->tp, sadj(bw), lo, hi, bw->retain, bw);
}

/* Functional backward: marks the nodes and entries on a path from an input, walking both in
 * creation order (entries [mark(i-1), mark(i)) were recorded between nodes i-1 and i). */
static void mark_paths(struct tg__bw *bw, const job *jb, bool empty)
{
    tg_tape *tp = bw->tp;
    uint32_t lo = bw->lo, hi = bw->hi, slo = bw->slo, shi = bw->shi;
    for (int k = 0; k < jb->nin; k++) { /* integer tensors (indices) never carry gradients */
        uint32_t id = jb->ins[k].id_;
        if (!empty && id >= lo && id <= hi && tg__node_at(tp, id)->v.dtype != TG_I64)
            bw->need[id - lo] = 1;
    }
    for (int k = 0; k < jb->nsin; k++) {
        uint32_t id = jb->sins[k].id_;
        if (id >= slo && id < shi)
            bw->sneed[id] = 1;
    }
    uint32_t sj = slo;
    for (uint32_t i = lo; !empty && i <= hi; i++) {
        tg__node *n = tg__node_at(tp, i);
        uint32_t m = n->scalar_mark < shi ? n->scalar_mark : shi;
        if (sj < m) {
            tg__scalar_need(tp, bw, sj, m);
            sj = m;
        }
        uint8_t *nd = &bw->need[i - lo];
        if (n->kind == TG__FROM_SCALAR)
            *nd |= n->scalar_src >= slo && n->scalar_src < shi && bw->sneed[n->scalar_src];
        for (uint32_t j = 0; !*nd && n->inputs && j < n->ninputs; j++)
            *nd = n->inputs[j] >= lo && bw->need[n->inputs[j] - lo];
    }
    if (sj < shi)
        tg__scalar_need(tp, bw, sj, shi);
}

static tg_status run(tg_tape *tp, const job *jb)
{
    const char *fn = jb->fn;
    if (tp->status)
        return tp->status;
    if (tp->in_backward)
        return tg__fail(tp, TG_INVALID, "%s: called from inside a backward rule", fn);
    if (jb->flags & ~(TG_RETAIN_GRAPH | TG_CREATE_GRAPH))
        return tg__fail(tp, TG_INVALID, "%s: unknown flags 0x%x", fn, jb->flags);
    struct tg__bw bw = {0};
    bw.tp = tp;
    bw.create = jb->flags & TG_CREATE_GRAPH;
    bw.retain = bw.create || (jb->flags & TG_RETAIN_GRAPH);
    bw.accumulate = jb->accumulate;

    /* Ranges to sweep: nodes [lo, hi], scalar entries [slo, shi). */
    uint32_t hi = 0, lo = 1, slo = 1, shi;
    for (int k = 0; k < jb->nout; k++) {
        if (!tg__resolve(tp, jb->outs[k], fn))
            return tp->status;
        hi = jb->outs[k].id_ > hi ? jb->outs[k].id_ : hi;
    }
    if (jb->scalar_out) {
        hi = last_node_before(tp, jb->scalar_out);
        shi = jb->scalar_out + 1;
    } else {
        shi = hi + 1 < tp->nnodes ? tg__node_at(tp, hi + 1)->scalar_mark : tp->ns;
    }
    if (!jb->accumulate) {
        lo = slo = UINT32_MAX;
        for (int k = 0; k < jb->nin; k++) {
            if (!tg__resolve(tp, jb->ins[k], fn))
                return tp->status;
            lo = jb->ins[k].id_ < lo ? jb->ins[k].id_ : lo;
        }
        if (lo != UINT32_MAX)
            slo = tg__node_at(tp, lo)->scalar_mark; /* entries recorded after node lo */
        for (int k = 0; k < jb->nsin; k++) {
            uint32_t id = jb->sins[k].id_, after = last_node_before(tp, id) + 1;
            slo = id < slo ? id : slo;
            lo = after < lo ? after : lo;
        }
    }
    bool empty = lo > hi; /* no node to sweep, or every input after every output */
    bool sempty = slo >= shi;
    bw.lo = empty ? 1 : lo;
    bw.hi = empty ? 0 : hi;
    bw.slo = sempty ? 1 : slo;
    bw.shi = sempty ? 1 : shi;
    size_t count = empty ? 1 : (size_t)(hi - lo + 1);
    tg__arena *ar = &tp->arena;
    bw.slot = tg__arena_alloc(tp->ctx, ar, count * sizeof *bw.slot);
    if (!bw.slot)
        return tg__fail(tp, TG_NOMEM, "%s: out of memory for %zu gradient slots", fn, count);
    memset(bw.slot, 0, count * sizeof *bw.slot);
    if (!jb->accumulate && !empty) {
        if (!(bw.need = tg__arena_alloc(tp->ctx, ar, count)))
            return tg__fail(tp, TG_NOMEM, "%s: out of memory", fn);
        memset(bw.need, 0, count);
    }
    if (!sempty) {
        /* Arrays by entry id; only [slo, shi) is used (numeric adjoints: also the operands below
         * slo that the sweep adds into, cleared once mark_paths has found the lowest). */
        if (!jb->accumulate) {
            if (!(bw.sneed = tg__arena_alloc(tp->ctx, ar, shi)))
                return tg__fail(tp, TG_NOMEM, "%s: out of memory", fn);
            memset(bw.sneed + slo, 0, shi - slo);
        }
        if (bw.create) {
            if (!(bw.sadjh = tg__arena_alloc(tp->ctx, ar, (size_t)shi * sizeof *bw.sadjh)))
                return tg__fail(tp, TG_NOMEM, "%s: out of memory for %u scalar adjoints", fn, shi);
            memset(bw.sadjh + slo, 0, (size_t)(shi - slo) * sizeof *bw.sadjh);
        } else if (!jb->accumulate) {
            /* Functional: adjoints of its own; tg_s_grad's stay untouched. */
            if (!(bw.sadj = tg__arena_alloc(tp->ctx, ar, (size_t)shi * sizeof *bw.sadj)))
                return tg__fail(tp, TG_NOMEM, "%s: out of memory for %u scalar adjoints", fn, shi);
        }
    }
    bw.sfloor = bw.slo - 1; /* the sweep carries into the entry below its range */
    if (!jb->accumulate)
        mark_paths(&bw, jb, empty);
    if (bw.sadj)
        memset(bw.sadj + bw.sfloor, 0, (size_t)(shi - bw.sfloor) * sizeof *bw.sadj);

    bool grad_mode = tp->grad_enabled;
    tp->grad_enabled = bw.create;
    tp->in_backward = true;
    tg_status st = TG_OK;
    if (tp->ns > 1)
        tg__scalar_prepare(tp, jb->accumulate);
    if (jb->scalar_out) {
        if (!sempty && bw.create) {
            tg_scalar one = tg_s_const(tp, 1.0);
            st = tp->status;
            bw.sadjh[jb->scalar_out] = one.id_;
        } else if (!sempty) {
            sadj(&bw)[jb->scalar_out] += 1.0;
        }
    } else {
        for (int k = 0; k < jb->nout && !st; k++)
            st = seed_output(&bw, jb->outs[k], jb->seeds ? &jb->seeds[k] : NULL, fn);
    }
    uint32_t scur = sempty ? 0 : shi;
    for (uint32_t i = hi; !st && !empty && i >= lo; i--) {
        tg__node *n = tg__node_at(tp, i);
        if (scur > n->scalar_mark) {
            st = sweep_scalars(&bw, n->scalar_mark, scur);
            scur = n->scalar_mark;
            if (st)
                break;
        }
        if (*slot(&bw, i) && needs(&bw, i))
            st = process(&bw, i);
    }
    if (!st && !sempty && scur > slo)
        st = sweep_scalars(&bw, slo, scur);
    if (!st && jb->accumulate && !empty)
        st = finish_accumulate(&bw);
    if (!st && jb->accumulate && bw.create && !sempty) {
        /* tg_s_grad reads numbers: the recorded adjoints' values. */
        tp->scalars_dirty = true;
        for (uint32_t i = slo; i < shi; i++)
            if (bw.sadjh[i])
                tp->sadj[i] += tp->s[bw.sadjh[i]].v;
    }
    for (int k = 0; !st && k < jb->nin; k++) {
        uint32_t id = jb->ins[k].id_;
        uint32_t g = !empty && id >= lo && id <= hi ? *slot(&bw, id) & ~OWNED : 0;
        if (g) {
            jb->grads[k] = tg__handle(tp, g);
        } else {
            const tg__node *n = tg__node_at(tp, id);
            jb->grads[k] = tg_zeros(tp, n->v.dtype, n->v.ndim, n->v.shape);
            st = tp->status;
        }
    }
    for (int k = 0; !st && k < jb->nsin; k++) {
        uint32_t id = jb->sins[k].id_;
        bool in = !sempty && id >= slo && id < shi;
        if (bw.create) {
            uint32_t h = in ? bw.sadjh[id] : 0;
            tg_scalar g = h ? (tg_scalar){tp, h, tp->gen} : tg_s_const(tp, 0.0);
            if (jb->sgrads)
                jb->sgrads[k] = g;
            if (jb->svals)
                jb->svals[k] = tg_s_value(g);
        } else {
            double v = in ? bw.sadj[id] : 0.0;
            if (jb->svals)
                jb->svals[k] = v;
            if (jb->sgrads)
                jb->sgrads[k] = tg_s_const(tp, v);
        }
        st = tp->status;
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
    job jb = {.fn = "tg_backward",
              .nout = 1,
              .outs = &out,
              .seeds = &seed,
              .flags = flags,
              .accumulate = true};
    return run(tp, &jb);
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
    job jb = {.fn = "tg_grad",
              .nout = noutputs,
              .outs = outputs,
              .seeds = seeds,
              .nin = ninputs,
              .ins = inputs,
              .grads = grads,
              .flags = flags};
    return run(tp, &jb);
}

/* The scalar entry points' common checks: a live output on a fine tape. */
static tg_status check_scalar(tg_tape *tp, tg_scalar s, const char *fn, const char *what)
{
    if (tp->status)
        return tp->status;
    if (s.tape_ == tp && tg_s_ok(s))
        return TG_OK;
    bool stale = s.tape_ && (s.tape_ != tp || s.gen_ != tp->gen || s.id_ >= tp->ns);
    return tg__fail(tp, stale ? TG_STALE : TG_INVALID, "%s: %s is %s", fn, what,
                    !s.tape_        ? "none"
                    : s.tape_ != tp ? "on another tape"
                    : stale         ? "stale (from before a tape reset)"
                                    : "an invalid or error handle");
}

tg_status tg_s_backward(tg_scalar out, unsigned flags)
{
    tg_tape *tp = out.tape_;
    if (!tp)
        return TG_INVALID;
    tg_status st = check_scalar(tp, out, "tg_s_backward", "the output");
    if (st)
        return st;
    if (flags & TG_CREATE_GRAPH)
        return tg__fail(tp, TG_INVALID,
                        "tg_s_backward: TG_CREATE_GRAPH is not supported here; use "
                        "tg_s_gradient for differentiable scalar gradients");
    job jb = {.fn = "tg_s_backward", .scalar_out = out.id_, .flags = flags, .accumulate = true};
    return run(tp, &jb);
}

/* tg_s_gradient's argument checks; grads[] (when given) are set to none first. */
static tg_status check_gradient_args(tg_tape *tp, const char *fn, tg_scalar out, int n,
                                     const tg_scalar *inputs, bool have_out)
{
    tg_status st = check_scalar(tp, out, fn, "the output");
    if (st)
        return st;
    if (n < 1 || !inputs || !have_out)
        return tg__fail(tp, TG_INVALID, "%s: needs n >= 1 inputs and an output array (n = %d)", fn,
                        n);
    for (int k = 0; k < n; k++) {
        char what[32];
        snprintf(what, sizeof what, "input %d", k);
        if ((st = check_scalar(tp, inputs[k], fn, what)))
            return st;
    }
    return TG_OK;
}

tg_status tg_s_gradient(tg_scalar out, int n, const tg_scalar *inputs, tg_scalar *grads,
                        unsigned flags)
{
    tg_tape *tp = out.tape_;
    if (!tp)
        return TG_INVALID;
    for (int k = 0; grads && k < n; k++)
        grads[k] = (tg_scalar){tp, 0, tp->gen};
    tg_status st = check_gradient_args(tp, "tg_s_gradient", out, n, inputs, grads != NULL);
    if (st)
        return st;
    job jb = {.fn = "tg_s_gradient",
              .scalar_out = out.id_,
              .nsin = n,
              .sins = inputs,
              .sgrads = grads,
              .flags = flags};
    return run(tp, &jb);
}

tg_status tg_s_hessian(tg_scalar out, int n, const tg_scalar *inputs, double *hessian)
{
    tg_tape *tp = out.tape_;
    if (!tp)
        return TG_INVALID;
    tg_status st = check_gradient_args(tp, "tg_s_hessian", out, n, inputs, hessian != NULL);
    tg_scalar *g = NULL;
    if (!st && (size_t)n > SIZE_MAX / sizeof *g / 2)
        st = tg__fail(tp, TG_INVALID, "tg_s_hessian: n = %d is too large", n);
    if (!st && !(g = tg__arena_alloc(tp->ctx, &tp->arena, (size_t)n * sizeof *g)))
        st = tg__fail(tp, TG_NOMEM, "tg_s_hessian: out of memory");
    /* One recorded reverse pass gives the gradient as entries; a numeric pass over each gives a
     * row of second derivatives. */
    if (!st)
        st = tg_s_gradient(out, n, inputs, g, TG_CREATE_GRAPH);
    for (int r = 0; !st && r < n; r++) {
        job jb = {.fn = "tg_s_hessian",
                  .scalar_out = g[r].id_,
                  .nsin = n,
                  .sins = inputs,
                  .svals = hessian + (size_t)r * n,
                  .flags = TG_RETAIN_GRAPH};
        st = run(tp, &jb);
    }
    if (st && hessian && n > 0 && (size_t)n <= SIZE_MAX / sizeof *hessian / (size_t)n)
        for (size_t i = 0; i < (size_t)n * n; i++)
            hessian[i] = NAN;
    return st;
}
