/* backward.c — the reverse sweep: one loop over the tape in reverse creation order (the tape is
 * already topologically sorted), no recursion, no op-specific code. Broadcast reduction and
 * fan-in accumulation happen here, once, for every op. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "vmath.h"

#define OWNED 0x80000000u /* slot tag: the gradient buffer is private to this slot */

/* struct tg__bw (the state of one backward) is in internal.h: the scalar sweeps use it too. */

static inline uint32_t *slot(struct tg__bw *bw, uint32_t id) { return &bw->slots[id - bw->low]; }

static inline bool needs(const struct tg__bw *bw, uint32_t id) { return tg__bw_needs(bw, id); }

/* The numeric scalar adjoints of this backward. */
static inline double *adjoints(const struct tg__bw *bw)
{
    return bw->scalar_adjoints ? bw->scalar_adjoints : bw->tp->scalar_adjoints;
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
    if (TG__LIKELY(tg__live(tp, c)))
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

/* A zeroed gradient buffer for input j of a kernel backward (of the output's shape when the
 * input was broadcast); under TG_CREATE_GRAPH a barrier, so that differentiating it again fails
 * loudly instead of giving zero. *id receives its node. */
static tg_status kernel_buffer(struct tg__bw *bw, tg__node *n, uint32_t j, uint32_t g,
                               bool requires_grad, tg__node **out, uint32_t *id)
{
    tg_tape *tp = bw->tp;
    const tg_view *in = &tg__node_at(tp, n->inputs[j])->v;
    bool broadcast = (n->op->def.flags & TG_OP_BROADCAST) && !tg__same_shape(in, &n->v);
    const tg_view *shape = broadcast ? &n->v : in;
    tg__node *buf;
    tg_tensor t = tg__leaf(tp, op_name(n), in->dtype, shape->ndim, shape->shape, &buf);
    if (!t.id_)
        return tp->status;
    memset(buf->v.data, 0, (size_t)buf->v.numel * tg_dtype_size(buf->v.dtype));
    if (bw->create) {
        uint32_t k = n->ninputs;
        uint32_t *ids = tg__arena_alloc(tp->ctx, &tp->arena, (k + 1) * sizeof *ids);
        if (!ids)
            return tg__fail(tp, TG_NOMEM, "%s: backward: out of memory", op_name(n));
        memcpy(ids, n->inputs, k * sizeof *ids);
        ids[k] = g;
        buf->kind = TG__BARRIER;
        buf->op = n->op;
        buf->inputs = ids;
        buf->ninputs = k + 1;
        buf->requires_grad = requires_grad;
    }
    *out = buf;
    *id = t.id_;
    return TG_OK;
}

/* Where input j's gradient goes: straight into its slot when that is owned and of its shape,
 * else into a fresh buffer (bufs[j], accumulated afterwards). */
static tg_status kernel_target(struct tg__bw *bw, tg__node *n, uint32_t j, uint32_t g,
                               bool requires_grad, tg_view **target, uint32_t *buf_id)
{
    tg_tape *tp = bw->tp;
    const tg_view *in = &tg__node_at(tp, n->inputs[j])->v;
    bool broadcast = (n->op->def.flags & TG_OP_BROADCAST) && !tg__same_shape(in, &n->v);
    uint32_t s = *slot(bw, n->inputs[j]);
    *buf_id = 0;
    if (!bw->create && !broadcast && (s & OWNED)) {
        *target = &tg__node_at(tp, s & ~OWNED)->v;
        return TG_OK;
    }
    tg__node *buf = NULL;
    tg_status st = kernel_buffer(bw, n, j, g, requires_grad, &buf, buf_id);
    *target = st ? NULL : &buf->v;
    return st;
}

static tg_status kernel(struct tg__bw *bw, tg__node *n, uint32_t g, const bool *need_in)
{
    tg_tape *tp = bw->tp;
    uint32_t k = n->ninputs;
    const tg_view *views_small[SMALL];
    tg_view *targets_small[SMALL];
    uint32_t bufs_small[SMALL];
    const tg_view **views = views_small;
    tg_view **targets = targets_small;
    uint32_t *bufs = bufs_small;
    size_t loop_bytes = tg__loop_scratch_bytes((int)k);
    void *loop_scratch = loop_bytes ? tg__arena_alloc(tp->ctx, &tp->arena, loop_bytes) : NULL;
    if (k > SMALL) {
        void *p = tg__arena_alloc(tp->ctx, &tp->arena, k * (2 * sizeof(void *) + 4));
        if (!p)
            return tg__fail(tp, TG_NOMEM, "%s: backward: out of memory", op_name(n));
        views = p;
        targets = (tg_view **)(views + k);
        bufs = (uint32_t *)(targets + k);
    }
    if (loop_bytes && !loop_scratch)
        return tg__fail(tp, TG_NOMEM, "%s: backward: out of memory", op_name(n));
    bool requires_grad = tg__node_at(tp, g)->requires_grad;
    for (uint32_t j = 0; j < k; j++) {
        tg__node *in = tg__node_at(tp, n->inputs[j]);
        views[j] = &in->v;
        requires_grad |= in->requires_grad;
    }
    for (uint32_t j = 0; j < k; j++) {
        targets[j] = NULL;
        bufs[j] = 0;
        tg_status st =
            need_in[j] ? kernel_target(bw, n, j, g, requires_grad, &targets[j], &bufs[j]) : TG_OK;
        if (st)
            return st;
    }
    tg_kernel kn = {(int)k, views, &n->v, n->attr, n->saved, tp->ctx->threads, loop_scratch};
    if (n->v.numel > 0) /* an empty output contributes nothing (its kernel is never called) */
        n->op->def.backward_kernel(&kn, &tg__node_at(tp, g)->v, targets);
    for (uint32_t j = 0; j < k; j++) {
        tg_status st =
            bufs[j] ? accumulate(bw, n->inputs[j], tg__handle(tp, bufs[j]), true, n) : TG_OK;
        if (st)
            return st;
    }
    return TG_OK;
}

/* Nodes that are not op results: leaves end the path, parameters check their version, scalar
 * conversions hand the gradient back to their entry, barriers refuse. */
/* Whether scalar entry `id` is swept: every entry in tg_backward, only those on a path from
 * an input in a functional backward. */
static bool entry_swept(const struct tg__bw *bw, uint32_t id)
{
    if (bw->accumulate)
        return true;
    return id >= bw->scalar_low && id < bw->scalar_high && bw->scalar_needed[id];
}

/* The parameter node `id` among bw->param_nodes (sorted by id); it is there. */
static const tg__param_node *param_node(const struct tg__bw *bw, uint32_t id)
{
    uint32_t lo = 0, hi = bw->nparam_nodes;
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (bw->param_nodes[mid].id <= id)
            lo = mid;
        else
            hi = mid;
    }
    return &bw->param_nodes[lo];
}

/* With a gradient-ready hook: a parameter's gradients gather in its lowest node, which the sweep
 * reaches last; there the gradient is final and the hook hears of it. A gradient the hook takes
 * leaves its slot, so that deliver does not add it. */
static tg_status param_ready(struct tg__bw *bw, uint32_t id, tg__node *n, uint32_t g)
{
    tg_tape *tp = bw->tp;
    const tg__param_node *pn = param_node(bw, id);
    uint32_t *s = slot(bw, id);
    if (pn->first != id) {
        bool owned = *s & OWNED;
        *s = 0;
        return accumulate(bw, pn->first, tg__handle(tp, g), owned, NULL);
    }
    if (tp->grad_ready(tp->grad_ready_user, n->param, tg__node_at(tp, g)->v.data))
        *s = 0;
    return tp->status; /* a hook that misused the tape has failed the backward */
}

static tg_status process_special(struct tg__bw *bw, uint32_t id, tg__node *n, uint32_t g)
{
    tg_tape *tp = bw->tp;
    switch (n->kind) {
    case TG__PARAM:
        if (n->param->version != n->param_version)
            return tg__fail(tp, TG_MODIFIED,
                            "parameter '%s' was modified after it was used on "
                            "the tape (node %u); recompute the forward pass",
                            n->param->name ? n->param->name : "", id);
        return bw->param_nodes ? param_ready(bw, id, n, g) : TG_OK;
    case TG__FROM_SCALAR:
        /* The gradient goes back into the entry (as a recorded entry under TG_CREATE_GRAPH),
         * unless a functional backward stops here: the node is an input, its entry below. */
        if (!entry_swept(bw, n->scalar_src))
            return TG_OK;
        if (bw->create)
            return tg__bw_give(bw, n->scalar_src, tg_s_from(tg__handle(tp, g)));
        adjoints(bw)[n->scalar_src] += tg_item(tg__handle(tp, g));
        return TG_OK;
    case TG__BARRIER:
        return tg__fail(tp, TG_FIRST_ORDER,
                        "%s: its backward is a first-order kernel; its "
                        "gradient cannot be differentiated again (node %u)",
                        op_name(n), id);
    default:
        return TG_OK;
    }
}

/* Which inputs of op node n need a gradient (need_in, of n->ninputs); false when none does. */
static bool inputs_needing(struct tg__bw *bw, const tg__node *n, bool *need_in)
{
    bool any = false;
    for (uint32_t j = 0; j < n->ninputs; j++) {
        need_in[j] = needs(bw, n->inputs[j]);
        any |= need_in[j];
    }
    return any;
}

static tg_status process(struct tg__bw *bw, uint32_t id)
{
    tg_tape *tp = bw->tp;
    tg__node *n = tg__node_at(tp, id);
    uint32_t g = *slot(bw, id) & ~OWNED;
    if (n->kind != TG__OPNODE)
        return process_special(bw, id, n, g);
    if (!n->inputs)
        return TG_OK; /* recorded without grad: a leaf as far as backward goes */
    if (n->released)
        return tg__fail(tp, TG_RELEASED,
                        "%s: backward through a graph already released by an "
                        "earlier backward (node %u); pass TG_RETAIN_GRAPH to the first",
                        op_name(n), id);
    bool small[SMALL], *need_in = small;
    if (n->ninputs > SMALL && !(need_in = tg__arena_alloc(tp->ctx, &tp->arena, n->ninputs)))
        return tg__fail(tp, TG_NOMEM, "%s: backward: out of memory", op_name(n));
    if (!inputs_needing(bw, n, need_in))
        return TG_OK;
    const tg_op_def *d = &n->op->def;
    tg_status st;
    /* The rule runs in the scope of the node it differentiates: its nodes and its errors carry
     * the name of the module that recorded the forward op. */
    const tg__scope *outer = tp->scope;
    tp->scope = n->scope;
    if (d->backward)
        st = composite(bw, id, n, g, need_in);
    else if (d->backward_kernel)
        st = kernel(bw, n, g, need_in);
    else
        st = tg__fail(tp, TG_NO_BACKWARD,
                      "%s: op has no backward rule, so no gradient can flow "
                      "through it (node %u)",
                      op_name(n), id);
    tp->scope = outer;
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
    for (uint32_t i = bw->low; i <= bw->high; i++) {
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
    for (uint32_t i = bw->low; i <= bw->high; i++) {
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
    if (lo < bw->scalar_low)
        lo = bw->scalar_low;
    if (hi <= lo)
        return TG_OK;
    if (bw->create)
        return tg__scalar_sweep_graph(bw->tp, lo, hi, bw);
    return tg__scalar_sweep(bw->tp, adjoints(bw), lo, hi, bw->retain, bw);
}

static bool nodes_empty(const struct tg__bw *bw) { return bw->low > bw->high; }
static bool scalars_empty(const struct tg__bw *bw) { return bw->scalar_low >= bw->scalar_high; }

/* Functional backward: marks the nodes and entries on a path from an input, walking both in
 * creation order (entries [mark(i-1), mark(i)) were recorded between nodes i-1 and i). */
static void mark_paths(struct tg__bw *bw, const job *jb)
{
    tg_tape *tp = bw->tp;
    uint32_t low = bw->low, high = bw->high;
    uint32_t scalar_low = bw->scalar_low, scalar_high = bw->scalar_high;
    bool empty = nodes_empty(bw);
    for (int k = 0; k < jb->nin; k++) { /* integer tensors (indices) never carry gradients */
        uint32_t id = jb->ins[k].id_;
        if (!empty && id >= low && id <= high && tg__node_at(tp, id)->v.dtype != TG_I64)
            bw->needed[id - low] = 1;
    }
    for (int k = 0; k < jb->nsin; k++) {
        uint32_t id = jb->sins[k].id_;
        if (id >= scalar_low && id < scalar_high)
            bw->scalar_needed[id] = 1;
    }
    uint32_t entry = scalar_low;
    for (uint32_t i = low; !empty && i <= high; i++) {
        tg__node *n = tg__node_at(tp, i);
        uint32_t mark = n->scalar_mark < scalar_high ? n->scalar_mark : scalar_high;
        if (entry < mark) {
            tg__scalar_need(tp, bw, entry, mark);
            entry = mark;
        }
        uint8_t *needed = &bw->needed[i - low];
        if (n->kind == TG__FROM_SCALAR)
            *needed |= n->scalar_src >= scalar_low && n->scalar_src < scalar_high
                       && bw->scalar_needed[n->scalar_src];
        for (uint32_t j = 0; !*needed && n->inputs && j < n->ninputs; j++)
            *needed = n->inputs[j] >= low && bw->needed[n->inputs[j] - low];
    }
    if (entry < scalar_high)
        tg__scalar_need(tp, bw, entry, scalar_high);
}

/* The call's own checks: a fine tape, not inside a rule, known flags. */
static tg_status check_call(tg_tape *tp, const job *jb)
{
    if (tp->status)
        return tp->status;
    if (tp->in_backward)
        return tg__fail(tp, TG_INVALID, "%s: called from inside a backward rule", jb->fn);
    if (jb->flags & ~(TG_RETAIN_GRAPH | TG_CREATE_GRAPH))
        return tg__fail(tp, TG_INVALID, "%s: unknown flags 0x%x", jb->fn, jb->flags);
    return TG_OK;
}

/* Functional backward: nothing below the lowest input can depend on an input, so the sweep
 * stops there (at the node after a scalar input, and the entries after a tensor input). */
static tg_status functional_floor(tg_tape *tp, const job *jb, uint32_t *low, uint32_t *scalar_low)
{
    *low = *scalar_low = UINT32_MAX;
    for (int k = 0; k < jb->nin; k++) {
        if (!tg__resolve(tp, jb->ins[k], jb->fn))
            return tp->status;
        *low = jb->ins[k].id_ < *low ? jb->ins[k].id_ : *low;
    }
    if (*low != UINT32_MAX)
        *scalar_low = tg__node_at(tp, *low)->scalar_mark; /* entries recorded after node low */
    for (int k = 0; k < jb->nsin; k++) {
        uint32_t id = jb->sins[k].id_, after = last_node_before(tp, id) + 1;
        *scalar_low = id < *scalar_low ? id : *scalar_low;
        *low = after < *low ? after : *low;
    }
    return TG_OK;
}

/* Phase 1, the range: nodes [low, high] and entries [scalar_low, scalar_high) to sweep, from
 * the outputs down to the inputs (functional) or to the start (accumulating). An empty range
 * is [1, 0] (nodes) or [1, 1) (entries). */
static tg_status find_range(struct tg__bw *bw, const job *jb)
{
    tg_tape *tp = bw->tp;
    uint32_t high = 0, low = 1, scalar_low = 1, scalar_high;
    for (int k = 0; k < jb->nout; k++) {
        if (!tg__resolve(tp, jb->outs[k], jb->fn))
            return tp->status;
        high = jb->outs[k].id_ > high ? jb->outs[k].id_ : high;
    }
    if (jb->scalar_out) {
        high = last_node_before(tp, jb->scalar_out);
        scalar_high = jb->scalar_out + 1;
    } else {
        scalar_high =
            high + 1 < tp->nnodes ? tg__node_at(tp, high + 1)->scalar_mark : tp->scalar_count;
    }
    tg_status st = jb->accumulate ? TG_OK : functional_floor(tp, jb, &low, &scalar_low);
    if (st)
        return st;
    bool empty = low > high; /* no node to sweep, or every input after every output */
    bool scalars_none = scalar_low >= scalar_high;
    bw->low = empty ? 1 : low;
    bw->high = empty ? 0 : high;
    bw->scalar_low = scalars_none ? 1 : scalar_low;
    bw->scalar_high = scalars_none ? 1 : scalar_high;
    return TG_OK;
}

/* Scratch of `bytes` from the arena, zeroed from byte `from` on; NULL (TG_NOMEM) on failure. */
static void *scratch(struct tg__bw *bw, const job *jb, size_t bytes, size_t from)
{
    tg_tape *tp = bw->tp;
    unsigned char *p = tg__arena_alloc(tp->ctx, &tp->arena, bytes);
    if (!p)
        tg__fail(tp, TG_NOMEM, "%s: out of memory for %zu bytes of backward scratch", jb->fn,
                 bytes);
    else
        memset(p + from, 0, bytes - from);
    return p;
}

/* Phase 2, the slots: a gradient slot per node, path marks (functional) and, for the entries,
 * adjoints of the call's own (functional) or as entries (TG_CREATE_GRAPH); arrays by entry id,
 * of which only [scalar_low, scalar_high) is used, and the entry below (the scalar floor). */
static tg_status allocate_slots(struct tg__bw *bw, const job *jb)
{
    size_t count = nodes_empty(bw) ? 1 : (size_t)(bw->high - bw->low + 1);
    if (!(bw->slots = scratch(bw, jb, count * sizeof *bw->slots, 0)))
        return bw->tp->status;
    if (!jb->accumulate && !nodes_empty(bw) && !(bw->needed = scratch(bw, jb, count, 0)))
        return bw->tp->status;
    size_t low = bw->scalar_low, high = bw->scalar_high;
    if (!scalars_empty(bw)) {
        if (!jb->accumulate && !(bw->scalar_needed = scratch(bw, jb, high, low)))
            return bw->tp->status;
        size_t entry = sizeof *bw->adjoint_entries;
        if (bw->create && !(bw->adjoint_entries = scratch(bw, jb, high * entry, low * entry)))
            return bw->tp->status;
        size_t adjoint = sizeof *bw->scalar_adjoints;
        if (!bw->create && !jb->accumulate
            && !(bw->scalar_adjoints = scratch(bw, jb, high * adjoint, high * adjoint)))
            return bw->tp->status;
    }
    bw->scalar_floor = bw->scalar_low - 1; /* the sweep carries into the entry below its range */
    if (!jb->accumulate)
        mark_paths(bw, jb);
    if (bw->scalar_adjoints) /* now that mark_paths found the lowest entry written */
        memset(bw->scalar_adjoints + bw->scalar_floor, 0,
               (bw->scalar_high - bw->scalar_floor) * sizeof *bw->scalar_adjoints);
    return TG_OK;
}

/* Orders parameter nodes by parameter, then id: a parameter's nodes become neighbours. */
static int by_param(const void *a, const void *b)
{
    const tg__param_node *x = a, *y = b;
    uintptr_t px = (uintptr_t)x->param, py = (uintptr_t)y->param;
    if (px != py)
        return px < py ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Phase 2b, with a gradient-ready hook (accumulating backwards only): the parameter nodes of the
 * range by id, each knowing the lowest node of its parameter. One sort of the parameter nodes;
 * nothing at all without a hook. */
static tg_status group_params(struct tg__bw *bw, const job *jb)
{
    tg_tape *tp = bw->tp;
    uint32_t count = 0;
    for (uint32_t i = bw->low; !nodes_empty(bw) && i <= bw->high; i++)
        count += tg__node_at(tp, i)->kind == TG__PARAM;
    if (!count)
        return TG_OK;
    size_t bytes = 2 * (size_t)count * sizeof(tg__param_node);
    tg__param_node *nodes = scratch(bw, jb, bytes, bytes);
    if (!nodes)
        return tp->status;
    tg__param_node *sorted = nodes + count;
    uint32_t k = 0;
    for (uint32_t i = bw->low; i <= bw->high; i++) {
        tg__node *n = tg__node_at(tp, i);
        if (n->kind == TG__PARAM) {
            sorted[k] = (tg__param_node){i, k, n->param}; /* `first` holds the index for now */
            k++;
        }
    }
    qsort(sorted, count, sizeof *sorted, by_param);
    for (uint32_t j = 0, first = 0; j < count; j++) {
        if (j == 0 || sorted[j].param != sorted[j - 1].param)
            first = sorted[j].id;
        nodes[sorted[j].first] = (tg__param_node){sorted[j].id, first, sorted[j].param};
    }
    bw->param_nodes = nodes;
    bw->nparam_nodes = count;
    return TG_OK;
}

/* Phase 3, the seeds: 1 into a scalar output's adjoint, or each tensor output's seed. */
static tg_status seed(struct tg__bw *bw, const job *jb)
{
    tg_tape *tp = bw->tp;
    if (tp->scalar_count > 1)
        tg__scalar_prepare(tp, jb->accumulate);
    if (!jb->scalar_out) {
        tg_status st = TG_OK;
        for (int k = 0; k < jb->nout && !st; k++)
            st = seed_output(bw, jb->outs[k], jb->seeds ? &jb->seeds[k] : NULL, jb->fn);
        return st;
    }
    if (scalars_empty(bw))
        return TG_OK;
    if (bw->create) {
        tg_scalar one = tg_s_const(tp, 1.0);
        bw->adjoint_entries[jb->scalar_out] = one.id_;
        return tp->status;
    }
    adjoints(bw)[jb->scalar_out] += 1.0;
    return TG_OK;
}

/* Phase 4, the sweep: nodes from high down to low, each preceded by the entries recorded after
 * it, then the entries before the lowest node. */
static tg_status sweep(struct tg__bw *bw)
{
    tg_status st = TG_OK;
    uint32_t entries_left = scalars_empty(bw) ? 0 : bw->scalar_high;
    for (uint32_t i = bw->high; !st && !nodes_empty(bw) && i >= bw->low; i--) {
        tg__node *n = tg__node_at(bw->tp, i);
        if (entries_left > n->scalar_mark) {
            st = sweep_scalars(bw, n->scalar_mark, entries_left);
            entries_left = n->scalar_mark;
            if (st)
                break;
        }
        if (*slot(bw, i) && needs(bw, i))
            st = process(bw, i);
    }
    if (!st && !scalars_empty(bw) && entries_left > bw->scalar_low)
        st = sweep_scalars(bw, bw->scalar_low, entries_left);
    return st;
}

/* The gradient of tensor input k (zeros when no path leads to it). */
static tg_status deliver_tensor(struct tg__bw *bw, const job *jb, int k)
{
    tg_tape *tp = bw->tp;
    uint32_t id = jb->ins[k].id_;
    uint32_t g = id >= bw->low && id <= bw->high ? *slot(bw, id) & ~OWNED : 0;
    if (g) {
        jb->grads[k] = tg__handle(tp, g);
        return TG_OK;
    }
    const tg__node *n = tg__node_at(tp, id);
    jb->grads[k] = tg_zeros(tp, n->v.dtype, n->v.ndim, n->v.shape);
    return tp->status;
}

/* The gradient of scalar input k, as an entry and/or a value. */
static tg_status deliver_scalar(struct tg__bw *bw, const job *jb, int k)
{
    tg_tape *tp = bw->tp;
    uint32_t id = jb->sins[k].id_;
    bool in = id >= bw->scalar_low && id < bw->scalar_high;
    if (bw->create) {
        uint32_t h = in ? bw->adjoint_entries[id] : 0;
        tg_scalar g = h ? (tg_scalar){tp, h, tp->gen} : tg_s_const(tp, 0.0);
        if (jb->sgrads)
            jb->sgrads[k] = g;
        if (jb->svals)
            jb->svals[k] = tg_s_value(g);
    } else {
        double v = in ? bw->scalar_adjoints[id] : 0.0;
        if (jb->svals)
            jb->svals[k] = v;
        if (jb->sgrads)
            jb->sgrads[k] = tg_s_const(tp, v);
    }
    return tp->status;
}

/* Phase 5, delivery: into parameters, leaves and the tape's adjoints (accumulating), or the
 * inputs' gradients (functional). */
static tg_status deliver(struct tg__bw *bw, const job *jb)
{
    tg_tape *tp = bw->tp;
    tg_status st = TG_OK;
    if (jb->accumulate && !nodes_empty(bw))
        st = finish_accumulate(bw);
    if (!st && jb->accumulate && bw->create && !scalars_empty(bw)) {
        /* tg_s_grad reads numbers: the recorded adjoints' values. */
        tp->scalars_dirty = true;
        for (uint32_t i = bw->scalar_low; i < bw->scalar_high; i++)
            if (bw->adjoint_entries[i])
                tp->scalar_adjoints[i] += tp->scalars[bw->adjoint_entries[i]].v;
    }
    for (int k = 0; !st && k < jb->nin; k++)
        st = deliver_tensor(bw, jb, k);
    for (int k = 0; !st && k < jb->nsin; k++)
        st = deliver_scalar(bw, jb, k);
    return st;
}

static tg_status run(tg_tape *tp, const job *jb)
{
    tg_status st = check_call(tp, jb);
    if (st)
        return st;
    struct tg__bw bw = {.tp = tp,
                        .create = jb->flags & TG_CREATE_GRAPH,
                        .retain = jb->flags & (TG_CREATE_GRAPH | TG_RETAIN_GRAPH),
                        .accumulate = jb->accumulate};
    if (tp->backward_passes < UINT32_MAX)
        tp->backward_passes++;
    if ((st = find_range(&bw, jb)) || (st = allocate_slots(&bw, jb)))
        return st;
    if (jb->accumulate && tp->grad_ready && (st = group_params(&bw, jb)))
        return st;
    bool grad_mode = tp->grad_enabled;
    tp->grad_enabled = bw.create; /* rules are recorded only under TG_CREATE_GRAPH */
    tp->in_backward = true;
    st = seed(&bw, jb);
    if (!st)
        st = sweep(&bw);
    if (!st)
        st = deliver(&bw, jb);
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
    bool stale = s.tape_ && (s.tape_ != tp || s.gen_ != tp->gen || s.id_ >= tp->scalar_count);
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
